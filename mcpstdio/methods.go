package mcpstdio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

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
	nameSpan Span     // where Name is in the message
	namePath []string // and how to find it again
	list     *listKind
	fanOut   bool
	discover bool
	listen   bool
}

// Route finds the target of a client request. An error is the JSON-RPC
// error the client gets (an unknown tool, say).
func (s *Session) Route(ctx context.Context, m *Message) (Route, error) {
	method := m.MethodName()
	var rt Route
	if state, ok := isRetry(m); ok && s.shared {
		// A retry is judged as what it resumes.
		if err := s.checkRetry(m, state); err != nil {
			return rt, err
		}
	}
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
		if !s.shared {
			rt.Kind, rt.namePath = "task", pathTaskID
		}
	case "tasks/list":
		if s.shared {
			// A target's list would name other callers' tasks.
			return rt, &CodeError{Code: CodeMethodNotFound, Err: errors.New("tasks/list is not served to sessionless callers: a target's list names every caller's tasks")}
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
			return rt, nil
		}
	case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
		lk := listKinds[method]
		rt.list = &lk
		rt.fanOut = len(s.children) > 1
		if !rt.fanOut {
			rt.c = s.children[0]
			rt.Target = rt.c.target.Name
		}
		return rt, nil
	case "ping", "logging/setLevel":
		rt.fanOut = len(s.children) > 1
	case "subscriptions/listen":
		// Several targets' listens are joined; an older child's is
		// tailgate's own (listenForLegacy).
		if len(s.children) > 1 || s.shared && !s.children[0].init.modern {
			rt.fanOut, rt.listen = true, true
			return rt, nil
		}
	}
	if rt.namePath != nil {
		rt.nameSpan = m.Path(rt.namePath...)
	}
	if rt.Kind != "" && rt.nameSpan.Has() {
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
				return rt, errTasksUndeclared
			}
			return rt, err
		}
		if rt.Kind == "task" && !s.ownsTask(rt.c, rt.TargetName) {
			// A task belongs to the caller that created it, whatever the
			// way in: a target that keeps tasks for all its callers (a
			// remote server) must not show one to another. Refused as an
			// unknown one is (owners.go).
			if !declaresTasks(m) {
				return rt, errTasksUndeclared
			}
			return rt, unknown("task", rt.Name)
		}
		rt.Target = rt.c.target.Name
		return rt, nil
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
	return rt, &CodeError{Code: CodeMethodNotFound, Err: fmt.Errorf("tailgate cannot tell which of this backend's %d targets %q is for", len(s.children), method)}
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
func declaresTasks(m *Message) bool {
	caps := m.Path("params", "_meta", metaClientCapabilities, "extensions")
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
	return &CodeError{Code: CodeInvalidParams, Err: fmt.Errorf("unknown %s %q", kind, name)}
}

// routeURI finds the child that serves a front resource URI.
func (s *Session) routeURI(uri string) (*child, string, error) {
	if !s.prefixed {
		if len(s.children) == 1 {
			return s.children[0], uri, nil
		}
		return nil, "", &CodeError{Code: CodeInvalidParams, Err: errors.New("resources need prefixed names when several targets are multiplexed (prefixMode never)")}
	}
	for _, c := range s.children {
		if rest, ok := strings.CutPrefix(uri, c.target.Name+uriSep); ok {
			return c, rest, nil
		}
	}
	return nil, "", &CodeError{Code: CodeInvalidParams, Err: fmt.Errorf("unknown resource %q", uri)}
}

// Item is one entry of a list, as policy sees it.
type Item struct {
	// Kind is "tool", "prompt" or "resource".
	Kind string
	// Target serves it.
	Target string
	// Name is the target's own tool or prompt name, or resource URI (or
	// URI template).
	Name string
	// Title is a resource's name.
	Title string
}

// ForwardOptions adjust one forwarded request.
type ForwardOptions struct {
	// Keep filters list results: an item it refuses is left out. Nil
	// keeps everything, and a single unprefixed target's lists then pass
	// through as they came.
	Keep func(Item) bool
	// Key names the request among those in flight, for Notify's
	// cancellations; default its id. Requests of a shared session come
	// from many clients and need a key of their own.
	Key string
	// Headers go with the request to a remote target: the client's
	// Mcp-Param-* headers, which such a server checks (SEP-2243).
	Headers map[string]string
	// Identity is the caller's identity at this request, as
	// OpenParams.Identity: a remote target with identity headers is told
	// it from this request on. Nil: as before.
	Identity map[string]string
}

