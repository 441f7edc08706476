package gateway

import (
	"encoding/json"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// The gateway's trace context goes into a request's _meta as bytes: added
// where there is none (params too), put first where there is one, every
// other member kept as it came, and a member a case-insensitive decoder
// would read as a trace key ("TraceParent") dropped, so that no decoder
// reads two. What comes out is a message every check of tailgate's still
// takes.
func TestWithTraceMeta(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := map[string]string{"traceparent": tp, "tracestate": "congo=t61rcWkgMzE", "baggage": "user=alice"}
	meta := `{"traceparent":"` + tp + `","tracestate":"congo=t61rcWkgMzE","baggage":"user=alice"`
	for _, tc := range []struct {
		name, in, want string
		set            map[string]string
	}{
		{"no params",
			`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
			`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":` + meta + `}}}`, ctx},
		{"no params, spaces after",
			`{"jsonrpc":"2.0","id":1,"method":"ping" }  `,
			`{"jsonrpc":"2.0","id":1,"method":"ping" ,"params":{"_meta":` + meta + `}}}  `, ctx},
		{"empty params",
			`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{ }}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":` + meta + `} }}`, ctx},
		{"params without _meta",
			`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`,
			`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":` + meta + `},"name":"echo","arguments":{"message":"hi"}}}`, ctx},
		{"_meta kept, context first",
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":7, "io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","_meta":` + meta + `,"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, ctx},
		{"client's context replaced",
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"traceparent":"00-11111111111111111111111111111111-2222222222222222-01","x":{"y":[1,2]},"baggage":"old=1"},"name":"echo"}}`,
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":` + meta + `,"x":{"y":[1,2]}},"name":"echo"}}`, ctx},
		{"keys that fold to the context's dropped",
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"TraceParent":"x","trace\u0053tate":"y","BAGGAGE":"z","k":"v"},"name":"echo"}}`,
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":` + meta + `,"k":"v"},"name":"echo"}}`, ctx},
		{"only a traceparent to write",
			`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":{"tracestate":"old=1"}}}`,
			`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":{"traceparent":"` + tp + `"}}}`, map[string]string{"traceparent": tp}},
		{"_meta not an object",
			`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":null}}`,
			`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":` + meta + `}}}`, ctx},
		{"params not an object", `{"jsonrpc":"2.0","id":3,"method":"x","params":[1]}`, "", ctx},
		{"nothing to write", `{"jsonrpc":"2.0","id":3,"method":"ping"}`, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := jsonrpc.ParseClientMessage([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got := withTraceMeta(m, tc.set)
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if got == nil {
				return
			}
			out, err := jsonrpc.ParseClientMessage(got)
			if err != nil {
				t.Fatalf("tailgate refuses what it wrote: %v", err)
			}
			if string(out.Bytes(out.ID)) != string(m.Bytes(m.ID)) || out.MethodName() != m.MethodName() {
				t.Errorf("id or method changed: %s", got)
			}
			var decoded struct {
				Params struct {
					Meta map[string]any `json:"_meta"`
				} `json:"params"`
			}
			if err := json.Unmarshal(got, &decoded); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.set {
				if decoded.Params.Meta[k] != v {
					t.Errorf("_meta.%s = %v, want %q", k, decoded.Params.Meta[k], v)
				}
			}
		})
	}
}
