package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tailgate-dev/tailgate/mcpstdio/demoserver"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// A sessionless caller's call to an older child that asks for roots is
// parked, and its retry resumes it (SEP-2322). The retry is judged as what
// it resumes: once the node lost the tag that let it call roots, a retry
// that names echo (which it may still call) does not resume the parked
// roots call, nor does one that names roots. Failed before: the retry
// naming echo was judged as echo and resumed roots, whose result came
// back.
func TestRetryJudgedAsWhatItResumes(t *testing.T) {
	// Each case is a node of its own (its own children, so that a call
	// left parked by one does not keep the next from parking).
	node := func(id string) (tagged, untagged *tsnode.Identity) {
		return &tsnode.Identity{NodeID: id, NodeName: id + ".tail1234.ts.net", UserLogin: "tagged-devices", Tags: []string{"tag:ci"}},
			&tsnode.Identity{NodeID: id, NodeName: id + ".tail1234.ts.net", UserLogin: "alice@example.com"}
	}
	var now atomic.Pointer[tsnode.Identity]
	identify := IdentifyTailnet(func(context.Context, netip.AddrPort) (*tsnode.Identity, error) { return now.Load(), nil })
	cfg := strings.Replace(demoConfig, "      backends:", "      policies:\n        mcpAuthorization:\n          rules: ['mcp.tool.name != \"roots\" || \"tag:ci\" in source.tailscale.node.tags']\n      backends:", 1)
	cfg = strings.Replace(cfg, "stdio: {cmd: DEMO}", "stdio: {cmd: DEMO, env: {"+demoserver.VersionsEnv+": 2025-11-25}}", 1)
	_, base := serveLoopbackOpts(t, cfg, Options{Identify: identify})
	// A connection per request: each is identified anew, as after a
	// netmap change.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	type result struct {
		ResultType    string                     `json:"resultType"`
		RequestState  string                     `json:"requestState"`
		InputRequests map[string]json.RawMessage `json:"inputRequests"`
		Content       []struct{ Text string }    `json:"content"`
	}
	call := func(t *testing.T, name, params string) (*result, string) {
		t.Helper()
		resp, err := client.Do(modernRequest(t, base, "tools/call", name, `"name":"`+name+`"`+params))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m struct {
			Result *result
			Error  *struct{ Message string }
		}
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("tools/call %s: HTTP %d %s: %v", name, resp.StatusCode, body, err)
		}
		if m.Error != nil {
			return nil, m.Error.Message
		}
		return m.Result, ""
	}
	// park calls roots as the tagged node, and returns the retry's params
	// that answer the child's roots/list.
	park := func(t *testing.T, tagged *tsnode.Identity) string {
		t.Helper()
		now.Store(tagged)
		res, errMsg := call(t, "roots", "")
		if res == nil || res.ResultType != "input_required" || len(res.InputRequests) != 1 {
			t.Fatalf("roots: %+v %s, want input_required with one input request", res, errMsg)
		}
		var key string
		for k := range res.InputRequests {
			key = k
		}
		return `,"requestState":"` + res.RequestState + `","inputResponses":{"` + key + `":{"roots":[{"uri":"file:///secret/project"}]}}`
	}

	// While the node may call roots, its retry resumes the call.
	tagged, _ := node("n0")
	if res, errMsg := call(t, "roots", park(t, tagged)); res == nil || len(res.Content) == 0 || res.Content[0].Text != "file:///secret/project" {
		t.Fatalf("retry while allowed: %+v %s, want the roots the child got", res, errMsg)
	}

	for i, tc := range []struct{ name, params string }{
		{"roots", ""},
		{"echo", `,"arguments":{"message":"hi"}`},
	} {
		t.Run("retry naming "+tc.name, func(t *testing.T) {
			tagged, untagged := node("n" + strconv.Itoa(i+1))
			retry := park(t, tagged)
			now.Store(untagged) // the tag is taken away
			res, errMsg := call(t, tc.name, tc.params+retry)
			if res != nil {
				t.Errorf("retry naming %s after roots was revoked answered %+v, want it refused", tc.name, res)
			}
			if errMsg == "" {
				t.Errorf("retry naming %s: no error", tc.name)
			}
		})
	}
}
