package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// An upstream that is down fails its target as a crashed child does: the
// session's start fails naming it (failClosed), or the others are served
// and the instructions say which is missing (failOpen).
func TestRemoteTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/mcp"
	ln.Close() // nothing listens there now
	targets := `          - name: gone
            mcp: {host: ` + down + `}
          - name: demo
            stdio: {cmd: DEMO}`
	cfg := strings.Replace(demoConfig, `          - name: demo
            stdio: {cmd: DEMO}`, targets, 1)
	for _, tc := range []struct{ mode, want string }{{"failClosed", `target "gone"`}, {"failOpen", "gone is unavailable"}} {
		t.Run(tc.mode, func(t *testing.T) {
			_, base := serveLoopback(t, strings.Replace(cfg, "      - mcp:\n", "      - mcp:\n          failureMode: "+tc.mode+"\n", 1))
			c := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil)
			cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, legacySession)
			if tc.mode == "failClosed" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("initialize with an upstream down: %v, want an error naming the target", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if !strings.Contains(cs.InitializeResult().Instructions, tc.want) {
				t.Errorf("instructions %q do not say the target is missing", cs.InitializeResult().Instructions)
			}
			if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "demo_echo", Arguments: map[string]any{"message": "x"}}); err != nil {
				t.Errorf("the other target: %v", err)
			}
		})
	}
}

// A remote server of the legacy HTTP+SSE transport (agentgateway's
// targets[].sse, default path /sse) behind the same relay.
func TestSSETarget(t *testing.T) {
	upstream := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil))
	t.Cleanup(upstream.Close)
	cfg := strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            sse: {host: "`+upstream.URL+`"}`, 1)
	_, base := serveLoopback(t, cfg)
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "over sse"}})
	if err != nil || strings.TrimSpace(res.Content[0].(*mcp.TextContent).Text) != "over sse" {
		t.Fatalf("echo through an sse target: %v %v", err, res)
	}
}

// An upstream may close a call's event stream before the answer (SSE
// polling, SEP-1699). With an event id to resume from, tailgate resumes
// the stream and the caller gets the answer; without one the answer is
// lost upstream, and the caller gets an error naming the target at once
// instead of waiting until its timeout.
func TestRemoteTargetClosesAnswerStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		store  mcp.EventStore
		answer string // the text of the answer, or a part of the error
	}{
		{"resumable", mcp.NewMemoryEventStore(nil), "after the close"},
		{"lost", nil, `target "demo": the server closed the answer's event stream before answering`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := mcp.NewServer(&mcp.Implementation{Name: "polling"}, nil)
			mcp.AddTool(server, &mcp.Tool{Name: "slow"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
				req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: time.Millisecond})
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "after the close"}}}, nil, nil
			})
			upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{EventStore: tc.store}))
			t.Cleanup(upstream.Close)
			_, base := serveLoopback(t, strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            mcp: {host: "`+upstream.URL+`"}`, 1))
			cs := connect(t, base+"/mcp")
			defer cs.Close()
			// The guard only bounds a broken build; the lost answer's
			// error comes as soon as the upstream's stream ends.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "slow"})
			var got string
			switch {
			case err != nil:
				got = err.Error()
			case len(res.Content) > 0:
				got = res.Content[0].(*mcp.TextContent).Text
			}
			if !strings.Contains(got, tc.answer) {
				t.Errorf("call whose answer stream the upstream closed: %q, want %q", got, tc.answer)
			}
		})
	}
}

// Which network a remote target is dialled through: the tailnet for
// tailnet addresses and MagicDNS names, the host's otherwise, and what the
// target's tailnet key says when it is set.
func TestRemoteTargetNetwork(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		host    string
		tailnet *bool
		want    bool
	}{
		{"http://tickets:8080/mcp", nil, true},
		{"http://tickets.tail1234.ts.net/mcp", nil, true},
		{"http://100.101.102.103:8080/mcp", nil, true},
		{"http://[fd7a:115c:a1e0::1]:8080/mcp", nil, true},
		{"http://localhost:8080/mcp", nil, false},
		{"http://127.0.0.1:8080/mcp", nil, false},
		{"https://search.example.com/mcp", nil, false},
		{"http://tickets.hs.corp.example/mcp", &yes, true}, // a headscale base_domain
		{"http://tickets:8080/mcp", &no, false},
	} {
		got := (&Server{}).remoteOptions("t", &RemoteTarget{Host: tc.host, Tailnet: tc.tailnet}, false, 0)
		if got.Tailnet != tc.want {
			t.Errorf("%s (tailnet %v): dialled through the tailnet %v, want %v", tc.host, tc.tailnet, got.Tailnet, tc.want)
		}
	}
}

// Messages reach a remote server in the order tailgate writes them: a
// server slow to take notifications/initialized has it before the
// session's first request arrives, as a client of its own would send them.
func TestRemoteTargetKeepsMessageOrder(t *testing.T) {
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	var mu sync.Mutex
	var order []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Header.Get("Mcp-Method")
		if r.Method == http.MethodPost && method == "notifications/initialized" {
			time.Sleep(300 * time.Millisecond) // a slow server, not a wait for the test
		}
		mu.Lock()
		order = append(order, method)
		mu.Unlock()
		sdk.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)
	_, base := serveLoopback(t, strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            mcp: {host: "`+upstream.URL+`"}`, 1))
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	if _, err := cs.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if i := slices.Index(order, "notifications/initialized"); i < 0 || slices.Index(order, "tools/list") < i {
		t.Errorf("the server took %v: tools/list before notifications/initialized", order)
	}
}

