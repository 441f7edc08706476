package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// loopbackNode is a Network on 127.0.0.1 that says it is a tailnet node
// with a MagicDNS name and tailnet addresses, as tsnode.Node does.
type loopbackNode struct {
	ln net.Listener
}

func (n *loopbackNode) Listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	n.ln = ln
	return ln, err
}
func (n *loopbackNode) ListenService(name string, port int) (net.Listener, error) {
	return net.Listen("tcp", "127.0.0.1:0")
}
func (n *loopbackNode) DNSName() string { return "gw.tail1234.ts.net" }
func (n *loopbackNode) IPs() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("100.64.0.9"), netip.MustParseAddr("fd7a:115c:a1e0::9")}
}

// A browser page cannot drive the gateway: a request whose Host is not one
// of the gateway's names (DNS rebinding) or whose Origin is a foreign one
// (cross-origin) gets 403 before any route sees it. The gateway's names
// are its node's MagicDNS names and addresses, its listener hostnames and
// its Service's name. Without a Host or Origin check (before), every one
// of these reached the routes.
func TestForeignHostAndOriginRefused(t *testing.T) {
	cfg, err := Parse("test.yaml", []byte(strings.ReplaceAll(`
tailscale:
  service: svc:mcp
  advertiseTags: [tag:gw]
config:
  mcp:
    allowedOrigins: [https://app.example.com]
binds:
- port: 3000
  listeners:
  - name: default
    routes:
    - backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
  - name: team
    hostname: mcp.corp.example
    routes:
    - backends:
      - mcp:
          targets:
          - name: demo
            stdio: {cmd: DEMO}
`, "DEMO", demoBin)), newEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(demoserver.LogWriter(t), nil))})
	if err != nil {
		t.Fatal(err)
	}
	node := &loopbackNode{}
	if err := s.Start(node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	addr := node.ln.Addr().String()

	for _, tt := range []struct {
		host, origin string
		refused      bool
	}{
		{host: "gw.tail1234.ts.net"},
		{host: "gw.tail1234.ts.net:3000"},
		{host: "GW.tail1234.ts.net."},
		{host: "gw"},
		{host: "gw:3000"},
		{host: "100.64.0.9"},
		{host: "100.64.0.9:3000"},
		{host: "[fd7a:115c:a1e0::9]"},
		{host: "[fd7a:115c:a1e0:0::9]:3000"},
		{host: "mcp.corp.example"},
		{host: "mcp"},
		{host: "mcp.tail1234.ts.net:3000"},
		{host: addr}, // the address the connection was made to
		{host: "evil.example.com", refused: true},
		{host: "evil.example.com:3000", refused: true},
		{host: "gw.evil.example.com", refused: true},
		{host: "tail1234.ts.net", refused: true},
		{host: "100.64.0.10", refused: true},
		{host: "[fd7a:115c:a1e0::10]:3000", refused: true},
		{host: "other.tail1234.ts.net", refused: true},

		{host: "gw:3000", origin: "http://gw:3000"}, // its own origin
		{host: "gw.tail1234.ts.net", origin: "http://gw.tail1234.ts.net:80"},
		{host: "gw:3000", origin: "https://app.example.com"},
		{host: "gw:3000", origin: "https://APP.example.com:443"},
		{host: "gw:3000", origin: "http://evil.example.com", refused: true},
		{host: "gw:3000", origin: "http://gw:8080", refused: true},
		{host: "gw:3000", origin: "https://gw:3000", refused: true},
		{host: "gw:3000", origin: "http://app.example.com", refused: true},
		{host: "gw:3000", origin: "https://app.example.com:8443", refused: true},
		{host: "gw:3000", origin: "null", refused: true},
		{host: "evil.example.com:3000", origin: "http://evil.example.com:3000", refused: true},
	} {
		code, body := rawRequest(t, addr, "GET /nope HTTP/1.1\r\nHost: "+tt.host+"\r\n"+originHeader(tt.origin)+"Connection: close\r\n\r\n")
		switch {
		case tt.refused && (code != http.StatusForbidden || !strings.HasPrefix(body, "tailgate: ")):
			t.Errorf("Host %q Origin %q: %d %q, want 403 with a reason", tt.host, tt.origin, code, body)
		case !tt.refused && code == http.StatusForbidden:
			t.Errorf("Host %q Origin %q: %d %q, want it routed", tt.host, tt.origin, code, body)
		}
	}

	// No Host at all (HTTP/1.0), and two Origins.
	if code, _ := rawRequest(t, addr, "GET /nope HTTP/1.0\r\n\r\n"); code != http.StatusForbidden {
		t.Errorf("no Host: %d, want 403", code)
	}
	if code, _ := rawRequest(t, addr, "GET /nope HTTP/1.1\r\nHost: gw\r\nOrigin: https://app.example.com\r\nOrigin: http://evil.example.com\r\nConnection: close\r\n\r\n"); code != http.StatusForbidden {
		t.Errorf("two Origins: %d, want 403", code)
	}

	// A whole session from an allowed origin's page.
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"page","version":"1"}}}`
	code, body := rawRequest(t, addr, fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: gw.tail1234.ts.net:3000\r\nOrigin: https://app.example.com\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(init), init))
	if code != http.StatusOK || !strings.Contains(body, `"serverInfo"`) {
		t.Errorf("initialize from an allowed origin: %d %s", code, body)
	}
}

func originHeader(o string) string {
	if o == "" {
		return ""
	}
	return "Origin: " + o + "\r\n"
}

// rawRequest writes req as is (Go's client would fix its Host) and returns
// the status and body.
func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A gateway served on loopback (tests, benchmarks) answers to its loopback
// address and localhost, any port, as a local MCP server should, and to
// nothing else.
func TestLoopbackServerAnswersToLocalhostOnly(t *testing.T) {
	_, base := serveLoopback(t, demoConfig)
	addr := strings.TrimPrefix(base, "http://")
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{addr, "127.0.0.1", "localhost:" + port, "localhost:1"} {
		if code, body := rawRequest(t, addr, "GET /nope HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); code == http.StatusForbidden {
			t.Errorf("Host %q: %d %q", host, code, body)
		}
	}
	for _, host := range []string{"evil.example.com:" + port, "localhost.evil.example.com"} {
		if code, _ := rawRequest(t, addr, "GET /nope HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n"); code != http.StatusForbidden {
			t.Errorf("Host %q: %d, want 403", host, code)
		}
	}
}