// Forward sends the client request m along rt. The Reply yields what the
// request causes, then its response (always exactly one, an error
// included, unless the client cancels it).
func (s *Session) Forward(m *Message, rt Route, opts ForwardOptions) *Reply {
	r := newReply(8)
	r.frontID = m.Bytes(m.ID)
	r.headers = opts.Headers
	if c := rt.c; c != nil && !rt.fanOut && m.MethodName() == "subscriptions/listen" {
		// A listen hears of the caller's own tasks only.
		rm, err := s.ownListen(c, m)
		if err != nil {
			r.fail(err)
			return r
		}
		m = rm
	}
	if opts.Identity != nil {
		if rt.c != nil {
			rt.c.setIdentity(opts.Identity)
			if rt.c.target.Remote != nil && rt.c.target.Remote.IdentityHeaders {
				// This request says its own caller's identity, whatever
				// another request of the caller's told the link meanwhile.
				r.headers = withIdentityHeaders(opts.Headers, opts.Identity)
			}
		} else {
			for _, c := range s.children {
				c.setIdentity(opts.Identity)
			}
		}
	}
	if tok := m.Path(pathProgress...); tok.Has() {
		r.progress = m.Bytes(tok)
		if s.shared && rt.c != nil {
			// Two clients may use the same token at once: the child sees
			// one of tailgate's.
			r.frontToken = r.progress
			r.progress = quote("tailgate-progress-" + strconv.FormatInt(s.progressSeq.Add(1), 10))
			if rm, err := ParseMessage(m.Replace(tok, r.progress)); err == nil {
				m = rm
			}
		}
	}
	if c := rt.c; s.shared && c != nil && !c.init.modern {
		// An older child was initialized once, by tailgate: the request
		// speaks its version, whichever the client speaks (tailgate
		// bridges the difference).
		if pv := m.Path("params", "_meta", metaProtocolVersion); pv.Has() {
			if rm, err := ParseMessage(m.Replace(pv, quote(c.init.version))); err == nil {
				m = rm
			}
		}
	}
	if c := rt.c; !s.shared && c != nil && c.clientMeta != nil {
		// A child of 2026-07-28 only: each request says who asks.
		if rm, err := c.withClientMeta(m); err == nil {
			m = rm
		}
	}
	if rt.namePath != nil {
		rt.nameSpan = m.Path(rt.namePath...)
	}
	key, ok := s.track(r, opts.Key)
	if !ok {
		r.fail(s.ended())
		return r
	}
	timeout := s.b.opts.RequestTimeout
	if rt.c != nil {
		timeout = s.b.requestTimeout(rt.c.target)
	}
	if rt.listen {
		s.listenAll(m, r, key)
		return r
	}
	if rt.fanOut {
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		r.onCancel = func(string) { cancel() }
		r.onDone = func() { cancel(); s.untrack(key, r) }
		go s.fanOut(ctx, m, rt, opts, r)
		return r
	}
	c := rt.c
	if state, ok := isRetry(m); ok && s.shared {
		r.s, r.key = s, key
		s.resume(m, r, state)
		return r
	}
	if rt.list != nil && (s.prefixed || opts.Keep != nil) {
		lk := *rt.list
		r.transform = func(res *Message) []byte { return s.rewriteList(c, lk, res, r.frontID, opts.Keep) }
	} else if m.MethodName() == "resources/read" && s.prefixed {
		r.transform = func(res *Message) []byte { return s.rewriteContents(c, res, r.frontID) }
	} else if m.MethodName() == "tasks/list" {
		// A target's list names every caller's tasks: the caller sees
		// its own.
		r.transform = func(res *Message) []byte { return s.ownTasksList(c, res, r.frontID) }
	} else if s.prefixed && (rt.Kind == "tool" || rt.Kind == "task") {
		// A task a target created is known to the client by a prefixed id,
		// so that tasks/* find the target again.
		r.transform = func(res *Message) []byte { return s.rewriteTaskID(c, res, r.frontID) }
	}
	var extra []byte
	if rt.nameSpan.Has() && rt.TargetName != rt.Name {
		extra = quote(rt.TargetName)
	}
	if c.clientMeta != nil && !s.shared {
		switch m.MethodName() {
		case "tools/call", "prompts/get", "resources/read":
			namePath := rt.namePath
			r.retry = &inputRetry{base: m, send: func(rm *Message) (int64, error) {
				var span Span
				if namePath != nil {
					span = rm.Path(namePath...)
				}
				return c.sendRenamed(rm, r, span, extra)
			}}
		}
	}
	r.toolCall = rt.Kind == "tool" && m.MethodName() == "tools/call"
	if s.shared && !c.init.modern {
		// An older child may ask in the middle of it: the call is parked,
		// and its retry must name it again.
		r.what = callWhat(m)
	}
	// Only a call that asks for a task can create one, which its caller
	// then owns (noteTask).
	r.mayCreateTask = r.toolCall && createsTask(m)
	r.listen = m.MethodName() == "subscriptions/listen"
	r.s, r.key, r.timeout = s, key, timeout
	// send arms the call's timeout (Reply.sentAs).
	if _, err := c.sendRenamed(m, r, rt.nameSpan, extra); err != nil {
		r.fail(err)
	}
	return r
}