// remoteConfig is demoConfig with its one target the remote server at url.
func remoteConfig(url string) string {
	return strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            mcp: {host: "`+url+`"}`, 1)
}

// A server that answers a call with something other than its answer (an
// error without the request's id, a proxy's refusal, a redirect that would
// lose the message, a 202) fails that call at once with the reason, naming
// the target, instead of leaving the caller to its timeout.
func TestRemoteTargetRefusesCall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(w http.ResponseWriter, r *http.Request)
		want  string
	}{
		{"error with id null", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"},"id":null}`)
		}, "HTTP 400: Bad Request: Server not initialized"},
		{"proxy refusal", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_token"}`)
		}, `HTTP 401: {"error":"invalid_token"}`},
		{"redirect to GET", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, "redirect turning POST into GET refused"},
		{"redirect to another host", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://elsewhere.example/mcp", http.StatusTemporaryRedirect)
		}, "redirect to elsewhere.example refused: only the target's own host"},
		{"accepted, no answer", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
		}, "the server took the request (HTTP 202) and sent no answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
			_, base := behindGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Mcp-Method") == "tools/call" {
					tc.reply(w, r)
					return
				}
				sdk.ServeHTTP(w, r)
			}))
			cs := connect(t, base+"/mcp")
			defer cs.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
			if err == nil || !strings.Contains(err.Error(), `target "demo"`) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("call: %v, want an error naming the target and %q", err, tc.want)
			}
		})
	}
}

// A cancelled call's stream to the server is closed, even when the server
// does not act on notifications/cancelled: for a 2026-07-28 (sessionless)
// call the closed stream is the cancellation itself; a session's server is
// sent the notification as well.
func TestRemoteTargetCancelClosesStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *mcp.ClientSessionOptions
	}{{"sessionless", nil}, {"session", legacySession}} {
		t.Run(tc.name, func(t *testing.T) {
			sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
			closed, release := make(chan struct{}, 1), make(chan struct{})
			_, base := behindGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.Header.Get("Mcp-Method") {
				case "tools/call":
					defer func() { closed <- struct{}{} }()
				case "notifications/cancelled":
					// A server that acts on it only after the test has
					// seen the stream closed (then the tool stops, and
					// the server can end the session at once).
					body, _ := io.ReadAll(r.Body)
					w.WriteHeader(http.StatusAccepted)
					later := r.Clone(context.Background())
					go func() {
						<-release
						later.Body = io.NopCloser(bytes.NewReader(body))
						sdk.ServeHTTP(httptest.NewRecorder(), later)
					}()
					return
				}
				sdk.ServeHTTP(w, r)
			}))
			progress := make(chan struct{}, 100)
			cs := connectWith(t, base+"/mcp", &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
				progress <- struct{}{}
			}}, tc.opts)
			ctx, cancel := context.WithCancel(context.Background())
			params := &mcp.CallToolParams{Name: "slow", Arguments: map[string]any{"steps": 600, "delayMs": 100}}
			params.SetProgressToken("p")
			go cs.CallTool(ctx, params)
			<-progress // running upstream
			cancel()
			select {
			case <-closed:
				close(release)
			case <-time.After(10 * time.Second):
				close(release)
				t.Fatal("the cancelled call's stream to the server is still open after 10s")
			}
		})
	}
}

// The session's GET stream, which carries what the server sends unasked,
// is reopened when the server (or a proxy) closes it: a list_changed sent
// after that still reaches the client.
func TestRemoteTargetListenStreamReopened(t *testing.T) {
	server := demoserver.New()
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	var gets atomic.Int32
	_, base := behindGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && gets.Add(1) == 1 {
			// The first stream is cut short, as an idle proxy would.
			ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
			defer cancel()
			r = r.WithContext(ctx)
		}
		sdk.ServeHTTP(w, r)
	}))
	changed := make(chan struct{}, 10)
	connectWith(t, base+"/mcp", &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
		changed <- struct{}{}
	}}, legacySession)
	waitFor(t, "the listen stream reopened", func() bool { return gets.Load() >= 2 })
	mcp.AddTool(server, &mcp.Tool{Name: "late"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no tools/list_changed after the server's event stream was reopened")
	}
}

