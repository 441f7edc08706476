package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/mcpstdio"
	"github.com/tailgate-dev/tailgate/mcpstdio/buffers"
)

// The child: starting a target's server and initializing it, its
// requests (send, cancel, tailgate's own request) and its lifecycle.
// Reading its output is in childread.go, its list lookups in childnames.go.

// child is one target's running server: its process, the JSON-RPC link
// over its stdin and stdout, and the session that owns it. A pooled child
// has no owner until a session takes it.
//
// Requests tailgate sends a child carry ids of the child's own sequence,
// so that requests of several origins (the client, tailgate's own list
// fan-out) never collide; the reply maps them back.
type child struct {
	target *Target
	// conn is how the target is reached: a child process's stdio, or a
	// remote MCP server over HTTP.
	conn Conn
	// proc is the child process below a stdio conn; nil for a remote
	// target.
	proc *mcpstdio.Child
	// shuttingDown is its backend's: set when the gateway goes down.
	shuttingDown *atomic.Bool
	log          *slog.Logger
	owner        atomic.Pointer[Session]
	maxMsg       int
	// mem is the link's share of the gateway's Buffers: what is being
	// read from the target, and answers the clients have not taken.
	mem *buffers.Share
	// patience is how long a stdio child's reader waits for room in mem
	// before it gives the child up.
	patience time.Duration

	// init is the child's answer to initialize.
	init childInit

	mu      sync.Mutex
	nextID  int64
	pending map[int64]*Reply
	dead    error // set once stdout is closed; pending calls got it
	// hub holds the one listen tailgate keeps at a stdio child, for its
	// clients' listens (listenhub.go).
	hub *listenHub

	// names caches what the child lists, by kind, for routing unprefixed
	// names among several targets; list_changed drops it.
	namesMu sync.Mutex
	names   map[string]map[string]bool
	titles  *resourceNames
	// lookups are tailgate's own list requests in flight, by what they
	// learn ("tool", "prompt", "resource"): one at a time each, shared by
	// whoever needs the answer meanwhile.
	lookups map[string]*lookup
	// ownTimeout bounds each of tailgate's own requests to the child (its
	// lists, asked to route, judge and label calls).
	ownTimeout time.Duration

	// bridge is how the child, of one protocol generation, serves
	// clients of the other, chosen once, when it starts.
	bridge bridgeKind
	// clientMeta, for a child bridged toModern, is what each request
	// tells it of the client; clientVersion is the client's version
	// (bridge.go).
	clientMeta    map[string]json.RawMessage
	clientVersion string
	// namesGen counts list changes, so that a list asked for before a
	// change is not kept after it.
	namesGen uint64
}

// bridgeKind is how a child of one protocol generation serves clients of
// the other: one adapter per direction, chosen once per child.
type bridgeKind uint8

const (
	// sameGeneration: the child speaks its clients' protocol.
	sameGeneration bridgeKind = iota
	// toModern: a client of the session era, a child that speaks only
	// 2026-07-28 (bridge.go): discover instead of initialize, the
	// client's _meta on each request, input_required results answered
	// with the client's answers to server→client requests, listen for
	// list changes.
	toModern
	// toSessionEra: sessionless (2026-07-28) clients, a child of the
	// session era, initialized once by tailgate (mrtr.go, listen.go): its
	// requests to the client park the call as input_required, its
	// list_changed notifications go to listens, its results say their
	// resultType.
	toSessionEra
)

// String names the bridge in logs.
func (k bridgeKind) String() string {
	switch k {
	case toModern:
		return "to 2026-07-28"
	case toSessionEra:
		return "to the session era"
	case sameGeneration:
		return "none"
	}
	return "unknown"
}

// childInit is what a child said of itself in its initialize (or
// server/discover) result.
type childInit struct {
	raw          json.RawMessage // the whole result
	version      string
	instructions string
	capabilities map[string]json.RawMessage
	serverInfo   json.RawMessage
	// speaks2026 is set for a child that answered server/discover: it speaks
	// MCP 2026-07-28 or later, sessionless; versions are those it named.
	speaks2026 bool
	versions   []string
}

