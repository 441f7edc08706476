package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// Routing a client request: which target serves it, and the target's own
// name for what it names (prefixed names, resource URIs, task ids).
// Forwarding is in forward.go, the lists the client sees in lists.go.

// nameSep joins a target's name and a tool or prompt name, as in
// agentgateway ("everything_echo").
const nameSep = "_"

// uriSep joins a target's name and a resource URI ("everything+demo://x"),
// as agentgateway does; the result is still a URI, with a longer scheme.
const uriSep = "+"

// exposed is the name the front sees for a child's tool or prompt.
func (s *Session) exposed(c *child, name string) string {
	if !s.prefixed {
		return name
	}
	return c.target.Name + nameSep + name
}

func (s *Session) exposedURI(c *child, uri string) string {
	if !s.prefixed {
		return uri
	}
	return c.target.Name + uriSep + uri
}

// listKind describes one of the lists tailgate rewrites.
type listKind struct {
	method     string
	field      string // the result's array
	capability string // the server capability that offers it
	key        string // the item's name field
	kind       string // "tool", "prompt" or "resource"
}

var listKinds = map[string]listKind{
	"tools/list":               {"tools/list", "tools", "tools", "name", "tool"},
	"prompts/list":             {"prompts/list", "prompts", "prompts", "name", "prompt"},
	"resources/list":           {"resources/list", "resources", "resources", "uri", "resource"},
	"resources/templates/list": {"resources/templates/list", "resourceTemplates", "resources", "uriTemplate", "resource"},
}

// Route is where a client request goes, and what policy needs to know of
// it.
type Route struct {
	// Kind is "tool", "prompt" or "resource" for a request that names one
	// (tools/call, prompts/get, resources/read and subscribe, completion),
	// else "".
	Kind string
	// Name is the name or URI the client used.
	Name string
	// Target is the target that serves it, TargetName the target's own
	// name or URI for it. Target is "" for requests that go to every
	// target (lists, ping) or that no target serves.
	Target, TargetName string

	c        *child
	nameSpan jsonrpc.Span // where Name is in the message
	namePath []string     // and how to find it again
	list     *listKind
	fanOut   bool
	discover bool
	listen   bool
}

// Route finds the target of a client request. An error is the JSON-RPC
// error the client gets (an unknown tool, say).
func (s *Session) Route(ctx context.Context, m *jsonrpc.Message) (Route, error) {
	method := m.MethodName()
	var rt Route
	if state, ok := isRetry(m); ok && s.sessionless {
		// A retry is judged as what it resumes.
		if err := s.checkRetry(m, state); err != nil {
			return rt, err
		}
	}
	if routed, err := s.routeMethod(m, method, &rt); routed {
		return rt, err
	}
	if rt.namePath != nil {
		rt.nameSpan = m.Path(rt.namePath...)
	}
	if rt.Kind != "" && rt.nameSpan.Has() {
		err := s.routeName(ctx, m, &rt)
		return rt, err
	}
	if len(s.children) == 1 {
		rt.c = s.children[0]
		rt.Target = rt.c.target.Name
		return rt, nil
	}
	if rt.fanOut {
		return rt, nil
	}
	// A method tailgate does not know, among several targets: a name in
	// the params may say which target it is for.
	if name := m.String(m.Path("params", "name")); name != "" && s.prefixed {
		for _, c := range s.children {
			if strings.HasPrefix(name, c.target.Name+nameSep) {
				rt.c, rt.Target = c, c.target.Name
				return rt, nil
			}
		}
	}
	return rt, &CodeError{Code: jsonrpc.CodeMethodNotFound, Err: fmt.Errorf("tailgate cannot tell which of this backend's %d targets %q is for", len(s.children), method)}
}

