package gatewaytest

import (
	"net"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// RemoteMCP serves server, a go-sdk MCP server scripted by the test (the
// tools it needs, or demoserver.New / NewTasks), over Streamable HTTP as a
// remote target, on 127.0.0.1 until the test ends; it returns the
// endpoint's URL. opts are go-sdk's (Stateless, …); wrap, if not nil,
// sees or alters every request before the server does.
func RemoteMCP(t testing.TB, server *mcp.Server, opts *mcp.StreamableHTTPOptions, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveMCP(t, ln, server, opts, wrap) + ln.Addr().String() + "/mcp"
}

// RemoteMCP is the package's RemoteMCP served from node n of the tailnet
// on port: a remote target reached over WireGuard, by n's name.
func (n *Node) RemoteMCP(t testing.TB, port string, server *mcp.Server, opts *mcp.StreamableHTTPOptions, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	ln, err := n.Listen("tcp", ":"+port)
	if err != nil {
		t.Fatal(err)
	}
	return serveMCP(t, ln, server, opts, wrap) + n.Name + ":" + port + "/mcp"
}

// serveMCP serves server on ln until the test ends, and returns the
// scheme of its URL.
func serveMCP(t testing.TB, ln net.Listener, server *mcp.Server, opts *mcp.StreamableHTTPOptions, wrap func(http.Handler) http.Handler) string {
	var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts)
	if wrap != nil {
		h = wrap(h)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://"
}