// doubledEndpoint repeats a legacy SSE server's endpoint event, the second
// time naming another host.
type doubledEndpoint struct{ http.ResponseWriter }

func (w doubledEndpoint) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("event: endpoint")) {
		if n, err := w.ResponseWriter.Write(p); err != nil {
			return n, err
		}
		io.WriteString(w.ResponseWriter, "event: endpoint\ndata: http://elsewhere.example/messages\n\n")
	}
	return w.ResponseWriter.Write(p)
}

func (w doubledEndpoint) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// A legacy SSE server that sends its endpoint event more than once (a
// broken or hostile server) cannot crash the gateway or move its messages
// elsewhere: the first endpoint on its own host counts.
func TestSSETargetRepeatedEndpoint(t *testing.T) {
	sse := mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w = doubledEndpoint{w}
		}
		sse.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)
	_, base := serveLoopback(t, strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            sse: {host: "`+upstream.URL+`"}`, 1))
	stillServes(t, base)
}

// A server that restarts forgets its sessions. Whether it says so with the
// spec's 404 or with a 400 naming the session (server-everything does),
// the front session ends, and the client's next session works again.
func TestRemoteTargetForgetsSession(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forget func(w http.ResponseWriter)
	}{
		{"404", func(w http.ResponseWriter) { http.Error(w, "session not found", http.StatusNotFound) }},
		{"400 naming the session", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
			var restarted atomic.Bool
			known := sync.Map{} // session ids issued before the restart
			srv, base := behindGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if id := r.Header.Get("Mcp-Session-Id"); id != "" {
					if !restarted.Load() {
						known.Store(id, true)
					} else if _, old := known.Load(id); old {
						tc.forget(w)
						return
					}
				}
				sdk.ServeHTTP(w, r)
			}))
			cs := connect(t, base+"/mcp")
			defer cs.Close()
			echo := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}}
			if _, err := cs.CallTool(context.Background(), echo); err != nil {
				t.Fatal(err)
			}
			restarted.Store(true)
			if _, err := cs.CallTool(context.Background(), echo); err == nil || !strings.Contains(err.Error(), `target "demo"`) {
				t.Errorf("call after the server forgot the session: %v, want an error naming the target", err)
			}
			waitFor(t, "the front session ended", func() bool { return srv.Stats().Sessions == 0 })
			again := connect(t, base+"/mcp")
			defer again.Close()
			if _, err := again.CallTool(context.Background(), echo); err != nil {
				t.Errorf("a new session after the restart: %v", err)
			}
		})
	}
}

// behindGateway serves handler as the remote mcp target of a gateway on
// loopback, both stopped when the test ends (the gateway first).
func behindGateway(t *testing.T, handler http.Handler) (*Server, string) {
	t.Helper()
	upstream := httptest.NewServer(handler)
	t.Cleanup(upstream.Close)
	return serveLoopback(t, remoteConfig(upstream.URL))
}

// An https upstream's certificate is verified: one signed by a CA the host
// does not trust fails the session's start naming the target and the
// certificate, and the same server works once caFile names its CA.
func TestRemoteTargetTLS(t *testing.T) {
	upstream := httptest.NewTLSServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil))
	t.Cleanup(upstream.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, extra, wantErr string }{
		{"untrusted", "", "certificate signed by unknown authority"},
		{"caFile", ", caFile: " + ca, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := serveLoopback(t, strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, `            mcp: {host: "`+upstream.URL+`/mcp"`+tc.extra+`}`, 1))
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: base + "/mcp"}, legacySession)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), `target "demo"`) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("session through an untrusted upstream: %v, want an error naming the target and %q", err, tc.wantErr)
				}
				if err == nil {
					cs.Close()
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cs.Close()
			stillServes(t, base)
		})
	}
}

// upstreamRequest is one request a remote target's server was sent.
type upstreamRequest struct {
	method    string // HTTP method
	path      string
	mcpMethod string // Mcp-Method: the JSON-RPC method tailgate sent
	session   string // Mcp-Session-Id
	header    http.Header
}

// upstreamLog records what a remote target's server is sent.
type upstreamLog struct {
	mu   sync.Mutex
	reqs []upstreamRequest
}

// record is h, recording each request before h serves it.
func (u *upstreamLog) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, upstreamRequest{method: r.Method, path: r.URL.Path, mcpMethod: r.Header.Get("Mcp-Method"),
			session: r.Header.Get("Mcp-Session-Id"), header: r.Header.Clone()})
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (u *upstreamLog) all() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

// clientHeaders adds headers to every request of a client, as a client
// that tries to pass itself off as someone else would.
type clientHeaders struct {
	http.RoundTripper
	h http.Header
}

func (c clientHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range c.h {
		r.Header[k] = v
	}
	return c.RoundTripper.RoundTrip(r)
}

// withTarget is demoConfig with its target "demo" defined by target
// (indented as a target's keys).
func withTarget(target string) string {
	return strings.Replace(demoConfig, `            stdio: {cmd: DEMO}`, target, 1)
}

// generations are the two kinds of front client: one of the session era
// (MCP 2025-11-25), and a sessionless one (2026-07-28, go-sdk's default),
// and the version each speaks to a server of both.
var generations = []struct {
	name    string
	opts    *mcp.ClientSessionOptions
	version string
}{{"session", legacySession, "2025-11-25"}, {"sessionless", nil, "2026-07-28"}}

// bothGenerations is the demo server as a remote server of both protocol
// generations: go-sdk serves 2026-07-28 over HTTP only when stateless (a
// stateful go-sdk server lists no such version in server/discover, and a
// sessionless client falls back to a session).
func bothGenerations() http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, &mcp.StreamableHTTPOptions{Stateless: true})
}

// callEcho connects to base with sess and calls echo; the error is the
// session's start's or the call's.
func callEcho(ctx context.Context, base string, client *http.Client, sess *mcp.ClientSessionOptions, message string) (string, error) {
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: client, MaxRetries: -1}, sess)
	if err != nil {
		return "", err
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": message}})
	if err != nil {
		return "", err
	}
	if res.IsError || len(res.Content) == 0 {
		return "", fmt.Errorf("echo answered %+v", res)
	}
	return strings.TrimSpace(res.Content[0].(*mcp.TextContent).Text), nil
}

// agentgateway's {host, port, path} form of a target is the URL it names:
// the server is reached there (and only there), for mcp and sse targets,
// an sse target's path defaulting to /sse.
func TestRemoteTargetHostPortPath(t *testing.T) {
	var seen upstreamLog
	mux := http.NewServeMux()
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	sse := mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	mux.Handle("/mcp", streamable)
	mux.Handle("/sse", sse)
	mux.Handle("/events", sse)
	upstream := httptest.NewServer(seen.record(mux))
	t.Cleanup(upstream.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(upstream.URL, "http://"))

	for _, tc := range []struct {
		name, target string
		path         string // the only path the server may see
	}{
		{"mcp: host, port, path", `mcp: {host: 127.0.0.1, port: PORT, path: /mcp}`, "/mcp"},
		{"mcp: URL without port, port, path", `mcp: {host: "http://127.0.0.1", port: PORT, path: /mcp}`, "/mcp"},
		{"mcp: URL with host and port, path", `mcp: {host: "http://127.0.0.1:PORT", path: /mcp}`, "/mcp"},
		{"sse: host, port (default path)", `sse: {host: 127.0.0.1, port: PORT}`, "/sse"},
		{"sse: host, port, path", `sse: {host: 127.0.0.1, port: PORT, path: /events}`, "/events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(seen.all())
			_, base := serveLoopback(t, withTarget("            "+strings.ReplaceAll(tc.target, "PORT", port)))
			got, err := callEcho(context.Background(), base, nil, legacySession, "where")
			if err != nil || got != "where" {
				t.Fatalf("echo through %s: %q %v", tc.target, got, err)
			}
			reqs := seen.all()[before:]
			if len(reqs) == 0 {
				t.Fatal("the server saw no request")
			}
			for _, r := range reqs {
				if r.path != tc.path {
					t.Errorf("the server was sent %s %s, want only %s", r.method, r.path, tc.path)
				}
			}
		})
	}
}

// blackholed is a 127.0.0.1 address where a connection is never
// established: a listener whose accept queue (backlog 0) is full, so that
// the kernel drops every further SYN, as a firewall that drops packets.
func blackholed(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// The queue holds one connection that is never accepted.
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel completes connections past a full accept queue: no blackhole on loopback")
	}
	return addr
}

// silent is the address of a server that accepts connections and never
// sends a byte.
func silent(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// A server that cannot be reached in time fails the caller's session or
// call within the target's timeout, naming the target and why, for either
// generation of client: connectTimeout bounds the dial (an address that
// drops packets) and the TLS handshake (a server that accepts and says
// nothing), initializeTimeout a server that never answers its first
// request. The other timeouts are far longer, so a timeout not applied
// shows as a slow failure.
func TestRemoteTargetConnectTimeout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
		want   string
	}{
		{"dial of a blackholed address", func(t *testing.T) string {
			return `mcp: {host: "http://` + blackholed(t) + `/mcp", connectTimeout: 300ms, initializeTimeout: 60s, requestTimeout: 60s}`
		}, "i/o timeout"},
		{"TLS handshake never answered", func(t *testing.T) string {
			return `mcp: {host: "https://` + silent(t) + `/mcp", connectTimeout: 300ms, initializeTimeout: 60s, requestTimeout: 60s}`
		}, "TLS handshake timeout"},
		{"first request never answered", func(t *testing.T) string {
			return `mcp: {host: "http://` + silent(t) + `/mcp", initializeTimeout: 500ms, requestTimeout: 60s}`
		}, "initialize: no answer in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := serveLoopback(t, withTarget("            "+tc.target(t)))
			for _, g := range generations {
				t.Run(g.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					start := time.Now()
					_, err := callEcho(ctx, base, nil, g.opts, "x")
					took := time.Since(start)
					t.Logf("after %v: %v", took.Round(time.Millisecond), err)
					if err == nil || !strings.Contains(err.Error(), `target "demo"`) || !strings.Contains(err.Error(), tc.want) {
						t.Errorf("echo: %v, want an error naming the target and %q", err, tc.want)
					}
					if took > 5*time.Second {
						t.Errorf("the failure took %v, want it within the target's timeout", took.Round(time.Millisecond))
					}
				})
			}
		})
	}
}

// A call the server never answers fails at the target's requestTimeout
// with an error naming the target; the server's stream for it is closed
// (it is told to stop), and the session goes on.
func TestRemoteTargetRequestTimeout(t *testing.T) {
	for _, g := range generations {
		t.Run(g.name, func(t *testing.T) {
			sdk := bothGenerations()
			closed, stop := make(chan struct{}, 1), make(chan struct{})
			var seen upstreamLog
			upstream := httptest.NewServer(seen.record(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Mcp-Method") == "tools/call" && r.Header.Get("Mcp-Name") == "echo" {
					if v := r.Header.Get("Mcp-Protocol-Version"); v != g.version {
						t.Errorf("the call reached the server in version %q, want %q", v, g.version)
					}
					// Never answers. (The body is read: only then does
					// net/http notice the client closing the stream.)
					io.Copy(io.Discard, r.Body)
					select {
					case <-r.Context().Done():
						closed <- struct{}{}
					case <-stop:
					}
					return
				}
				sdk.ServeHTTP(w, r)
			})))
			t.Cleanup(upstream.Close)
			t.Cleanup(func() { close(stop) })
			_, base := serveLoopback(t, withTarget(`            mcp: {host: "`+upstream.URL+`", requestTimeout: 500ms}`))
			cs := connectWith(t, base+"/mcp", nil, g.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "x"}})
			took := time.Since(start)
			const want = `target "demo": no answer in time (requestTimeout 500ms)`
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("a call never answered: %v, want %q", err, want)
			}
			if took > 5*time.Second {
				t.Errorf("the call failed after %v, want about 500ms", took.Round(time.Millisecond))
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				var sent []string
				for _, r := range seen.all() {
					sent = append(sent, r.method+" "+r.mcpMethod)
				}
				t.Errorf("the server's stream for the timed-out call is still open after 10s; it was sent %v", sent)
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}})
			if err != nil || res.Content[0].(*mcp.TextContent).Text != "3" {
				t.Errorf("the session after the timeout: %v %v", err, res)
			}
		})
	}
}

// A target's static header, given as a value, read from a file or from an
// environment variable, reaches the server with every request, and its
// value is in no log line, not even at debug level nor when a call fails.
func TestRemoteTargetStaticHeader(t *testing.T) {
	const secret = "Bearer s3cr3t-9f8e7d"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TAILGATE_TEST_TOKEN", secret)
	for _, tc := range []struct{ name, value string }{
		{"file", `{file: "` + file + `"}`},
		{"env", `{env: TAILGATE_TEST_TOKEN}`},
		{"value", `"` + secret + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen upstreamLog
			upstream := httptest.NewServer(seen.record(refusingAdd()))
			t.Cleanup(upstream.Close)
			var logs syncBuffer
			_, base := serveLoopbackOpts(t, withTarget(`            mcp:
              host: "`+upstream.URL+`"
              headers: {Authorization: `+tc.value+`}`),
				Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			cs := connect(t, base+"/mcp")
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "with key"}})
			if err != nil || strings.TrimSpace(res.Content[0].(*mcp.TextContent).Text) != "with key" {
				t.Fatalf("echo: %v %v", err, res)
			}
			if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}}); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
				t.Errorf("a call the server refuses: %v, want its HTTP 403", err)
			}
			cs.Close()
			reqs := seen.all()
			if len(reqs) == 0 {
				t.Fatal("the server saw no request")
			}
			for _, r := range reqs {
				if got := r.header.Values("Authorization"); !slices.Equal(got, []string{secret}) {
					t.Errorf("%s %s (%s) came with Authorization %q, want %q", r.method, r.path, r.mcpMethod, got, secret)
				}
			}
			if strings.Contains(logs.String(), "s3cr3t") {
				t.Errorf("the header's value is in the log:\n%s", grepLines(logs.String(), "s3cr3t"))
			}
		})
	}
}