// routeMethod sets in rt what m's method says of its route: the kind of
// thing it names and where the name is, or whether it goes to every
// target. It reports routed when the method alone decides the route (rt
// is complete, or err is the error the client gets).
func (s *Session) routeMethod(m *jsonrpc.Message, method string, rt *Route) (routed bool, err error) {
	switch method {
	case "tools/call":
		rt.Kind, rt.namePath = "tool", pathParamsName
	case "prompts/get":
		rt.Kind, rt.namePath = "prompt", pathParamsName
	case "tasks/get", "tasks/update", "tasks/cancel":
		// The tasks extension (SEP-2663): a task id names its target the
		// way a tool name does.
		rt.Kind, rt.namePath = "task", pathTaskID
	case "tasks/result":
		// Of the session era's tasks (2025-11-25), removed by SEP-2663:
		// a sessionless client's goes to the target, which refuses it.
		if !s.sessionless {
			rt.Kind, rt.namePath = "task", pathTaskID
		}
	case "tasks/list":
		if s.sessionless {
			// A target's list would name other callers' tasks.
			return true, &CodeError{Code: jsonrpc.CodeMethodNotFound, Err: errors.New("tasks/list is not served to sessionless callers: a target's list names every caller's tasks")}
		}
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		rt.Kind, rt.namePath = "resource", pathParamsURI
	case "completion/complete":
		switch m.String(m.Path("params", "ref", "type")) {
		case "ref/prompt":
			rt.Kind, rt.namePath = "prompt", pathRefName
		case "ref/resource":
			rt.Kind, rt.namePath = "resource", pathRefURI
		}
	case "server/discover":
		if s.needsOwnDiscover() {
			rt.fanOut, rt.discover = true, true
			return true, nil
		}
	case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
		lk := listKinds[method]
		rt.list = &lk
		rt.fanOut = len(s.children) > 1
		if !rt.fanOut {
			rt.c = s.children[0]
			rt.Target = rt.c.target.Name
		}
		return true, nil
	case "ping", "logging/setLevel":
		rt.fanOut = len(s.children) > 1
	case "subscriptions/listen":
		// Several targets' listens are joined; a stdio child's are its
		// listenHub's; an older child's tailgate holds itself
		// (listenForLegacy). A remote target alone serves each as sent.
		if c := s.children[0]; len(s.children) > 1 || c.bridge == toSessionEra || c.proc != nil {
			rt.fanOut, rt.listen = true, true
			if len(s.children) == 1 {
				rt.Target = c.target.Name
			}
			return true, nil
		}
	}
	return false, nil
}

// routeName finds the target of a request that names a tool, prompt,
// resource or task (at rt.nameSpan), and the target's own name for it. An
// error is the JSON-RPC error the client gets.
func (s *Session) routeName(ctx context.Context, m *jsonrpc.Message, rt *Route) error {
	rt.Name = m.String(rt.nameSpan)
	var err error
	if rt.Kind == "resource" {
		rt.c, rt.TargetName, err = s.routeURI(rt.Name)
	} else {
		rt.c, rt.TargetName, err = s.route(ctx, rt.Name, rt.Kind)
	}
	if err != nil {
		if rt.Kind == "task" && !declaresTasks(m) {
			// SEP-2663: tasks/* from a client that did not declare the
			// extension is refused as such, whatever the id.
			return errTasksUndeclared
		}
		return err
	}
	if rt.Kind == "task" && !s.ownsTask(rt.c, rt.TargetName) {
		// A task belongs to the caller that created it, whatever the
		// way in: a target that keeps tasks for all its callers (a
		// remote server) must not show one to another. Refused as an
		// unknown one is (owners.go).
		if !declaresTasks(m) {
			return errTasksUndeclared
		}
		return unknown("task", rt.Name)
	}
	rt.Target = rt.c.target.Name
	return nil
}

var (
	pathParamsName = []string{"params", "name"}
	pathParamsURI  = []string{"params", "uri"}
	pathRefName    = []string{"params", "ref", "name"}
	pathRefURI     = []string{"params", "ref", "uri"}
	pathProgress   = []string{"params", "_meta", "progressToken"}
	pathTaskID     = []string{"params", "taskId"}
)

// TasksExtension is the tasks extension's capability name (SEP-2663).
const TasksExtension = "io.modelcontextprotocol/tasks"

// CodeMissingCapability is SEP-2575's error for a request that needs a
// client capability the client did not declare.
const CodeMissingCapability = -32021

var errTasksUndeclared = &CodeError{
	Code: CodeMissingCapability,
	Err:  errors.New("the client did not declare the " + TasksExtension + " extension"),
	Data: []byte(`{"requiredCapabilities":{"extensions":{"` + TasksExtension + `":{}}}}`),
}

