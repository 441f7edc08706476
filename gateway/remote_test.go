package gateway

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
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
		got := (&Server{}).remoteTarget("t", &RemoteTarget{Host: tc.host, Tailnet: tc.tailnet})
		if got.Remote.Tailnet != tc.want {
			t.Errorf("%s (tailnet %v): dialled through the tailnet %v, want %v", tc.host, tc.tailnet, got.Remote.Tailnet, tc.want)
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
