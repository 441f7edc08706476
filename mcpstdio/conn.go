package mcpstdio

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// interceptTransport hands the child's notifications that belong to a
// front request (progress, log messages) to a function as they are read,
// before the messages after them.
//
// go-sdk's client retires responses in its read loop but queues
// notifications for another goroutine, so a progress notification the
// child sends just before its result would often reach a
// ProgressNotificationHandler after the call has returned and its front
// stream is closed. Taking notifications here keeps the child's order.
type interceptTransport struct {
	mcp.Transport
	// intercept is called with each notification read; it returns true if
	// it took the message, which then does not reach the client.
	intercept func(*jsonrpc.Request) bool
	// connected, if set, receives the connection once made.
	connected func(mcp.Connection)
}

func (t *interceptTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ic := &interceptConn{Connection: c, intercept: t.intercept}
	if t.connected != nil {
		t.connected(ic)
	}
	return ic, nil
}

type interceptConn struct {
	mcp.Connection
	intercept func(*jsonrpc.Request) bool
}

func (c *interceptConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		msg, err := c.Connection.Read(ctx)
		if err != nil {
			return nil, err
		}
		if req, ok := msg.(*jsonrpc.Request); ok && !req.ID.IsValid() && c.intercept(req) {
			continue
		}
		return msg, nil
	}
}