// identifyAs says every connection is from id, as WhoIs would.
func identifyAs(id *tsnode.Identity) IdentifyFunc {
	return IdentifyTailnet(func(context.Context, netip.AddrPort) (*tsnode.Identity, error) { return id, nil })
}

// With identityHeaders, the server is told who asks, from WhoIs only: the
// caller's login, node and tags (no tags header for an untagged node),
// whatever the client itself sends in those headers; without it, no such
// header reaches the server at all. For both generations of client.
func TestRemoteTargetIdentityHeaders(t *testing.T) {
	forged := http.Header{
		"X-Tailgate-User-Login": {"mallory@example.com"},
		"X-Tailgate-Node-Name":  {"mallory.tail1234.ts.net"},
		"X-Tailgate-Node-Tags":  {"tag:admin"},
	}
	tagged := &tsnode.Identity{NodeName: "ci-runner.tail1234.ts.net", NodeHostname: "ci-runner", UserLogin: "tagged-devices", Tags: []string{"tag:ci", "tag:deploy"}}
	alice := &tsnode.Identity{NodeName: "laptop.tail1234.ts.net", NodeHostname: "laptop", UserLogin: "alice@example.com"}
	for _, tc := range []struct {
		name     string
		id       *tsnode.Identity
		identity bool              // identityHeaders on the target
		want     map[string]string // each X-Tailgate-* header the server must see; no others
	}{
		{"tagged node", tagged, true, map[string]string{
			"X-Tailgate-User-Login": "tagged-devices", "X-Tailgate-Node-Name": "ci-runner.tail1234.ts.net", "X-Tailgate-Node-Tags": "tag:ci,tag:deploy"}},
		{"untagged node", alice, true, map[string]string{
			"X-Tailgate-User-Login": "alice@example.com", "X-Tailgate-Node-Name": "laptop.tail1234.ts.net"}},
		{"identityHeaders off", tagged, false, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen upstreamLog
			upstream := httptest.NewServer(seen.record(bothGenerations()))
			t.Cleanup(upstream.Close)
			_, base := serveLoopbackOpts(t, withTarget(`            mcp: {host: "`+upstream.URL+`", identityHeaders: `+strconv.FormatBool(tc.identity)+`}`),
				Options{Identify: identifyAs(tc.id)})
			client := &http.Client{Transport: clientHeaders{http.DefaultTransport, forged}}
			for _, g := range generations {
				if got, err := callEcho(context.Background(), base, client, g.opts, "who"); err != nil || got != "who" {
					t.Fatalf("%s client: echo: %q %v", g.name, got, err)
				}
			}
			reqs := seen.all()
			for _, g := range generations {
				if !slices.ContainsFunc(reqs, func(r upstreamRequest) bool {
					return r.mcpMethod == "tools/call" && r.header.Get("Mcp-Protocol-Version") == g.version
				}) {
					t.Errorf("no call reached the server in version %s (the %s client's)", g.version, g.name)
				}
			}
			for _, r := range reqs {
				for name, values := range r.header {
					if !strings.HasPrefix(name, "X-Tailgate-") {
						continue
					}
					if want, ok := tc.want[name]; !ok || !slices.Equal(values, []string{want}) {
						t.Errorf("%s %s (%s) came with %s %q, want %q", r.method, r.path, r.mcpMethod, name, values, tc.want[name])
					}
				}
				for name, want := range tc.want {
					if r.header.Get(name) != want {
						t.Errorf("%s %s (%s) came without %s %q", r.method, r.path, r.mcpMethod, name, want)
					}
				}
			}
		})
	}
}

