package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
)

// versionedRequest is one POST a remote target's server was sent: its
// JSON-RPC method, its Mcp-Protocol-Version header and the version its
// body names (initialize's params.protocolVersion, a 2026-07-28 request's
// _meta).
type versionedRequest struct {
	method, header, body string
}

// refusingFirstVersion is next behind a server that refuses the first
// request it gets, whatever it is, with -32022 naming supported as the
// versions it speaks (as the conformance suite's request-metadata server
// does), recording each POST.
func refusingFirstVersion(supported []string, next http.Handler) (http.Handler, func() []versionedRequest) {
	var mu sync.Mutex
	var seen []versionedRequest
	data, _ := json.Marshal(map[string]any{"supported": supported, "requested": "2026-07-28"})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				next.ServeHTTP(w, r)
				return
			}
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var m struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
				Params struct {
					ProtocolVersion string                     `json:"protocolVersion"`
					Meta            map[string]json.RawMessage `json:"_meta"`
				} `json:"params"`
			}
			json.Unmarshal(body, &m)
			v := m.Params.ProtocolVersion
			if mv := m.Params.Meta["io.modelcontextprotocol/protocolVersion"]; mv != nil {
				json.Unmarshal(mv, &v)
			}
			mu.Lock()
			first := len(seen) == 0
			seen = append(seen, versionedRequest{m.Method, r.Header.Get("Mcp-Protocol-Version"), v})
			mu.Unlock()
			if first {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"error":{"code":-32022,"message":"Unsupported protocol version","data":`+string(data)+`}}`)
				return
			}
			next.ServeHTTP(w, r)
		}), func() []versionedRequest {
			mu.Lock()
			defer mu.Unlock()
			return append([]versionedRequest(nil), seen...)
		}
}

// A server that refuses tailgate's server/discover with -32022 (an
// unsupported version) and names a 2026-07-28 version among those it
// speaks is asked server/discover again in that version, and spoken to
// without a session, not initialized: every request in that version,
// header and _meta alike (SEP-2575, the conformance suite's client
// scenario request-metadata). Failed before: tailgate initialized it, an
// initialize without the header.
func TestRemoteTargetRetriesDiscoverInListedVersion(t *testing.T) {
	h, seen := refusingFirstVersion([]string{"2026-07-28"}, bothGenerations())
	upstream := httptest.NewServer(h)
	t.Cleanup(upstream.Close)
	_, base := serveLoopback(t, remoteConfig(upstream.URL))
	if got, err := callEcho(context.Background(), base, nil, nil, "again"); err != nil || got != "again" {
		t.Fatalf("echo: %q %v", got, err)
	}
	reqs := seen()
	if len(reqs) < 3 || reqs[0].method != "server/discover" || reqs[1].method != "server/discover" {
		t.Fatalf("the server was sent %+v: want server/discover, refused, then again", reqs)
	}
	for _, r := range reqs {
		if r.method == "initialize" || r.method == "notifications/initialized" {
			t.Errorf("the server was sent %s: want it spoken to without a session", r.method)
		}
		if r.header != "2026-07-28" || r.body != "2026-07-28" {
			t.Errorf("%s came with Mcp-Protocol-Version %q and _meta version %q, want 2026-07-28 both", r.method, r.header, r.body)
		}
	}
}

// A server that refuses server/discover with -32022 naming only versions
// with sessions is initialized in the newest of them, and as the version
// is then known, the initialize carries it in Mcp-Protocol-Version as
// every request after it does. Failed before: the initialize offered
// tailgate's latest (2025-11-25), without the header.
func TestRemoteTargetInitializesInListedVersion(t *testing.T) {
	sessionEra := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	h, seen := refusingFirstVersion([]string{"2024-11-05", "2025-06-18"}, sessionEra)
	upstream := httptest.NewServer(h)
	t.Cleanup(upstream.Close)
	_, base := serveLoopback(t, remoteConfig(upstream.URL))
	if got, err := callEcho(context.Background(), base, nil, nil, "older"); err != nil || got != "older" {
		t.Fatalf("echo: %q %v", got, err)
	}
	reqs := seen()
	var methods []string
	for _, r := range reqs[1:] {
		methods = append(methods, r.method)
		if r.header != "2025-06-18" {
			t.Errorf("%s came with Mcp-Protocol-Version %q, want 2025-06-18", r.method, r.header)
		}
		if r.method == "initialize" && r.body != "2025-06-18" {
			t.Errorf("initialize offered %q, want 2025-06-18", r.body)
		}
	}
	if want := "initialize notifications/initialized"; !strings.HasPrefix(strings.Join(methods, " "), want) {
		t.Errorf("after the refusal the server was sent %v, want %s first", methods, want)
	}
}