// modernMeta is the _meta of tailgate's own requests to a sessionless
// child.
const modernMeta = `"_meta":{"` + jsonrpc.MetaProtocolVersion + `":"` + jsonrpc.ModernVersion + `","` + jsonrpc.MetaClientCapabilities + `":{},"` + jsonrpc.MetaClientInfo + `":` + tailgateClientInfo + `}`

// tailgateClientInfo is how tailgate names itself as a client.
const tailgateClientInfo = `{"name":"tailgate","version":"dev"}`

// discoverParams are those of tailgate's own server/discover.
var discoverParams = []byte(`{` + modernMeta + `}`)

// modernVersions are the versions without sessions tailgate speaks to a
// target, newest first.
var modernVersions = []string{jsonrpc.ModernVersion}

// discoverParamsIn are those of tailgate's own server/discover in version
// (one of modernVersions).
func discoverParamsIn(version string) []byte {
	return []byte(strings.Replace(string(discoverParams), `"`+jsonrpc.ModernVersion+`"`, `"`+version+`"`, 1))
}

// codeUnsupportedVersion is SEP-2575's UnsupportedProtocolVersion: the
// request's version is not one the server speaks; the error's
// data.supported names those it does.
const codeUnsupportedVersion = -32022

// refusedVersions reports whether res refuses the protocol version of
// the request it answers (-32022, UnsupportedProtocolVersion), and the
// versions the target says it speaks instead (the error's data.supported).
func refusedVersions(res *jsonrpc.Message) (supported []string, refused bool) {
	if res == nil || !res.Error.Has() || string(res.Bytes(res.Path("error", "code"))) != strconv.Itoa(codeUnsupportedVersion) {
		return nil, false
	}
	json.Unmarshal(res.Bytes(res.Path("error", "data", "supported")), &supported)
	return supported, true
}

// newestModern is the newest of versions that tailgate speaks without a
// session (modernVersions), or "".
func newestModern(versions []string) string {
	for _, v := range modernVersions {
		if slices.Contains(versions, v) {
			return v
		}
	}
	return ""
}

// newestSessionEra is the newest of versions (dates, as MCP names them)
// that is of the session era and no newer than the one tailgate offers
// at initialize (jsonrpc.LatestVersion), or "".
func newestSessionEra(versions []string) string {
	newest := ""
	for _, v := range versions {
		if _, err := time.Parse(time.DateOnly, v); err == nil && v <= jsonrpc.LatestVersion && v > newest {
			newest = v
		}
	}
	return newest
}