// A 2026-07-28 server is spoken to without a session: no initialize, no
// Mcp-Session-Id, nothing to DELETE. A server of the session era gets an
// initialize and a session of its own for each front session, each
// request carrying its front session's, and a DELETE of it when the front
// session ends, while the other goes on.
func TestRemoteTargetProtocolGenerations(t *testing.T) {
	t.Run("2026-07-28 server, sessionless callers", func(t *testing.T) {
		var seen upstreamLog
		upstream := httptest.NewServer(seen.record(bothGenerations()))
		t.Cleanup(upstream.Close)
		_, base := serveLoopback(t, remoteConfig(upstream.URL))
		for _, msg := range []string{"one", "two"} {
			if got, err := callEcho(context.Background(), base, nil, nil, msg); err != nil || got != msg {
				t.Fatalf("echo %s: %q %v", msg, got, err)
			}
		}
		reqs := seen.all()
		var methods []string
		for _, r := range reqs {
			methods = append(methods, r.method+" "+r.mcpMethod)
			if r.session != "" || r.method != http.MethodPost || strings.HasPrefix(r.mcpMethod, "initialize") || r.mcpMethod == "notifications/initialized" {
				t.Errorf("the server was sent %s %s with session %q: want sessionless POSTs only", r.method, r.mcpMethod, r.session)
			}
			if v := r.header.Get("Mcp-Protocol-Version"); v != "2026-07-28" {
				t.Errorf("%s came with Mcp-Protocol-Version %q", r.mcpMethod, v)
			}
		}
		if !slices.Contains(methods, "POST tools/call") {
			t.Errorf("the server never got the calls: %v", methods)
		}
	})

	t.Run("server of the session era, session callers", func(t *testing.T) {
		seen, deleted, url := sessionEraServer(t)
		s, base := serveLoopback(t, remoteConfig(url))
		echo := func(cs *mcp.ClientSession, msg string) {
			t.Helper()
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": msg}})
			if err != nil || strings.TrimSpace(res.Content[0].(*mcp.TextContent).Text) != msg {
				t.Fatalf("echo %s: %v %v", msg, err, res)
			}
		}
		a, b := connect(t, base+"/mcp"), connect(t, base+"/mcp")
		defer b.Close()
		echo(a, "a")
		echo(b, "b")
		inits, sessions := upstreamSessions(t, seen.all())
		if inits != 2 || len(sessions) != 2 {
			t.Fatalf("two front sessions: the server saw %d initialize and sessions %v, want 2 and 2", inits, sessions)
		}
		if st := s.Stats(); st.Sessions != 2 {
			t.Errorf("front sessions %d, want 2", st.Sessions)
		}

		a.Close()
		var gone string
		select {
		case gone = <-deleted:
		case <-time.After(10 * time.Second):
			t.Fatal("no DELETE of the server's session 10s after its front session ended")
		}
		if !sessions[gone] {
			t.Errorf("DELETE of session %q, which the server did not hand out (%v)", gone, sessions)
		}
		before := len(seen.all())
		echo(b, "b again")
		after := seen.all()[before:]
		if len(after) == 0 {
			t.Fatal("the other front session's call did not reach the server")
		}
		for _, r := range after {
			if r.session == gone || !sessions[r.session] {
				t.Errorf("the other front session's %s went to session %q (the ended one: %q)", r.mcpMethod, r.session, gone)
			}
		}

		b.Close()
		select {
		case other := <-deleted:
			if other == gone || !sessions[other] {
				t.Errorf("second DELETE of session %q, want the other of %v", other, sessions)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no DELETE of the second server session 10s after its front session ended")
		}
	})

	t.Run("server of the session era, sessionless caller", func(t *testing.T) {
		seen, _, url := sessionEraServer(t)
		_, base := serveLoopback(t, remoteConfig(url))
		for _, msg := range []string{"one", "two"} {
			if got, err := callEcho(context.Background(), base, nil, nil, msg); err != nil || got != msg {
				t.Fatalf("echo %s: %q %v", msg, got, err)
			}
		}
		// One caller: one session, initialized once, for both calls.
		if inits, sessions := upstreamSessions(t, seen.all()); inits != 1 || len(sessions) != 1 {
			t.Errorf("one sessionless caller: the server saw %d initialize and sessions %v, want 1 and 1", inits, sessions)
		}
	})

	// go-sdk's stateful server answers server/discover, naming only the
	// versions with sessions: it is initialized, not spoken to
	// sessionless. Failed before: every call was refused with -32022.
	t.Run("server that discovers only session-era versions, sessionless caller", func(t *testing.T) {
		var seen upstreamLog
		upstream := httptest.NewServer(seen.record(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)))
		t.Cleanup(upstream.Close)
		_, base := serveLoopback(t, remoteConfig(upstream.URL))
		resp, body := do(t, sessionlessRequest(t, base, "tools/list"))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tools"`) {
			t.Errorf("tools/list: %d %s", resp.StatusCode, body)
		}
		if inits, _ := upstreamSessions(t, seen.all()); inits != 1 {
			t.Errorf("the server saw %d initialize, want 1", inits)
		}
	})
}

