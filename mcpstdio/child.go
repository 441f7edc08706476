package mcpstdio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// child is one target's running server: its process, the MCP client
// session to it, and the session that owns it. A pooled child has no
// owner until a session takes it.
type child struct {
	target *Target
	proc   *process
	cs     *mcp.ClientSession
	// conn is the raw connection under cs, for notifications go-sdk's
	// client has no method for (roots/list_changed).
	conn  mcp.Connection
	owner atomic.Pointer[Session]
}

// clientCaps is what tailgate tells a child its client can do. A session's
// own children mirror the front client's capabilities; pooled children,
// started before any client is known, offer all of them, and a request the
// client turns out not to support is answered with an error.
func clientCaps(front *mcp.ClientCapabilities) *mcp.ClientCapabilities {
	if front == nil {
		return &mcp.ClientCapabilities{RootsV2: &mcp.RootCapabilities{ListChanged: true}}
	}
	caps := &mcp.ClientCapabilities{}
	if front.RootsV2 != nil {
		caps.RootsV2 = &mcp.RootCapabilities{ListChanged: front.RootsV2.ListChanged}
	} else if front.Roots.ListChanged {
		caps.RootsV2 = &mcp.RootCapabilities{ListChanged: true}
	}
	return caps
}

// startChild starts t's process and initializes it. front is the front
// client's capabilities and impl its implementation (nil for a pooled
// child); identity is added to the child's environment.
func (b *Backend) startChild(ctx context.Context, t *Target, identity map[string]string, front *mcp.ClientCapabilities, impl *mcp.Implementation, logID string) (*child, error) {
	log := b.log.With("session", logID, "target", t.Name)
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
	c := &child{target: t, proc: proc}
	if impl == nil {
		impl = &mcp.Implementation{Name: "tailgate"}
	}
	opts := &mcp.ClientOptions{
		Logger:       b.opts.SDKLogger.With("session", logID, "target", t.Name),
		Capabilities: clientCaps(front),
	}
	// Sampling and elicitation go to the client whose request caused them.
	// The handlers are set only when the client can answer, so that the
	// child sees the same capabilities it would see directly.
	if front == nil || front.Sampling != nil {
		opts.CreateMessageHandler = func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			s := c.owner.Load()
			if s == nil {
				return nil, errNoClient
			}
			return s.peer.CreateMessage(s.relatedContext(), req.Params)
		}
	}
	if front == nil || front.Elicitation != nil {
		opts.ElicitationHandler = func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			s := c.owner.Load()
			if s == nil {
				return nil, errNoClient
			}
			return s.peer.Elicit(s.relatedContext(), req.Params)
		}
	}
	client := mcp.NewClient(impl, opts)
	// go-sdk answers roots/list from the client's own roots; the child
	// must get the front client's.
	client.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "roots/list" {
				return next(ctx, method, req)
			}
			s := c.owner.Load()
			if s == nil {
				return nil, errNoClient
			}
			if !s.offersRoots {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "the client does not offer roots"}
			}
			p, _ := req.GetParams().(*mcp.ListRootsParams)
			return s.peer.ListRoots(s.relatedContext(), p)
		}
	})
	transport := &interceptTransport{
		Transport: &mcp.IOTransport{Reader: proc.stdout, Writer: proc.stdin},
		intercept: func(req *jsonrpc.Request) bool { return c.intercept(req) },
		connected: func(conn mcp.Connection) { c.conn = conn },
	}
	initCtx, cancel := context.WithTimeout(ctx, b.initializeTimeout(t))
	defer cancel()
	cs, err := client.Connect(initCtx, transport, &mcp.ClientSessionOptions{ProtocolVersion: ClientVersion})
	if err != nil {
		err = c.failure(initCtx, "initialize", err)
		proc.stop(b.opts.StopGrace)
		return nil, err
	}
	c.cs = cs
	return c, nil
}

var errNoClient = errors.New("no client attached to this server yet")

// stop ends the child and waits until it is reaped.
func (c *child) stop(grace time.Duration) {
	if c.cs != nil {
		c.cs.Close()
	}
	c.proc.stop(grace)
}

// alive reports whether the child's process is running.
func (c *child) alive() bool {
	select {
	case <-c.proc.exited:
		return false
	default:
		return true
	}
}

// intercept takes the child's notifications that must reach the front in
// order, or that go-sdk's client does not pass on: progress, log messages,
// resource updates and list changes.
func (c *child) intercept(req *jsonrpc.Request) bool {
	s := c.owner.Load()
	if s == nil {
		// A pooled child talking before anyone listens.
		return true
	}
	switch req.Method {
	case "notifications/progress":
		var p mcp.ProgressNotificationParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.log.Warn("bad progress notification from child", "target", c.target.Name, "err", err)
			return true
		}
		ctx, ok := s.progressContext(p.ProgressToken)
		if !ok {
			s.log.Debug("progress for no pending request", "target", c.target.Name, "token", p.ProgressToken)
			return true
		}
		if err := s.peer.NotifyProgress(ctx, &p); err != nil {
			s.log.Debug("forward progress", "target", c.target.Name, "err", err)
		}
		return true
	case "notifications/message":
		var p mcp.LoggingMessageParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			s.log.Warn("bad log notification from child", "target", c.target.Name, "err", err)
			return true
		}
		if s.prefixed && p.Logger == "" {
			p.Logger = c.target.Name
		} else if s.prefixed {
			p.Logger = c.target.Name + nameSep + p.Logger
		}
		if err := s.peer.Log(s.relatedContext(), &p); err != nil {
			s.log.Debug("forward log message", "target", c.target.Name, "err", err)
		}
		return true
	case "notifications/resources/updated":
		var p mcp.ResourceUpdatedNotificationParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return true
		}
		p.URI = s.exposedURI(c, p.URI)
		if err := s.peer.ResourceUpdated(context.Background(), &p); err != nil {
			s.log.Debug("forward resource update", "target", c.target.Name, "err", err)
		}
		return true
	case "notifications/tools/list_changed":
		s.peer.ListChanged(ListTools)
		return true
	case "notifications/prompts/list_changed":
		s.peer.ListChanged(ListPrompts)
		return true
	case "notifications/resources/list_changed":
		s.peer.ListChanged(ListResources)
		return true
	}
	return false
}

// failure explains a failed request to c: the child's own JSON-RPC errors
// pass unchanged; a dead child is named with its exit status and last
// stderr; a timeout says which.
func (c *child) failure(ctx context.Context, op string, err error) error {
	var wire *jsonrpc.Error
	if errors.As(err, &wire) {
		return err
	}
	// A closed stdout usually means the child is exiting: give it a moment
	// so the error can say how it ended.
	if c.proc.waitExited(context.Background(), 200*time.Millisecond) {
		msg := c.proc.exitError().Error()
		if op != "" {
			msg += " (during " + op + ")"
		}
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg}
	}
	if op != "" {
		op = " " + op
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("target %q%s: no answer in time: %v", c.target.Name, op, err)}
	}
	return fmt.Errorf("target %q%s: %w", c.target.Name, op, err)
}

// notifyRootsChanged tells the child that the client's roots changed.
func (c *child) notifyRootsChanged(ctx context.Context) error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Write(ctx, &jsonrpc.Request{Method: "notifications/roots/list_changed", Params: json.RawMessage(`{}`)})
}
