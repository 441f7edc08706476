package mcpstdio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yosida95/uritemplate/v3"
)

// child is one target's running server: its process, the JSON-RPC link
// over its stdin and stdout, and the session that owns it. A pooled child
// has no owner until a session takes it.
//
// Requests tailgate sends a child carry ids of the child's own sequence,
// so that requests of several origins (the client, tailgate's own list
// fan-out) never collide; the reply maps them back.
type child struct {
	target *Target
	// link is how the target is reached: a child process's stdio, or a
	// remote MCP server over HTTP.
	link   link
	log    *slog.Logger
	owner  atomic.Pointer[Session]
	maxMsg int
	// mem is the link's share of the gateway's Buffers: what is being
	// read from the target, and answers the clients have not taken.
	mem *bufferShare
	// patience is how long a stdio child's reader waits for room in mem
	// before it gives the child up.
	patience time.Duration

	// init is the child's answer to initialize.
	init childInit

	mu      sync.Mutex
	nextID  int64
	pending map[int64]*Reply
	dead    error // set once stdout is closed; pending calls got it

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

	// clientMeta, for a child that speaks only 2026-07-28 serving a
	// client of the session era, is what each request tells it of the
	// client; clientVersion is the client's version (bridge.go).
	clientMeta    map[string]json.RawMessage
	clientVersion string
	// namesGen counts list changes, so that a list asked for before a
	// change is not kept after it.
	namesGen uint64
}

// childInit is what a child said of itself in its initialize (or
// server/discover) result.
type childInit struct {
	raw          json.RawMessage // the whole result
	version      string
	instructions string
	capabilities map[string]json.RawMessage
	serverInfo   json.RawMessage
	// modern is set for a child that answered server/discover: it speaks
	// MCP 2026-07-28 or later, sessionless; versions are those it named.
	modern   bool
	versions []string
}

// ModernVersion is the first MCP protocol version without sessions.
const ModernVersion = "2026-07-28"

// modernMeta is the _meta of tailgate's own requests to a sessionless
// child.
const modernMeta = `"_meta":{"` + metaProtocolVersion + `":"` + ModernVersion + `","` + metaClientCapabilities + `":{},"` + metaClientInfo + `":` + tailgateClientInfo + `}`

// tailgateClientInfo is how tailgate names itself as a client.
const tailgateClientInfo = `{"name":"tailgate","version":"dev"}`

// discoverParams are those of tailgate's own server/discover.
var discoverParams = []byte(`{` + modernMeta + `}`)

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
	ci.modern, ci.versions = true, r.SupportedVersions
	ci.instructions, ci.capabilities = r.Instructions, r.Capabilities
	ci.serverInfo = r.Meta["io.modelcontextprotocol/serverInfo"]
	ci.version = ModernVersion
	return nil
}