// sendRenamed is send with the span name (if v is not nil) replaced by v.
func (c *child) sendRenamed(m *Message, r *Reply, name Span, v []byte) (int64, error) {
	if v == nil {
		return c.send(m, r)
	}
	rm, err := ParseMessage(m.Replace(name, v))
	if err != nil {
		return 0, err
	}
	return c.send(rm, r)
}

// fanOut answers a request that goes to every target: lists are joined in
// target order, ping and logging/setLevel succeed when every target that
// can answer does.
func (s *Session) fanOut(ctx context.Context, m *Message, rt Route, opts ForwardOptions, r *Reply) {
	var result []byte
	var err error
	switch {
	case rt.discover:
		result = s.discover
	case rt.list != nil:
		result, err = s.joinLists(ctx, *rt.list, opts.Keep)
	default:
		err = s.everyChild(ctx, m)
		result = []byte("{}")
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
			err = ctx.Err()
		}
		r.fail(err)
		return
	}
	r.finish(ResultMessage(r.frontID, result))
}

// everyChild sends m to every child (logging/setLevel: those that log).
func (s *Session) everyChild(ctx context.Context, m *Message) error {
	method := m.MethodName()
	var params []byte
	if m.Params.Has() {
		params = m.Bytes(m.Params)
	}
	errs := make([]error, len(s.children))
	var wg sync.WaitGroup
	for i, c := range s.children {
		if method == "logging/setLevel" && !c.init.has("logging") || !c.alive() && s.degrades() {
			continue
		}
		wg.Go(func() {
			res, err := c.request(ctx, method, params)
			if err == nil && res.Error.Has() {
				err = &WireError{Raw: append([]byte(nil), res.Bytes(res.Error)...)}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// joinLists lists every target's items, every page, with front names.
func (s *Session) joinLists(ctx context.Context, lk listKind, keep func(Item) bool) ([]byte, error) {
	results := make([][]json.RawMessage, len(s.children))
	errs := make([]error, len(s.children))
	hints := make([]*cacheHints, len(s.children))
	var wg sync.WaitGroup
	for i, c := range s.children {
		if !c.init.has(lk.capability) || !c.alive() && s.degrades() {
			continue
		}
		hints[i] = &cacheHints{}
		wg.Go(func() {
			items, err := c.listAll(ctx, lk, hints[i])
			if err == nil {
				items = s.rewriteItems(c, lk, items, keep)
			}
			results[i], errs[i] = items, err
		})
	}
	wg.Wait()
	all := []json.RawMessage{}
	for i, items := range results {
		if errs[i] != nil {
			if s.b.opts.FailureMode == FailOpen {
				s.log.Warn("list failed on one target; leaving it out (failOpen)", "target", s.children[i].target.Name, "err", errs[i])
				continue
			}
			return nil, errs[i]
		}
		all = append(all, items...)
	}
	res := map[string]any{lk.field: all}
	if s.shared {
		// The joined list may be cached as long as every part may
		// (SEP-2549): the least ttlMs, 0 if a target gave none; shared
		// between callers only if every target said public and policy
		// did not filter it by the caller's identity.
		ttl, public, some := int64(0), keep == nil, false
		for i, h := range hints {
			if h == nil || errs[i] != nil {
				continue
			}
			switch {
			case !h.hasTTL:
				ttl = 0
			case !some || h.ttlMs < ttl:
				ttl = h.ttlMs
			}
			public = public && h.scoped && !h.private
			some = true
		}
		scope := "private"
		if public && some {
			scope = "public"
		}
		res["resultType"], res["ttlMs"], res["cacheScope"] = "complete", ttl, scope
	}
	return json.Marshal(res)
}

// rewriteItems prefixes the items' names and drops what keep refuses.
func (s *Session) rewriteItems(c *child, lk listKind, items []json.RawMessage, keep func(Item) bool) []json.RawMessage {
	out := items[:0]
	for _, it := range items {
		im := &Message{Raw: it}
		sp := im.Field(Span{0, len(it)}, lk.key)
		name := im.String(sp)
		if keep != nil {
			item := Item{Kind: lk.kind, Target: c.target.Name, Name: name}
			if lk.kind == "resource" {
				item.Title = im.String(im.Field(Span{0, len(it)}, "name"))
			}
			if !keep(item) {
				continue
			}
		}
		if s.prefixed && sp.Has() {
			exposed := s.exposed(c, name)
			if lk.kind == "resource" {
				exposed = s.exposedURI(c, name)
			}
			it = im.Replace(sp, quote(exposed))
		}
		out = append(out, it)
	}
	return out
}

// rewriteList is rewriteItems on one child's list response, which keeps
// every other field (nextCursor, _meta, …) as it came.
func (s *Session) rewriteList(c *child, lk listKind, res *Message, frontID []byte, keep func(Item) bool) []byte {
	if !res.Result.Has() {
		return res.Replace(res.ID, frontID)
	}
	var result map[string]json.RawMessage
	var items []json.RawMessage
	if json.Unmarshal(res.Bytes(res.Result), &result) != nil || json.Unmarshal(result[lk.field], &items) != nil {
		return res.Replace(res.ID, frontID)
	}
	items = s.rewriteItems(c, lk, items, keep)
	if items == nil {
		items = []json.RawMessage{}
	}
	result[lk.field], _ = json.Marshal(items)
	if _, ok := result["cacheScope"]; (ok || s.shared) && keep != nil {
		// Filtered by the caller's identity: another caller's cache must
		// not serve it (SEP-2549), whatever the target said.
		result["cacheScope"] = json.RawMessage(`"private"`)
	}
	b, _ := json.Marshal(result)
	return ResultMessage(frontID, b)
}

// rewriteContents prefixes the URIs of a resources/read result.
func (s *Session) rewriteContents(c *child, res *Message, frontID []byte) []byte {
	var result map[string]json.RawMessage
	var contents []json.RawMessage
	if !res.Result.Has() || json.Unmarshal(res.Bytes(res.Result), &result) != nil || json.Unmarshal(result["contents"], &contents) != nil {
		return res.Replace(res.ID, frontID)
	}
	for i, it := range contents {
		im := &Message{Raw: it}
		if sp := im.Field(Span{0, len(it)}, "uri"); sp.Has() {
			contents[i] = im.Replace(sp, quote(s.exposedURI(c, im.String(sp))))
		}
	}
	result["contents"], _ = json.Marshal(contents)
	b, _ := json.Marshal(result)
	return ResultMessage(frontID, b)
}

// Tools lists every target's tools as the client sees them (names
// prefixed where they are), every page, for what tailgate must know of a
// tool itself: the x-mcp-header bindings of its input schema.
func (s *Session) Tools(ctx context.Context) ([]json.RawMessage, error) {
	lk := listKinds["tools/list"]
	var all []json.RawMessage
	for _, c := range s.children {
		if !c.init.has(lk.capability) || !c.alive() && s.degrades() {
			continue
		}
		// tailgate's own request, on a caller's path: bounded.
		lctx, cancel := context.WithTimeout(ctx, c.ownTimeout)
		items, err := c.listAll(lctx, lk, nil)
		cancel()
		if err != nil && s.b.opts.FailureMode == FailOpen {
			s.log.Warn("tools/list failed on one target; leaving it out (failOpen)", "target", c.target.Name, "err", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		all = append(all, s.rewriteItems(c, lk, items, nil)...)
	}
	return all, nil
}

// rewriteTaskID prefixes the task id of a result that names a task
// (resultType "task", or a task as tasks/get returns it).
func (s *Session) rewriteTaskID(c *child, res *Message, frontID []byte) []byte {
	id := res.Path("result", "taskId")
	if !id.Has() {
		id = res.Path("result", "task", "taskId")
	}
	if !id.Has() {
		return res.Replace(res.ID, frontID)
	}
	if res.ID.Start < id.Start {
		return res.Replace2(res.ID, frontID, id, quote(c.target.Name+nameSep+res.String(id)))
	}
	return res.Replace2(id, quote(c.target.Name+nameSep+res.String(id)), res.ID, frontID)
}

// itemKey is the string field key of a list item.
func itemKey(item json.RawMessage, key string) string {
	im := &Message{Raw: item}
	return im.String(im.Field(Span{0, len(item)}, key))
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