func (ci *childInit) parseDiscover(result []byte) error {
	var r struct {
		SupportedVersions []string                   `json:"supportedVersions"`
		Instructions      string                     `json:"instructions"`
		Capabilities      map[string]json.RawMessage `json:"capabilities"`
		Meta              map[string]json.RawMessage `json:"_meta"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("server/discover result: %w", err)
	}
	ci.raw = bytes.Clone(result)
	ci.speaks2026, ci.versions = true, r.SupportedVersions
	ci.instructions, ci.capabilities = r.Instructions, r.Capabilities
	ci.serverInfo = r.Meta["io.modelcontextprotocol/serverInfo"]
	ci.version = jsonrpc.ModernVersion
	return nil
}

// speaksModern reports whether a child's server/discover names a protocol
// version without sessions (2026-07-28 or later).
func (ci *childInit) speaksModern() bool {
	for _, v := range ci.versions {
		if v >= jsonrpc.ModernVersion {
			return true
		}
	}
	return false
}

func (ci *childInit) has(capability string) bool {
	_, ok := ci.capabilities[capability]
	return ok
}

// listChanged reports whether the child announces changes to its list of
// capability ("tools", "prompts", "resources").
func (ci *childInit) listChanged(capability string) bool {
	var c struct {
		ListChanged bool `json:"listChanged"`
	}
	return json.Unmarshal(ci.capabilities[capability], &c) == nil && c.ListChanged
}

// forCaller is t as the child of identity's runs: its environment with
// the caller's identity (IdentityEnv) and what CallerEnv gives it, and the
// values the child's stderr must not show.
func (b *Backend) forCaller(ctx context.Context, t *Target, identity Identity) (*Target, []string, error) {
	run := *t
	run.Env = maps.Clone(t.Env)
	if t.IdentityEnv && identity != nil {
		if run.Env == nil {
			run.Env = make(map[string]string)
		}
		maps.Copy(run.Env, identity.Env())
	}
	if t.CallerEnv == nil {
		return &run, nil, nil
	}
	if identity == nil {
		return nil, nil, callerError{fmt.Errorf("target %q: its environment depends on the caller, and there is none", t.Name)}
	}
	env, args, redact, err := t.CallerEnv(ctx, identity)
	if err != nil {
		return nil, nil, callerError{err} // CallerEnv's errors name the target
	}
	if run.Env == nil {
		run.Env = make(map[string]string, len(env))
	}
	maps.Copy(run.Env, env)
	if args != nil {
		run.Args = args
	}
	return &run, redact, nil
}

// callerError is a child that cannot start for this caller (a secret it
// lacks), which says nothing of the target's health.
type callerError struct{ error }

func (e callerError) Unwrap() error { return e.error }

// startChild starts a child of t (startTarget) and notes how the target
// fared, for Health: a start that failed for want of the caller's
// credentials, or because its client left, says nothing of the target.
func (b *Backend) startChild(ctx context.Context, t *Target, identity Identity, params []byte, logID string, sessionless bool) (*child, error) {
	c, err := b.startTarget(ctx, t, identity, params, logID, sessionless)
	var ce callerError
	if !errors.As(err, &ce) && ctx.Err() == nil {
		b.health.note(t.Name, err)
	}
	return c, err
}

// startTarget starts t's process and initializes it with params, the raw
// initialize params of the front client (or tailgate's own, for a pooled
// child); identity is added to the child's environment.
func (b *Backend) startTarget(ctx context.Context, t *Target, identity Identity, params []byte, logID string, sessionless bool) (*child, error) {
	log := b.log.With("session", logID, "target", t.Name)
	c := &child{target: t, log: log, pending: make(map[int64]*Reply), maxMsg: b.opts.MaxMessageBytes, ownTimeout: b.ownTimeout(t),
		mem: b.buffers.Share(b.opts.MaxMessageBytes), patience: b.opts.HeldPatience, shuttingDown: &b.shuttingDown}
	switch {
	case t.Remote != nil:
		c.conn = t.Remote.Dial(identity, c.handle, c.mem, log)
	default:
		run, redact, err := b.forCaller(ctx, t, identity)
		if err != nil {
			return nil, err // it names the target
		}
		// The caller's secrets, in the child's environment, must not
		// reach the log from its stderr either.
		proc, err := mcpstdio.Start(run.command(), mcpstdio.StartOptions{
			Logger: log, Env: b.envPolicy(), Redact: redact,
			StderrLinesPerSecond: b.opts.StderrLinesPerSecond, StderrMaxLine: b.opts.StderrMaxLine,
			MaxMessageBytes: c.maxMsg, Mem: c.mem, HeldPatience: c.patience, Handle: c.handle,
		})
		if err != nil {
			return nil, err // it names the target
		}
		b.started.Add(1)
		b.running.Add(1)
		go func() {
			<-proc.Done()
			b.running.Add(-1)
			b.exited(t.Name, proc.ExitCause())
		}()
		c.proc = proc
		c.conn = stdioConn{proc}
	}
	go func() { c.closed(c.conn.Read()) }()
	initCtx, cancel := context.WithTimeout(ctx, b.initializeTimeout(t))
	defer cancel()
	// initVersion, when set, is the version the target named as one it
	// speaks: initialize offers it, and says it in the request's
	// Mcp-Protocol-Version header as every request after it does.
	var initVersion string
	if sessionless {
		var modern bool
		var err error
		if initVersion, modern, err = c.discoverSessionless(initCtx); err != nil {
			c.conn.Close(b.opts.StopGrace)
			return nil, err
		}
		if modern {
			return c, nil
		}
		params = nil
		c.bridge = toSessionEra // initialized once, by tailgate
	}
	if err := c.initialize(initCtx, params, initVersion, sessionless); err != nil {
		c.conn.Close(b.opts.StopGrace)
		return nil, err
	}
	return c, nil
}

// discoverSessionless asks a child for sessionless (2026-07-28) clients
// what it speaks: one that answers server/discover in a version without
// sessions is spoken to in that protocol, every request self-describing
// (modern); an older one is to be initialized once, by tailgate, in
// initVersion if the target named one it speaks.
func (c *child) discoverSessionless(ctx context.Context) (initVersion string, modern bool, err error) {
	res, err := c.request(ctx, "server/discover", discoverParams)
	if err == nil && needsConnect(res) {
		err = &WireError{Raw: bytes.Clone(res.Bytes(res.Error))}
	}
	// A target that refuses the version (-32022) names those it speaks:
	// asked again in the newest of them tailgate speaks without a
	// session, once; if it names none, initialized in the newest of the
	// session era.
	if supported, refused := refusedVersions(res); err == nil && refused {
		if v := newestModern(supported); v != "" {
			res, err = c.request(ctx, "server/discover", discoverParamsIn(v))
			supported, _ = refusedVersions(res)
		}
		initVersion = newestSessionEra(supported)
	}
	if err == nil && res.Result.Has() {
		if err = c.init.parseDiscover(res.Bytes(res.Result)); err == nil {
			if c.init.speaksModern() {
				return "", true, nil
			}
			// It answers discover but speaks only versions with sessions
			// (go-sdk's stateful server does): initialize.
			c.init = childInit{}
		}
	}
	if err != nil {
		return "", false, c.failure(ctx, "server/discover", err)
	}
	return initVersion, false, nil
}

// initialize initializes a child with params (those of its client's
// initialize, if any), in version where the target named one, and tells
// it initialized; a child of a session client that knows no initialize
// (2026-07-28 only) is bridged instead (bridge.go).
func (c *child) initialize(ctx context.Context, params []byte, version string, sessionless bool) error {
	var headers map[string]string
	switch {
	case version != "":
		params = initializeParamsIn(version)
		headers = map[string]string{"Mcp-Protocol-Version": version}
	case len(params) == 0:
		params = defaultInitializeParams
	}
	res, err := c.requestWith(ctx, "initialize", params, headers)
	if err == nil && res.Error.Has() && !sessionless && string(res.Bytes(res.Path("error", "code"))) == strconv.Itoa(jsonrpc.CodeMethodNotFound) && c.discoverForSessionClient(ctx, params) {
		// A server of 2026-07-28 only: tailgate bridges (bridge.go).
		return nil
	}
	if err == nil && needsConnect(res) {
		err = &WireError{Raw: bytes.Clone(res.Bytes(res.Error))}
	}
	if err == nil && res.Error.Has() {
		// The error's message, without the target's name when tailgate's
		// link already put it there (failure names it once).
		msg := res.String(res.Path("error", "message"))
		if msg == "" {
			msg = string(res.Bytes(res.Error))
		}
		err = errors.New(strings.TrimPrefix(msg, fmt.Sprintf("target %q: ", c.target.Name)))
	}
	if err == nil {
		err = c.init.parse(res.Bytes(res.Result))
	}
	if err == nil {
		err = c.write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	}
	if err != nil {
		return c.failure(ctx, "initialize", err)
	}
	return nil
}

// defaultInitializeParams are what tailgate offers a child started before
// any client is known (a pooled one): every client capability, so the
// child holds nothing back; a request the client cannot answer gets the
// client's error.
var defaultInitializeParams = initializeParamsIn(jsonrpc.LatestVersion)

// initializeParamsIn are tailgate's own initialize params (those of
// defaultInitializeParams) offering version.
func initializeParamsIn(version string) []byte {
	return []byte(`{"protocolVersion":` + string(jsonrpc.Quote(version)) + `,"capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"tailgate","version":"dev"}}`)
}

func (ci *childInit) parse(result []byte) error {
	var r struct {
		ProtocolVersion string                     `json:"protocolVersion"`
		Instructions    string                     `json:"instructions"`
		Capabilities    map[string]json.RawMessage `json:"capabilities"`
		ServerInfo      json.RawMessage            `json:"serverInfo"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("initialize result: %w", err)
	}
	ci.raw = bytes.Clone(result)
	ci.version, ci.instructions, ci.capabilities, ci.serverInfo = r.ProtocolVersion, r.Instructions, r.Capabilities, r.ServerInfo
	// For sessionless clients tailgate speaks 2026-07-28 in the child's
	// stead (mrtr.go bridges its requests), besides what it speaks.
	ci.versions = []string{jsonrpc.ModernVersion, r.ProtocolVersion}
	return nil
}

// kill ends a target that broke the protocol, at once: a process is
// killed (and counted as signaled, not stopped).
func (c *child) kill() {
	if c.proc != nil {
		c.proc.Kill()
		return
	}
	c.conn.Close(0)
}

// pid is the child process's id; 0 for a remote target.
func (c *child) pid() int {
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid()
}

// stop ends the child within grace after its stdin closes, and again
// after SIGTERM; when its backend is shutting down (the gateway exits), a
// stdio child gets shutdownInputGrace, not grace, before SIGTERM.
func (c *child) stop(grace time.Duration) {
	if c.proc != nil && c.shuttingDown != nil && c.shuttingDown.Load() {
		c.proc.Shutdown(min(grace, shutdownInputGrace), grace)
		return
	}
	c.conn.Close(grace)
}

// alive reports whether the child's process is running.
func (c *child) alive() bool {
	select {
	case <-c.conn.Done():
		return false
	default:
		return true
	}
}

// write sends one message. A message must be one line on stdio: JSON
// whitespace that is a line break is removed (inside strings line breaks
// are always escaped).
func (c *child) write(msg []byte) error { return c.conn.Write(msg, nil, nil) }

// send registers r and writes msg to the child with msg's id replaced by
// a child id. It returns the child id. r knows where it went before the
// write, which may wait for the child to read: nothing holds r meanwhile,
// so that the child's reader can always deliver to it.
func (c *child) send(m *jsonrpc.Message, r *Reply) (int64, error) {
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		return 0, c.dead
	}
	if !c.alive() {
		// Exited, its output not closed yet (a grandchild may hold it):
		// the exit is the answer.
		c.mu.Unlock()
		return 0, c.conn.Err()
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = r
	c.mu.Unlock()
	r.sentAs(c, id)
	var idBuf [20]byte
	msg := m.Replace(m.ID, strconv.AppendInt(idBuf[:0], id, 10))
	if err := c.conn.Write(msg, r.headers, r.identity); err != nil {
		c.forget(id)
		return 0, fmt.Errorf("target %q: write: %w", c.target.Name, err)
	}
	return id, nil
}

func (c *child) forget(id int64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// cancel tells the child that tailgate no longer waits for request id.
func (c *child) cancel(id int64, reason string) {
	if !c.forgetIfPending(id) {
		return
	}
	msg := fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":%s}}`, id, jsonrpc.Quote(reason))
	if err := c.write(msg); err != nil {
		c.log.Debug("send cancellation", "err", err)
	}
}

func (c *child) forgetIfPending(id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; !ok {
		return false
	}
	delete(c.pending, id)
	return true
}

// request sends tailgate's own request and waits for the response.
func (c *child) request(ctx context.Context, method string, params []byte) (*jsonrpc.Message, error) {
	return c.requestWith(ctx, method, params, nil)
}

// requestWith is request with HTTP headers a remote target is to be sent
// with it (ignored on stdio).
func (c *child) requestWith(ctx context.Context, method string, params []byte, headers map[string]string) (*jsonrpc.Message, error) {
	var b []byte
	b = append(b, `{"jsonrpc":"2.0","id":0,"method":`...)
	b = append(b, jsonrpc.Quote(method)...)
	if len(params) > 0 {
		b = append(b, `,"params":`...)
		b = append(b, params...)
	}
	b = append(b, '}')
	m, err := jsonrpc.ParseMessage(b)
	if err != nil {
		return nil, err
	}
	r := newReply(1)
	r.internal = true
	r.headers = headers
	id, err := c.send(m, r)
	if err != nil {
		return nil, err
	}
	select {
	case f := <-r.ch:
		if f.Err != nil {
			return nil, f.Err
		}
		return jsonrpc.ParseMessage(f.Data)
	case <-ctx.Done():
		c.cancel(id, "tailgate stopped waiting")
		return nil, ctx.Err()
	}
}

// related is the reply of the newest client request in flight at the
// child: stdio carries no "related request", so the newest is the best
// guess for a message that names none. With only, it is the reply only if
// that request is the one in flight, so that nothing can reach a request
// it does not belong to.
func (c *child) related(only bool) *Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	var newest *Reply
	var newestID int64
	n := 0
	for id, r := range c.pending {
		if r.internal || r.listen || r.parked != nil {
			// A listen's stream carries its own notifications only; a
			// parked call's placeholder has no client until its retry.
			continue
		}
		n++
		if id > newestID {
			newest, newestID = r, id
		}
	}
	if only && n > 1 {
		return nil
	}
	return newest
}

// pendingReply is the client request in flight under child id id.
func (c *child) pendingReply(id int64) *Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.pending[id]; r != nil && !r.internal && r.parked == nil {
		return r
	}
	return nil
}