// refusingAdd is the demo server over Streamable HTTP, refusing calls of
// its tool add with 403.
func refusingAdd() http.Handler {
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mcp-Name") == "add" {
			http.Error(w, "no adding today", http.StatusForbidden)
			return
		}
		sdk.ServeHTTP(w, r)
	})
}

// modernMeta is the _meta of a 2026-07-28 request of the tests.
const modernMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`

// modernRequest is a 2026-07-28 (sessionless) POST to base's /mcp of a
// request with id 1 and params (JSON object members, or ""), with the
// headers SEP-2243 asks for (Mcp-Name when name is not "").
func modernRequest(t *testing.T, base, method, name, params string) *http.Request {
	t.Helper()
	if params != "" {
		params += ","
	}
	req, err := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"`+method+`","params":{`+params+modernMeta+`}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	return req
}

// do sends req and reads its answer whole.
func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

// sessionlessRequest is modernRequest without params.
func sessionlessRequest(t *testing.T, base, method string) *http.Request {
	return modernRequest(t, base, method, "", "")
}

// sessionEraServer is a remote server of MCP up to 2025-11-25: it knows
// neither server/discover nor sessionless requests (it answers them as
// the TypeScript SDK does). The session ids it is asked to DELETE come on
// the channel.
func sessionEraServer(t *testing.T) (*upstreamLog, <-chan string, string) {
	var seen upstreamLog
	deleted := make(chan string, 4)
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	upstream := httptest.NewServer(seen.record(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Mcp-Method") == "server/discover" || r.Header.Get("Mcp-Protocol-Version") == "2026-07-28" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"},"id":null}`)
			return
		}
		sdk.ServeHTTP(w, r)
		if r.Method == http.MethodDelete {
			deleted <- r.Header.Get("Mcp-Session-Id")
		}
	})))
	t.Cleanup(upstream.Close)
	return &seen, deleted, upstream.URL
}