// speaksModern reports whether a child's server/discover names a protocol
// version without sessions (2026-07-28 or later).
func (ci *childInit) speaksModern() bool {
	for _, v := range ci.versions {
		if v >= ModernVersion {
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

// startChild starts t's process and initializes it with params, the raw
// initialize params of the front client (or tailgate's own, for a pooled
// child); identity is added to the child's environment.
func (b *Backend) startChild(ctx context.Context, t *Target, identity map[string]string, params []byte, logID string, shared bool) (*child, error) {
	log := b.log.With("session", logID, "target", t.Name)
	c := &child{target: t, log: log, pending: make(map[int64]*Reply), maxMsg: b.opts.MaxMessageBytes, ownTimeout: b.ownTimeout(t),
		mem: b.buffers.share(b.opts.MaxMessageBytes), patience: b.opts.HeldPatience}
	switch {
	case t.Remote != nil && t.Remote.SSE:
		c.link = b.dialSSE(t, identity, c.handle, c.mem, log)
	case t.Remote != nil:
		c.link = b.dialRemote(t, identity, c.handle, c.mem, log)
	default:
		proc, err := startProcess(t, b.childEnv(t, identity), log, stderrLimits{maxLine: b.opts.StderrMaxLine, perSecond: b.opts.StderrLinesPerSecond})
		if err != nil {
			return nil, fmt.Errorf("target %q: start %s: %w", t.Name, t.Command, err)
		}
		b.started.Add(1)
		b.running.Add(1)
		go func() {
			<-proc.exited
			b.running.Add(-1)
			b.exited(t.Name, proc)
		}()
		c.link = stdioLink{proc}
		if r := newRedactor(b.opts.Secrets); r != nil {
			c.link = redactLink{c.link, r}
		}
	}
	go c.link.read(c)
	initCtx, cancel := context.WithTimeout(ctx, b.initializeTimeout(t))
	defer cancel()
	if shared {
		// A child for sessionless (2026-07-28) clients: one that answers
		// server/discover is spoken to in that protocol, every request
		// self-describing; an older one is initialized once, by tailgate.
		res, err := c.request(initCtx, "server/discover", discoverParams)
		if err == nil && res.Result.Has() {
			if err = c.init.parseDiscover(res.Bytes(res.Result)); err == nil {
				if c.init.speaksModern() {
					return c, nil
				}
				// It answers discover but speaks only versions with
				// sessions (go-sdk's stateful server does): initialize.
				c.init = childInit{}
			}
		}
		if err != nil {
			err = c.failure(initCtx, "server/discover", err)
			c.link.stop(b.opts.StopGrace)
			return nil, err
		}
		params = nil
	}
	if len(params) == 0 {
		params = defaultInitializeParams
	}
	res, err := c.request(initCtx, "initialize", params)
	if err == nil && res.Error.Has() && !shared && string(res.Bytes(res.Path("error", "code"))) == strconv.Itoa(CodeMethodNotFound) && c.discoverForSessionClient(initCtx, params) {
		// A server of 2026-07-28 only: tailgate bridges (bridge.go).
		return c, nil
	}
	if err == nil && res.Error.Has() {
		// The error's message, without the target's name when tailgate's
		// link already put it there (failure names it once).
		msg := res.String(res.Path("error", "message"))
		if msg == "" {
			msg = string(res.Bytes(res.Error))
		}
		err = errors.New(strings.TrimPrefix(msg, fmt.Sprintf("target %q: ", t.Name)))
	}
	if err == nil {
		err = c.init.parse(res.Bytes(res.Result))
	}
	if err == nil {
		err = c.write([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	}
	if err != nil {
		err = c.failure(initCtx, "initialize", err)
		c.link.stop(b.opts.StopGrace)
		return nil, err
	}
	return c, nil
}

// defaultInitializeParams are what tailgate offers a child started before
// any client is known (a pooled one): every client capability, so the
// child holds nothing back; a request the client cannot answer gets the
// client's error.
var defaultInitializeParams = []byte(`{"protocolVersion":"` + LatestVersion + `","capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"tailgate","version":"dev"}}`)

// LatestVersion is the newest MCP protocol version whose session
// handshake tailgate speaks to children of its own accord.
const LatestVersion = "2025-11-25"

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
	ci.versions = []string{ModernVersion, r.ProtocolVersion}
	return nil
}

// stop ends the child and waits until it is reaped.
func (c *child) stop(grace time.Duration) { c.link.stop(grace) }

// alive reports whether the child's process is running.
func (c *child) alive() bool {
	select {
	case <-c.link.exited():
		return false
	default:
		return true
	}
}

// write sends one message. A message must be one line on stdio: JSON
// whitespace that is a line break is removed (inside strings line breaks
// are always escaped).
func (c *child) write(msg []byte) error { return c.link.write(msg, nil) }

// send registers r and writes msg to the child with msg's id replaced by
// a child id. It returns the child id. r knows where it went before the
// write, which may wait for the child to read: nothing holds r meanwhile,
// so that the child's reader can always deliver to it.
func (c *child) send(m *Message, r *Reply) (int64, error) {
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		return 0, c.dead
	}
	if !c.alive() {
		// Exited, its output not closed yet (a grandchild may hold it):
		// the exit is the answer.
		c.mu.Unlock()
		return 0, c.link.exitError()
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = r
	c.mu.Unlock()
	r.sentAs(c, id)
	var idBuf [20]byte
	msg := m.Replace(m.ID, strconv.AppendInt(idBuf[:0], id, 10))
	if err := c.link.write(msg, r.headers); err != nil {
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
	msg := fmt.Appendf(nil, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":%s}}`, id, quote(reason))
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
func (c *child) request(ctx context.Context, method string, params []byte) (*Message, error) {
	var b []byte
	b = append(b, `{"jsonrpc":"2.0","id":0,"method":`...)
	b = append(b, quote(method)...)
	if len(params) > 0 {
		b = append(b, `,"params":`...)
		b = append(b, params...)
	}
	b = append(b, '}')
	m, err := ParseMessage(b)
	if err != nil {
		return nil, err
	}
	r := newReply(1)
	r.internal = true
	id, err := c.send(m, r)
	if err != nil {
		return nil, err
	}
	select {
	case f := <-r.ch:
		if f.Err != nil {
			return nil, f.Err
		}
		return ParseMessage(f.Data)
	case <-ctx.Done():
		c.cancel(id, "tailgate stopped waiting")
		return nil, ctx.Err()
	}
}

// readLoop reads the child's stdout until it closes, handing each message
// on. Lines that are not JSON-RPC are logged and skipped.
func (c *child) readLoop(stdout io.Reader, exited <-chan struct{}) {
	br := bufio.NewReaderSize(stdout, 64<<10)
	var err error
	for {
		var line []byte
		held := charge{share: c.mem}
		line, err = c.readLine(br, exited, &held)
		if len(line) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			c.handle(bytes.TrimSpace(line), &held)
		}
		held.readerDone()
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed) {
		err = nil
	}
	c.closed(err)
}

// readLine reads one line of the child's, charging its bytes to the
// link's share of the gateway's buffers as it grows (takeWaiting). While
// there is no room (the clients have not taken what the child said
// before), the line is not read on: the child waits on its own output,
// for no longer than the link's patience. A line longer than the read
// buffer is read into a buffer of its own, which the answer made of it
// keeps.
func (c *child) readLine(br *bufio.Reader, exited <-chan struct{}, held *charge) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	var lr lineRead
	if !errors.Is(err, bufio.ErrBufferFull) {
		if werr := c.mem.takeWaiting(int64(len(line)), &lr, c.patience, exited); werr != nil {
			return nil, werr
		}
		held.n = int64(len(line))
		return line, err
	}
	lr.seq = c.mem.all.startLine()
	defer c.mem.all.endLine(lr.seq)
	var long []byte
	for {
		if len(long)+len(line) > cap(long) {
			grow := max(len(long)+len(line), 2*cap(long)) - cap(long)
			grow = min(grow, c.maxMsg+1-cap(long))
			if len(long)+len(line) > c.maxMsg || grow <= 0 {
				return nil, &tooLargeError{c.maxMsg}
			}
			if werr := c.mem.takeWaiting(int64(grow), &lr, c.patience, exited); werr != nil {
				return nil, werr
			}
			held.n += int64(grow)
			nb := make([]byte, len(long), cap(long)+grow)
			copy(nb, long)
			long = nb
		}
		long = append(long, line...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			held.owns = true
			return long, err
		}
		line, err = br.ReadSlice('\n')
	}
}

// closed fails every pending request: stdout is gone.
func (c *child) closed(readErr error) {
	err := c.failure(context.Background(), "", errors.Join(errors.New("stdout closed"), readErr))
	if readErr != nil {
		c.log.Warn("reading the child's output failed; stopping it", "err", readErr)
		go c.link.kill()
	}
	c.mu.Lock()
	c.dead = err
	pending := c.pending
	c.pending = make(map[int64]*Reply)
	c.mu.Unlock()
	for _, r := range pending {
		r.fail(err)
	}
}

// handle routes one message from the child; held is what it holds of the
// link's buffers (nil: nothing yet), for an answer made of it to take over.
func (c *child) handle(line []byte, held *charge) {
	if len(line) == 0 {
		return
	}
	m, err := ParseMessage(line)
	if err != nil {
		c.log.Warn("child wrote a line that is not a JSON-RPC message; skipped", "err", err, "line", truncate(line, 200))
		return
	}
	if m.IsResponse() {
		c.response(m, held)
		return
	}
	s := c.owner.Load()
	// The reader never writes to the child itself: a child blocked on a
	// full stdout would never drain a full stdin. Answers it gives here
	// go from goroutines of their own.
	if s == nil {
		// A pooled child talking before anyone listens.
		if m.IsRequest() {
			go c.write(ErrorMessage(m.Bytes(m.ID), CodeInternalError, "no client attached to this server yet"))
		}
		return
	}
	if held == nil || !held.owns {
		m.Raw = bytes.Clone(m.Raw) // it outlives the read buffer
	}
	if m.IsRequest() {
		s.serverRequest(c, m, held)
		return
	}
	s.childNotification(c, m, held)
}

// response hands the child's answer to the request it answers, with the
// request's own id.
func (c *child) response(m *Message, held *charge) {
	id, err := strconv.ParseInt(string(m.Bytes(m.ID)), 10, 64)
	if err != nil {
		c.log.Debug("response to an id tailgate never sent", "id", string(m.Bytes(m.ID)))
		return
	}
	c.mu.Lock()
	r := c.pending[id]
	delete(c.pending, id)
	if r != nil && r.parked != nil {
		// The call answered while its client was away for input: the
		// retry gets this.
		r.parked.answer = bytes.Clone(m.Raw)
	}
	c.mu.Unlock()
	if r == nil || r.parked != nil {
		return // cancelled, timed out, or parked
	}
	if r.internal {
		r.finish(bytes.Clone(m.Raw))
		return
	}
	c.deliver(r, m, held)
}

// deliver finishes client call r with the child's response m.
func (c *child) deliver(r *Reply, m *Message, held *charge) {
	if r.retry != nil && m.Result.Has() && m.String(m.Path("result", "resultType")) == "input_required" {
		// Input the session client is asked for (bridge.go).
		if rm, err := ParseMessage(bytes.Clone(m.Raw)); err == nil {
			go r.s.fulfill(c, r, rm)
			return
		}
	}
	if r.s != nil && r.s.shared && !c.init.modern && m.Result.Has() && m.Raw[m.Result.Start] == '{' && !m.Field(m.Result, "resultType").Has() && !m.Field(m.Result, "task").Has() {
		// An older child answers a sessionless client: every result of
		// 2026-07-28 says its type (a session-era task is left as it is:
		// it is no complete result).
		if rm, err := ParseMessage(m.Replace(Span{m.Result.Start + 1, m.Result.Start + 1}, resultTypeComplete(m.Bytes(m.Result)))); err == nil {
			m = rm
		}
	}
	o := OutcomeOK
	switch {
	case m.Error.Has():
		o = OutcomeError
	case r.toolCall && string(m.Bytes(m.Field(m.Result, "isError"))) == "true":
		o = OutcomeToolError
	}
	if r.mayCreateTask && o == OutcomeOK {
		r.s.noteTask(c, m)
	}
	if r.transform != nil {
		c.finish(r, r.transform(m), o, held)
		return
	}
	var out []byte
	if held != nil && held.owns {
		out = m.rewrite(m.ID, r.frontID) // a large answer is not copied
	} else {
		out = m.Replace(m.ID, r.frontID)
	}
	if r.listen {
		// A listen's result names the subscription by the request's id.
		if om, err := ParseMessage(out); err == nil {
			if sid := om.Path("result", "_meta", metaSubscriptionID); sid.Has() {
				out = om.Replace(sid, r.frontID)
			}
		}
	}
	c.finish(r, out, o, held)
}

// finish ends r with the target's answer out, charged to the link's share
// of the gateway's buffers until the client has taken it. An answer the
// buffers have no room for (the caller has not taken enough of the
// answers before it) is replaced by an error that says so: the target's
// work is lost to this caller, the gateway's memory to nobody.
func (c *child) finish(r *Reply, out []byte, o Outcome, from *charge) {
	held, err := c.mem.answer(from, len(out))
	if err != nil {
		c.log.Warn("answer dropped: the gateway's buffers are full", "size", len(out), "err", err)
		r.fail(&CodeError{Code: CodeInternalError, Err: fmt.Errorf("target %q: an answer of %d bytes dropped: %w", c.target.Name, len(out), err)})
		return
	}
	r.end(Frame{Data: out, Final: true, Outcome: o, held: held})
}

// push delivers a message of the target's on r's stream, charged as
// finish's answers (from, as there, is what the message read holds); one
// the buffers have no room for is dropped, and counts as delivered. It
// reports false if r has ended.
func (c *child) push(r *Reply, msg []byte, from *charge) bool {
	held, err := c.mem.answer(from, len(msg))
	if err != nil {
		c.log.Warn("message dropped: the gateway's buffers are full", "size", len(msg), "err", err)
		return true
	}
	return r.pushFrame(Frame{Data: msg, held: held})
}

// resultTypeComplete is what goes first in an object result to say it is
// complete: the member, and a comma unless the object is empty.
func resultTypeComplete(result []byte) []byte {
	if len(bytes.TrimSpace(result[1:len(result)-1])) == 0 {
		return []byte(`"resultType":"complete"`)
	}
	return []byte(`"resultType":"complete",`)
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
	if c.link.waitExited(200 * time.Millisecond) {
		msg := c.link.exitError().Error()
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

// offers reports whether c lists a tool or prompt named name. The list is
// asked once and kept until the child says it changed.
func (c *child) offers(ctx context.Context, kind, name string) bool {
	names, err := c.listNames(ctx, kind)
	return err == nil && names[name]
}

// lookup is one of tailgate's own list requests to a child: it runs
// detached from whoever first needed it, bounded by the child's
// ownTimeout, so that a caller that leaves does not fail the others and a
// child that never answers holds nobody past the bound.
type lookup struct {
	done   chan struct{}
	names  map[string]bool
	titles *resourceNames
	err    error
}

// wait waits for l's answer, or for ctx.
func (l *lookup) wait(ctx context.Context) error {
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startLookup returns the lookup of key in flight, or starts fill as a new
// one. fill keeps what it learns if the lists did not change meanwhile
// (gen is the list generation when it started).
func (c *child) startLookup(key string, fill func(ctx context.Context, l *lookup, gen uint64)) *lookup {
	c.namesMu.Lock()
	defer c.namesMu.Unlock()
	if l := c.lookups[key]; l != nil {
		return l
	}
	l := &lookup{done: make(chan struct{})}
	if c.lookups == nil {
		c.lookups = make(map[string]*lookup)
	}
	c.lookups[key] = l
	gen := c.namesGen
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.ownTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.link.exited(): // a grandchild may keep stdout open
				cancel()
			case <-ctx.Done():
			}
		}()
		fill(ctx, l, gen)
		c.namesMu.Lock()
		if c.lookups[key] == l {
			delete(c.lookups, key)
		}
		c.namesMu.Unlock()
		close(l.done)
	}()
	return l
}

// listNames is the set of names c lists for kind ("tool" or "prompt"),
// waiting for the list (as long as ctx and c's ownTimeout allow) if it is
// not known yet.
func (c *child) listNames(ctx context.Context, kind string) (map[string]bool, error) {
	if n, ok := c.knownNames(kind); ok {
		return n, nil
	}
	l := c.lookupNames(kind)
	if err := l.wait(ctx); err != nil {
		return nil, err
	}
	return l.names, nil
}

// knownNames is the set of names c lists for kind if tailgate knows it
// already; if not, it starts asking and reports false at once.
func (c *child) knownNames(kind string) (map[string]bool, bool) {
	c.namesMu.Lock()
	n, ok := c.names[kind]
	c.namesMu.Unlock()
	if !ok {
		c.lookupNames(kind)
	}
	return n, ok
}

// lookupNames asks c for its list of kind, unless that is being asked.
func (c *child) lookupNames(kind string) *lookup {
	return c.startLookup(kind, func(ctx context.Context, l *lookup, gen uint64) {
		// The lock is not held while the child is asked: its reader takes
		// it to drop the cache on list_changed, and must stay free to
		// deliver the answer.
		lk := listKinds[kind+"s/list"]
		names := make(map[string]bool)
		if c.init.has(lk.capability) {
			items, err := c.listAll(ctx, lk, nil)
			if err != nil {
				l.err = err
				return
			}
			for _, it := range items {
				names[itemKey(it, lk.key)] = true
			}
		}
		l.names = names
		c.namesMu.Lock()
		if c.namesGen == gen { // not changed while asked
			if c.names == nil {
				c.names = make(map[string]map[string]bool)
			}
			c.names[kind] = names
		}
		c.namesMu.Unlock()
	})
}

// listChanged drops the cached names; a lookup in flight may answer from
// before the change, so the next one who asks starts another.
func (c *child) listChanged() {
	c.namesMu.Lock()
	c.names, c.titles, c.lookups = nil, nil, nil
	c.namesGen++
	c.namesMu.Unlock()
}

// resourceNames are the names a child lists for its resources and
// resource templates.
type resourceNames struct {
	byURI     map[string]string // resource URI, or URI template → name
	templates []resourceTemplate
}

type resourceTemplate struct {
	re   *regexp.Regexp // matches the URIs the template expands to
	name string
}

// names are the names listed for uri: a resource's, a template's (uri
// being the template), or those of every template uri is an expansion of
// (templates may overlap: each one's rules must hold).
func (n *resourceNames) names(uri string) []string {
	if name, ok := n.byURI[uri]; ok {
		return []string{name}
	}
	var names []string
	for _, t := range n.templates {
		if t.re.MatchString(uri) && !slices.Contains(names, t.name) {
			names = append(names, t.name)
		}
	}
	return names
}

// resourceTitles are the names c lists for the resource at uri (or the
// templates it expands, or the template uri), none if it lists none. Like
// listNames, the lists are asked once and kept until they change; a list
// that fails is an error, so that a policy on names cannot be sidestepped
// by a failing list (a server without resource templates, which answers
// their list -32601, lists none).
func (c *child) resourceTitles(ctx context.Context, uri string) ([]string, error) {
	c.namesMu.Lock()
	titles := c.titles
	c.namesMu.Unlock()
	if titles != nil {
		return titles.names(uri), nil
	}
	l := c.startLookup("resource", func(ctx context.Context, l *lookup, gen uint64) {
		titles := &resourceNames{byURI: make(map[string]string)}
		if c.init.has("resources") {
			for _, list := range []struct{ method, key string }{{"resources/list", "uri"}, {"resources/templates/list", "uriTemplate"}} {
				items, err := c.listAll(ctx, listKinds[list.method], nil)
				if err != nil && !(list.key == "uriTemplate" && isMethodNotFound(err)) {
					l.err = fmt.Errorf("%s: %w", list.method, err)
					return
				}
				for _, it := range items {
					key, name := itemKey(it, list.key), itemKey(it, "name")
					titles.byURI[key] = name
					if list.key == "uriTemplate" {
						if t, err := uritemplate.New(key); err == nil {
							titles.templates = append(titles.templates, resourceTemplate{t.Regexp(), name})
						}
					}
				}
			}
		}
		l.titles = titles
		c.namesMu.Lock()
		if c.namesGen == gen {
			c.titles = titles
		}
		c.namesMu.Unlock()
	})
	if err := l.wait(ctx); err != nil {
		return nil, err
	}
	return l.titles.names(uri), nil
}

// cacheHints are what a child said of caching its list (SEP-2549): the
// least ttlMs of its pages, and whether any page was private.
type cacheHints struct {
	ttlMs   int64
	hasTTL  bool
	private bool
	scoped  bool // some page said a cacheScope
}

// add takes in one page's hints.
func (h *cacheHints) add(page map[string]json.RawMessage) {
	var ttl int64
	if raw, ok := page["ttlMs"]; ok && json.Unmarshal(raw, &ttl) == nil {
		if !h.hasTTL || ttl < h.ttlMs {
			h.ttlMs = ttl
		}
		h.hasTTL = true
	}
	if raw, ok := page["cacheScope"]; ok {
		h.scoped = true
		h.private = h.private || string(raw) != `"public"`
	}
}

// listAll collects every page of a list from c, and its cache hints into
// hints if not nil.
func (c *child) listAll(ctx context.Context, lk listKind, hints *cacheHints) ([]json.RawMessage, error) {
	var all []json.RawMessage
	cursor := ""
	for range 1000 {
		params := []byte("{")
		if cursor != "" {
			params = fmt.Appendf(params, `"cursor":%s`, quote(cursor))
		}
		if c.init.modern {
			// A sessionless child needs every request to say who asks.
			if cursor != "" {
				params = append(params, ',')
			}
			params = append(params, modernMeta...)
		}
		params = append(params, '}')
		res, err := c.request(ctx, lk.method, params)
		if err != nil {
			return nil, c.failure(ctx, lk.method, err)
		}
		if res.Error.Has() {
			return nil, &WireError{Raw: bytes.Clone(res.Bytes(res.Error))}
		}
		var page map[string]json.RawMessage
		if err := json.Unmarshal(res.Bytes(res.Result), &page); err != nil {
			return nil, fmt.Errorf("target %q: %s: %w", c.target.Name, lk.method, err)
		}
		var items []json.RawMessage
		if raw := page[lk.field]; len(raw) > 0 {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("target %q: %s: %w", c.target.Name, lk.method, err)
			}
		}
		all = append(all, items...)
		if hints != nil {
			hints.add(page)
		}
		cursor = ""
		if raw := page["nextCursor"]; len(raw) > 0 {
			json.Unmarshal(raw, &cursor)
		}
		if cursor == "" {
			return all, nil
		}
	}
	return all, fmt.Errorf("target %q: %s: more than 1000 pages", c.target.Name, lk.method)
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
	return json.Unmarshal(we.Raw, &e) == nil && e.Code == CodeMethodNotFound
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