// byProgressToken is the reply of the request that carries token.
func (c *child) byProgressToken(token []byte) *Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.pending {
		if r.progress != nil && r.parked == nil && bytes.Equal(r.progress, token) {
			return r
		}
	}
	return nil
}

// failure explains a failed request to c: a dead child is named with its
// exit status and last stderr; a timeout says which.
func (c *child) failure(ctx context.Context, op string, err error) error {
	// A closed stdout usually means the child is exiting: give it a moment
	// so the error can say how it ended.
	if goneWithin(c.conn, 200*time.Millisecond) {
		msg := c.conn.Err().Error()
		if op != "" {
			msg += " (during " + op + ")"
		}
		return errors.New(msg)
	}
	if op != "" {
		op = " " + op
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("target %q%s: no answer in time", c.target.Name, op)
	}
	return fmt.Errorf("target %q%s: %w", c.target.Name, op, err)
}

// CodeURLElicitationRequired is MCP 2025-11-25's URLElicitationRequired:
// the caller must open a URL first (for tailgate, a remote target's
// connect link: its data names it).
const CodeURLElicitationRequired = -32042

// needsConnect reports whether res is a URLElicitationRequired answer: the
// target cannot start for this caller until the caller opens a link, and
// the answer, passed on as it came, tells the client which.
func needsConnect(res *jsonrpc.Message) bool {
	return res != nil && res.Error.Has() && string(res.Bytes(res.Path("error", "code"))) == strconv.Itoa(CodeURLElicitationRequired)
}

// WireError is a JSON-RPC error object a target answered with, passed on
// as it came.
type WireError struct{ Raw json.RawMessage }

func (e *WireError) Error() string { return string(e.Raw) }

// isMethodNotFound reports whether err is a child's -32601 answer.
func isMethodNotFound(err error) bool {
	var we *WireError
	if !errors.As(err, &we) {
		return false
	}
	var e struct{ Code int }
	return json.Unmarshal(we.Raw, &e) == nil && e.Code == jsonrpc.CodeMethodNotFound
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