// upstreamSessions counts the initialize requests a session-era server
// was sent and the sessions the rest carried; every request but
// initialize (and a refused server/discover) must carry one.
func upstreamSessions(t *testing.T, reqs []upstreamRequest) (inits int, sessions map[string]bool) {
	t.Helper()
	sessions = map[string]bool{}
	for _, r := range reqs {
		switch {
		case r.mcpMethod == "initialize":
			inits++
			if r.session != "" {
				t.Errorf("initialize came with a session %q", r.session)
			}
		case r.mcpMethod == "server/discover":
		case r.session == "":
			t.Errorf("%s %s came without the server's session", r.method, r.mcpMethod)
		default:
			sessions[r.session] = true
		}
	}
	return inits, sessions
}

// A call to a remote target is counted and logged as one to a child is:
// tailgate_mcp_calls_total and the call durations carry the remote
// target's name (beside a stdio target's), and the access log has one
// line per call naming the caller, the tool, the target, the outcome and,
// for a failed call, why.
func TestRemoteTargetMetricsAndAccessLog(t *testing.T) {
	upstream := httptest.NewServer(refusingAdd())
	t.Cleanup(upstream.Close)
	var logs syncBuffer
	s, base := serveLoopbackOpts(t, strings.Replace(demoConfig, `          - name: demo
            stdio: {cmd: DEMO}`, `          - name: tickets
            mcp: {host: "`+upstream.URL+`"}
          - name: demo
            stdio: {cmd: DEMO}`, 1), Options{
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
		Identify: identifyAs(&tsnode.Identity{NodeName: "laptop.tail1234.ts.net", UserLogin: "alice@example.com"}),
	})
	cs := connect(t, base+"/mcp")
	defer cs.Close()
	awaitNamesLearnt(t, s)
	for _, name := range []string{"tickets_echo", "demo_echo"} {
		if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: map[string]any{"message": "x"}}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "tickets_add", Arguments: map[string]any{"a": 1, "b": 2}}); err == nil {
		t.Fatal("tickets_add: the server refuses it, and the call succeeded")
	}

	// A call is recorded once its answer is written: the client may have
	// read it, and made the next call, first.
	wants := []string{
		`tailgate_mcp_calls_total{method="tools/call",outcome="ok",route="mcp",target="tickets",tool="tickets_echo"} 1`,
		`tailgate_mcp_calls_total{method="tools/call",outcome="error",route="mcp",target="tickets",tool="tickets_add"} 1`,
		`tailgate_mcp_calls_total{method="tools/call",outcome="ok",route="mcp",target="demo",tool="demo_echo"} 1`,
		`tailgate_mcp_call_duration_seconds_count{method="tools/call",route="mcp",target="tickets"} 2`,
		`tailgate_mcp_call_duration_seconds_count{method="tools/call",route="mcp",target="demo"} 1`,
	}
	var body string
	recorded := func() bool {
		_, body = get(t, s.AdminHandler(), "/metrics")
		for _, want := range wants {
			if !strings.Contains(body, want) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(5 * time.Second); !recorded() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s; have:\n%s", want, grepLines(body, "tailgate_mcp_call"))
		}
	}

	type line struct {
		Msg, Method, Tool, Target, Outcome, Err, Peer, User string
	}
	var calls []line
	for _, raw := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l line
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		if l.Msg == "mcp call" && l.Method == "tools/call" {
			calls = append(calls, l)
		}
	}
	for _, want := range []line{
		{Tool: "tickets_echo", Target: "tickets", Outcome: "ok"},
		{Tool: "demo_echo", Target: "demo", Outcome: "ok"},
		{Tool: "tickets_add", Target: "tickets", Outcome: "error", Err: `target "tickets": ` + upstream.URL + `: HTTP 403: no adding today`},
	} {
		want.Msg, want.Method, want.Peer, want.User = "mcp call", "tools/call", "laptop.tail1234.ts.net", "alice@example.com"
		n := 0
		for _, l := range calls {
			if l.Tool == want.Tool {
				n++
				if l != want {
					t.Errorf("access log line\n got %+v\nwant %+v", l, want)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d access log lines for %s, want 1: %+v", n, want.Tool, calls)
		}
	}
}