// declaresTasks reports whether a request's client declares the tasks
// extension.
func declaresTasks(m *jsonrpc.Message) bool {
	caps := m.Path("params", "_meta", jsonrpc.MetaClientCapabilities, "extensions")
	return m.Field(caps, TasksExtension).Has()
}

// route finds the child that serves a front tool or prompt name and the
// child's own name for it. Unprefixed names with several targets
// (prefixMode never) are looked up in the children's lists.
func (s *Session) route(ctx context.Context, name, kind string) (*child, string, error) {
	if s.prefixed {
		for _, c := range s.children {
			if rest, ok := strings.CutPrefix(name, c.target.Name+nameSep); ok {
				return c, rest, nil
			}
		}
		return nil, "", unknown(kind, name)
	}
	if len(s.children) == 1 {
		return s.children[0], name, nil
	}
	for _, c := range s.children {
		if c.offers(ctx, kind, name) {
			return c, name, nil
		}
	}
	return nil, "", unknown(kind, name)
}

func unknown(kind, name string) error {
	if len(name) > 200 {
		name = name[:200] + "…" // the client's own name, echoed: bounded
	}
	return &CodeError{Code: jsonrpc.CodeInvalidParams, Err: fmt.Errorf("unknown %s %q", kind, name)}
}

// routeURI finds the child that serves a front resource URI.
func (s *Session) routeURI(uri string) (*child, string, error) {
	if !s.prefixed {
		if len(s.children) == 1 {
			return s.children[0], uri, nil
		}
		return nil, "", &CodeError{Code: jsonrpc.CodeInvalidParams, Err: errors.New("resources need prefixed names when several targets are multiplexed (prefixMode never)")}
	}
	for _, c := range s.children {
		if rest, ok := strings.CutPrefix(uri, c.target.Name+uriSep); ok {
			return c, rest, nil
		}
	}
	return nil, "", &CodeError{Code: jsonrpc.CodeInvalidParams, Err: fmt.Errorf("unknown resource %q", uri)}
}

// PrefixTarget names the target a front tool or prompt name belongs to,
// without asking any child: "" when names are not prefixed and several
// targets are multiplexed. It is for logs and metrics.
func (s *Session) PrefixTarget(name string) string {
	if !s.prefixed {
		if len(s.children) == 1 {
			return s.children[0].target.Name
		}
		return ""
	}
	for _, c := range s.children {
		if strings.HasPrefix(name, c.target.Name+nameSep) {
			return c.target.Name
		}
	}
	return ""
}

// ResourceNames are the names the target lists for the resource (or
// resource template) a route names, none if it lists none: policy judges
// a read, and a completion on a template, by each of them as by its URI,
// as a list is filtered by both. It fails when the target's lists do.
func (s *Session) ResourceNames(ctx context.Context, rt Route) ([]string, error) {
	if rt.c == nil || rt.Kind != "resource" {
		return nil, nil
	}
	return rt.c.resourceTitles(ctx, rt.TargetName)
}

// Listed reports whether the route's tool or prompt is one its target
// lists: only those names become metric labels, so that a client cannot
// grow the metrics with names of its own. It never waits: known is false
// when tailgate does not know the target's list yet (it asks for it then,
// in the background, for the calls to come).
func (s *Session) Listed(rt Route) (listed, known bool) {
	if rt.c == nil || (rt.Kind != "tool" && rt.Kind != "prompt") {
		return false, true
	}
	names, known := rt.c.knownNames(rt.Kind)
	return names[rt.TargetName], known
}

// LearnNames asks each target for the tool and prompt names it lists,
// unless tailgate knows them, in the background and bounded (see Listed).
func (s *Session) LearnNames() {
	for _, c := range s.children {
		c.knownNames("tool")
		c.knownNames("prompt")
	}
}

// NamesKnown reports whether tailgate knows the tool and prompt names of
// every target (so that Listed answers known).
func (s *Session) NamesKnown() bool {
	for _, c := range s.children {
		c.namesMu.Lock()
		_, tools := c.names["tool"]
		_, prompts := c.names["prompt"]
		c.namesMu.Unlock()
		if !tools || !prompts {
			return false
		}
	}
	return true
}

// Targets are the names of the session's running targets.
func (s *Session) Targets() []string {
	names := make([]string, len(s.children))
	for i, c := range s.children {
		names[i] = c.target.Name
	}
	return names
}
