package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The client that reaches a target's authorization servers goes only
// where the target's own host is: a hosted target's servers cannot steer
// tailgate to this host's loopback (or the tailnet, or cloud metadata),
// and no redirect leaves its host. Failed before: any address, any
// redirect.
func TestOAuthClientStaysWhereItsTargetIs(t *testing.T) {
	s := &Server{}
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/away" {
			http.Redirect(w, r, strings.Replace("http://"+r.Host, "127.0.0.1", "localhost", 1)+"/secret", http.StatusFound)
			return
		}
		w.Write([]byte("internal"))
	}))
	defer inside.Close()

	hosted := s.oauthClient("https://mcp.hosted.invalid/mcp", 0)
	if _, err := hosted.Get(inside.URL); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("a hosted target's authorization reached this host's loopback: %v", err)
	}
	local := s.oauthClient(inside.URL+"/mcp", 0)
	resp, err := local.Get(inside.URL)
	if err != nil {
		t.Fatalf("a loopback target's own server: %v", err)
	}
	resp.Body.Close()
	if _, err := local.Get(inside.URL + "/away"); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("a redirect to another host was followed: %v", err)
	}
}
