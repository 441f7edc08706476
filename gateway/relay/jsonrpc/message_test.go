package jsonrpc_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

type parseCase struct {
	name string
	raw  string
	// err, if set, is a substring of the error ParseMessage must return
	// ("*": any error).
	err string
	// kind is "request", "notification" or "response".
	kind                       string
	id, method, params, result string // raw spans ("" absent), method unquoted
	errorField                 string
}

var parseCases = []parseCase{
	{name: "request", raw: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`,
		kind: "request", id: `1`, method: "tools/list", params: `{}`},
	{name: "request with spaces and string id", raw: " \t{ \"jsonrpc\" : \"2.0\" ,\r\n \"id\" : \"abc\" , \"method\" : \"x\" } \n",
		kind: "request", id: `"abc"`, method: "x"},
	{name: "notification", raw: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5}}`,
		kind: "notification", method: "notifications/progress", params: `{"progressToken":1,"progress":0.5}`},
	{name: "result response", raw: `{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}`,
		kind: "response", id: `7`, result: `{"tools":[]}`},
	{name: "error response", raw: `{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"no"}}`,
		kind: "response", id: `"x"`, errorField: `{"code":-32601,"message":"no"}`},
	{name: "error response to an unreadable request", raw: `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`,
		kind: "response", id: `null`, errorField: `{"code":-32700,"message":"parse error"}`},
	{name: "unknown fields kept out of the way", raw: `{"x":{"id":5,"method":"no"},"jsonrpc":"2.0","y":[{"params":1}],"id":2,"method":"m","z":null}`,
		kind: "request", id: `2`, method: "m"},
	{name: "strings with escapes and braces", raw: `{"jsonrpc":"2.0","id":"a\"}b","method":"m\\\"}{","params":{"s":"}{][,:\"\\","t":"\u00e9\/"}}`,
		kind: "request", id: `"a\"}b"`, method: `m\"}{`, params: `{"s":"}{][,:\"\\","t":"\u00e9\/"}`},
	{name: "escaped method", raw: `{"jsonrpc":"2.0","id":1,"method":"tools\/call"}`,
		kind: "request", id: `1`, method: "tools/call"},
	{name: "negative id", raw: `{"id":-1,"method":"m"}`, kind: "request", id: `-1`, method: "m"},
	{name: "zero id", raw: `{"id":0,"method":"m"}`, kind: "request", id: `0`, method: "m"},
	{name: "big id", raw: `{"id":12345678901234567890,"method":"m"}`, kind: "request", id: `12345678901234567890`, method: "m"},
	{name: "fractional id", raw: `{"id":1.5e3,"method":"m"}`, kind: "request", id: `1.5e3`, method: "m"},
	{name: "empty string id", raw: `{"id":"","method":"m"}`, kind: "request", id: `""`, method: "m"},
	{name: "array params", raw: `{"id":1,"method":"m","params":[1,[2,[3]],{"a":[]}]}`, kind: "request", id: `1`, method: "m", params: `[1,[2,[3]],{"a":[]}]`},
	{name: "literals", raw: `{"id":1,"method":"m","params":{"t":true,"f":false,"n":null}}`, kind: "request", id: `1`, method: "m", params: `{"t":true,"f":false,"n":null}`},
	{name: "nested 900 deep", raw: `{"id":1,"method":"m","params":` + strings.Repeat("[", 900) + strings.Repeat("]", 900) + `}`,
		kind: "request", id: `1`, method: "m", params: strings.Repeat("[", 900) + strings.Repeat("]", 900)},

	{name: "batch", raw: `[{"jsonrpc":"2.0","id":1,"method":"x"}]`, err: "batch"},
	{name: "batch after spaces", raw: ` [ ]`, err: "batch"},
	{name: "nested too deeply", raw: `{"id":1,"method":"m","params":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}`, err: "deeply"},
	{name: "objects nested too deeply", raw: `{"id":1,"method":"m","params":` + strings.Repeat(`{"a":`, 2000) + `1` + strings.Repeat("}", 2000) + `}`, err: "deeply"},
	{name: "hostile depth", raw: `{"id":1,"method":"m","params":` + strings.Repeat("[", 1<<20), err: "*"},
	{name: "empty", raw: ``, err: "*"},
	{name: "spaces", raw: "  \n", err: "*"},
	{name: "null", raw: `null`, err: "*"},
	{name: "string", raw: `"id"`, err: "*"},
	{name: "unterminated object", raw: `{"id":1,"method":"m"`, err: "*"},
	{name: "trailing comma", raw: `{"id":1,"method":"m",}`, err: "*"},
	{name: "missing comma", raw: `{"id":1 "method":"m"}`, err: "*"},
	{name: "missing colon", raw: `{"id" 1,"method":"m"}`, err: "*"},
	{name: "trailing garbage", raw: `{"id":1,"method":"m"}x`, err: "*"},
	{name: "two objects", raw: `{"id":1,"method":"m"}{"id":2,"method":"m"}`, err: "*"},
	{name: "unquoted value", raw: `{"id":1,"method":x}`, err: "*"},
	{name: "unquoted key", raw: `{id:1,"method":"m"}`, err: "*"},
	{name: "bad literal", raw: `{"id":1,"method":"m","params":{"a":tru}}`, err: "*"},
	{name: "unterminated string", raw: `{"id":1,"method":"m`, err: "*"},
	{name: "string ending in a backslash", raw: `{"id":1,"method":"m\"}`, err: "*"},
	{name: "unclosed nested array", raw: `{"id":1,"method":"m","params":[1,2}`, err: "*"},
	{name: "mismatched brackets", raw: `{"id":1,"method":"m","params":{"a":[}]}`, err: "*"},
	{name: "method not a string", raw: `{"id":1,"method":1}`, err: "method"},
	{name: "id true", raw: `{"id":true,"method":"m"}`, err: "id"},
	{name: "id object", raw: `{"id":{},"method":"m"}`, err: "id"},
	{name: "id array", raw: `{"id":[1],"method":"m"}`, err: "id"},
	{name: "request id null", raw: `{"id":null,"method":"m"}`, err: "null"},
	{name: "empty object", raw: `{}`, err: "neither"},
	{name: "only jsonrpc", raw: `{"jsonrpc":"2.0","params":{}}`, err: "neither"},
}

func TestParseMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := jsonrpc.ParseMessage([]byte(tc.raw))
			if tc.err != "" {
				if err == nil {
					t.Fatalf("accepted: %+v", m)
				}
				if tc.err != "*" && !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %q does not mention %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			kind := map[[3]bool]string{{true, false, false}: "request", {false, true, false}: "notification", {false, false, true}: "response"}[[3]bool{m.IsRequest(), m.IsNotification(), m.IsResponse()}]
			if kind != tc.kind {
				t.Errorf("kind %q, want %q", kind, tc.kind)
			}
			span := func(s jsonrpc.Span) string {
				if !s.Has() {
					return ""
				}
				return string(m.Bytes(s))
			}
			for _, f := range []struct{ name, got, want string }{
				{"id", span(m.ID), tc.id},
				{"method", m.MethodName(), tc.method},
				{"params", span(m.Params), tc.params},
				{"result", span(m.Result), tc.result},
				{"error", span(m.Error), tc.errorField},
			} {
				if f.got != f.want {
					t.Errorf("%s = %s, want %s", f.name, f.got, f.want)
				}
			}
			if !bytes.Equal(m.Raw, []byte(tc.raw)) {
				t.Error("Raw is not the input")
			}
		})
	}
}

// ParseMessage promises that a message it accepts is a well-formed JSON
// object: a child must never be sent what it cannot read (it would answer
// with a parse error under id null, which matches no request, and the
// client would wait for its request timeout).
func TestParseMessageRejectsMalformedValues(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, raw string }{
		{"lone minus as id", `{"id":-,"method":"m"}`},
		{"double minus id", `{"id":--1,"method":"m"}`},
		{"minus inside number", `{"id":1,"method":"m","params":{"n":1-2}}`},
		{"leading zero", `{"id":1,"method":"m","params":{"n":01}}`},
		{"dot without digits", `{"id":1,"method":"m","params":{"n":1.}}`},
		{"exponent without digits", `{"id":1,"method":"m","params":{"n":1e}}`},
		{"two dots", `{"id":1,"method":"m","params":{"n":1.2.3}}`},
		{"plus sign", `{"id":1,"method":"m","params":[-+1]}`},
		{"tab inside a string", "{\"id\":1,\"method\":\"m\",\"params\":{\"s\":\"a\tb\"}}"},
		{"newline inside a string", "{\"id\":1,\"method\":\"m\",\"params\":{\"s\":\"a\nb\"}}"},
		{"control character in a key", "{\"id\":1,\"method\":\"m\",\"params\":{\"a\x01\":1}}"},
		{"unknown escape", `{"id":1,"method":"m","params":{"s":"\x41"}}`},
		{"short unicode escape", `{"id":1,"method":"m","params":{"s":"\u12"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if json.Valid([]byte(tc.raw)) {
				t.Fatalf("test case is valid JSON: %s", tc.raw)
			}
			if m, err := jsonrpc.ParseMessage([]byte(tc.raw)); err == nil {
				t.Errorf("accepted malformed JSON %q (method %q)", tc.raw, m.MethodName())
			}
		})
	}
}

// What tailgate reads of a message (the envelope, and params' name, uri
// and _meta that routing, policy and progress use) must be what a child's
// JSON decoder reads: encoding/json and JSON.parse unescape keys and let
// the last of duplicate keys win. A message on which they could disagree
// must be refused.
func TestParseMessageAgreesWithDecoder(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, raw string }{
		{"plain", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"progressToken":"t"}}}`},
		{"duplicate top-level id", `{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"a"}}`},
		{"duplicate top-level method", `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"a"}}`},
		{"duplicate params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`},
		{"duplicate name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`},
		{"duplicate _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"progressToken":"t"},"_meta":{"progressToken":"u"}}}`},
		{"escaped id key", `{"jsonrpc":"2.0","\u0069d":1,"method":"tools/call","params":{"name":"a"}}`},
		{"escaped method key", `{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools/call","params":{"name":"a"}}`},
		{"escaped params key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","p\u0061rams":{"name":"a"}}`},
		{"escaped name key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"a"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := jsonrpc.ParseMessage([]byte(tc.raw))
			if err != nil {
				return // refusing an ambiguous message is fine
			}
			var d struct {
				ID     json.RawMessage `json:"-"`
				Method string
				Params struct {
					Name string
					Meta struct {
						ProgressToken json.RawMessage
					}
				}
			}
			var top map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tc.raw), &top); err != nil {
				t.Fatal(err)
			}
			d.ID = top["id"]
			json.Unmarshal(top["method"], &d.Method)
			var params map[string]json.RawMessage
			json.Unmarshal(top["params"], &params)
			json.Unmarshal(params["name"], &d.Params.Name)
			var meta map[string]json.RawMessage
			json.Unmarshal(params["_meta"], &meta)
			d.Params.Meta.ProgressToken = meta["progressToken"]

			raw := func(s jsonrpc.Span) string {
				if !s.Has() {
					return ""
				}
				return string(m.Bytes(s))
			}
			if got := raw(m.ID); got != string(d.ID) {
				t.Errorf("id: tailgate reads %q, a decoder %q", got, d.ID)
			}
			if got := m.MethodName(); got != d.Method {
				t.Errorf("method: tailgate reads %q, a decoder %q", got, d.Method)
			}
			if got := m.String(m.Path("params", "name")); got != d.Params.Name {
				t.Errorf("params.name: tailgate reads %q, a decoder %q", got, d.Params.Name)
			}
			if got := raw(m.Path("params", "_meta", "progressToken")); got != string(d.Params.Meta.ProgressToken) {
				t.Errorf("params._meta.progressToken: tailgate reads %q, a decoder %q", got, d.Params.Meta.ProgressToken)
			}
			// m.Params and Path("params") must be the same object.
			if m.Params != m.Path("params") {
				t.Errorf("m.Params %v is not Path(params) %v", m.Params, m.Path("params"))
			}
		})
	}
}

func TestPathFieldString(t *testing.T) {
	t.Parallel()
	raw := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":"name","y":{"name":"inner"},"arr":[{"name":"in array"}],` +
		`"name" : "outer","_meta":{"progressToken":"tok"},"esc":"a\"b\\c\u00e9\n","num":12,"obj":{}}}`
	m, err := jsonrpc.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path []string
		raw  string // "" absent
		str  string
	}{
		{[]string{"params", "name"}, `"outer"`, "outer"},
		{[]string{"params", "y", "name"}, `"inner"`, "inner"},
		{[]string{"params", "_meta", "progressToken"}, `"tok"`, "tok"},
		{[]string{"params", "esc"}, `"a\"b\\c\u00e9\n"`, "a\"b\\c\u00e9\n"},
		{[]string{"params", "num"}, `12`, ""},
		{[]string{"params", "obj"}, `{}`, ""},
		{[]string{"method"}, `"tools/call"`, "tools/call"},
		{[]string{"params", "missing"}, "", ""},
		{[]string{"params", "arr", "name"}, "", ""}, // an array has no fields
		{[]string{"params", "x", "name"}, "", ""},   // nor has a string
		{[]string{"params", "name", "x"}, "", ""},
		{[]string{"nope", "name"}, "", ""},
		{[]string{"Params"}, "", ""}, // keys are case-sensitive
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.path, "."), func(t *testing.T) {
			s := m.Path(tc.path...)
			if !s.Has() {
				if tc.raw != "" {
					t.Errorf("absent, want %s", tc.raw)
				}
				if s != (jsonrpc.Span{}) {
					t.Errorf("an absent field's span is %v, not zero", s)
				}
				return
			}
			if got := string(m.Bytes(s)); got != tc.raw {
				t.Errorf("= %s, want %s", got, tc.raw)
			}
			if got := m.String(s); got != tc.str {
				t.Errorf("String = %q, want %q", got, tc.str)
			}
		})
	}
	if s := m.Path(); s != (jsonrpc.Span{Start: 0, End: len(raw)}) {
		t.Errorf("Path() = %v", s)
	}
	if s := m.Field(m.Params, "name"); string(m.Bytes(s)) != `"outer"` {
		t.Errorf("Field(params, name) = %v", s)
	}
	if s := m.Field(jsonrpc.Span{}, "name"); s.Has() {
		t.Errorf("Field of an absent span = %v", s)
	}
	if s := m.Field(m.ID, "name"); s.Has() {
		t.Errorf("Field of a number = %v", s)
	}
	if got := m.String(jsonrpc.Span{}); got != "" {
		t.Errorf("String of an absent span = %q", got)
	}
}

func TestReplace(t *testing.T) {
	t.Parallel()
	raw := `{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"a_tool","arguments":{"x":"y"}}}`
	m, err := jsonrpc.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	name := m.Path("params", "name")
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"id", m.Replace(m.ID, []byte(`"front-7"`)), `{"jsonrpc":"2.0","id":"front-7","method":"tools/call","params":{"name":"a_tool","arguments":{"x":"y"}}}`},
		{"longer id", m.Replace(m.ID, []byte(`12345678901234567890`)), `{"jsonrpc":"2.0","id":12345678901234567890,"method":"tools/call","params":{"name":"a_tool","arguments":{"x":"y"}}}`},
		{"name", m.Replace(name, []byte(`"tool"`)), `{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"tool","arguments":{"x":"y"}}}`},
		{"id and name", m.Replace2(m.ID, []byte(`3`), name, []byte(`"t"`)), `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t","arguments":{"x":"y"}}}`},
		{"insert", m.Replace(jsonrpc.Span{Start: m.Params.Start + 1, End: m.Params.Start + 1}, []byte(`"logger":"x",`)), `{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"logger":"x","name":"a_tool","arguments":{"x":"y"}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", tc.got, tc.want)
			}
			if _, err := jsonrpc.ParseMessage(tc.got); err != nil {
				t.Errorf("result does not parse: %v", err)
			}
		})
	}
	if string(m.Raw) != raw {
		t.Errorf("Replace changed the message: %s", m.Raw)
	}
}

func TestErrorAndResultMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, got, want string
	}{
		{"error", string(jsonrpc.ErrorMessage([]byte(`"a"`), jsonrpc.CodeInvalidParams, `bad "thing"`+"\n")),
			`{"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"bad \"thing\"\n"}}`},
		{"error without id", string(jsonrpc.ErrorMessage(nil, jsonrpc.CodeParseError, "x")),
			`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`},
		{"result", string(jsonrpc.ResultMessage([]byte(`7`), []byte(`{"x":[1]}`))),
			`{"jsonrpc":"2.0","id":7,"result":{"x":[1]}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", tc.got, tc.want)
			}
			m, err := jsonrpc.ParseMessage([]byte(tc.got))
			if err != nil || !m.IsResponse() {
				t.Errorf("not a response: %v", err)
			}
		})
	}
	codes := map[int]int{
		jsonrpc.CodeParseError: -32700, jsonrpc.CodeInvalidRequest: -32600, jsonrpc.CodeMethodNotFound: -32601,
		jsonrpc.CodeInvalidParams: -32602, jsonrpc.CodeInternalError: -32603, jsonrpc.CodeRequestCancelled: -32800,
		jsonrpc.CodeRequestTimeout: -32001,
	}
	for got, want := range codes {
		if got != want {
			t.Errorf("code %d, want %d", got, want)
		}
	}
}

// FuzzParseMessage: ParseMessage never panics; what it accepts is valid
// JSON, with spans that are valid JSON values inside the message, exactly
// one kind, and an id that can be swapped.
func FuzzParseMessage(f *testing.F) {
	for _, tc := range parseCases {
		if len(tc.raw) < 10000 {
			f.Add([]byte(tc.raw))
		}
	}
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"t"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"reason":"r"}}`,
		`{"jsonrpc":"2.0","id":"srv-1","result":{"roots":[{"uri":"file:///"}]}}`,
		`{"id":1,"method":"m","params":"\ud83d\ude00"}`,
		`{"id":1e400,"method":"m"}`,
		`{"id":1,"method":"m","params":{"a":[[[[{}]]]]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := jsonrpc.ParseMessage(raw)
		if err != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
		kinds := 0
		for _, k := range []bool{m.IsRequest(), m.IsNotification(), m.IsResponse()} {
			if k {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("%q is %d kinds", raw, kinds)
		}
		for _, s := range []jsonrpc.Span{m.ID, m.Method, m.Params, m.Result, m.Error, m.Path("params", "name"), m.Path("params", "_meta", "progressToken")} {
			if !s.Has() {
				continue
			}
			if s.Start < 0 || s.End > len(raw) || !json.Valid(m.Bytes(s)) {
				t.Fatalf("span %v of %q is not a JSON value", s, raw)
			}
		}
		_ = m.MethodName()
		if m.ID.Has() {
			m2, err := jsonrpc.ParseMessage(m.Replace(m.ID, []byte(`12`)))
			if err != nil || string(m2.Bytes(m2.ID)) != "12" || m2.MethodName() != m.MethodName() {
				t.Fatalf("id of %q not replaceable: %v", raw, err)
			}
		}
	})
}

// ParseClientMessage's limits, at their edges, and the reasons it gives
// (the gateway's metric label). The hostile corpus (TestDecodersAgree)
// has the rest.
func TestParseClientMessage(t *testing.T) {
	t.Parallel()
	nest := func(levels int) string {
		// The message and params are 2 levels; arguments and what is in
		// it the rest.
		n := levels - 3
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}}}`
	}
	for _, tc := range []struct {
		name, raw, reason string // reason "": accepted
	}{
		{"64 levels", nest(jsonrpc.ClientMaxDepth), ""},
		{"65 levels", nest(jsonrpc.ClientMaxDepth + 1), jsonrpc.ReasonDepth},
		{"id beyond 2^53 (tailgate replaces ids)", `{"id":12345678901234567890,"method":"m"}`, ""},
		{"progressToken 2^53-1", `{"id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":9007199254740991}}}`, ""},
		{"progressToken 2^53", `{"id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":9007199254740992}}}`, jsonrpc.ReasonToken},
		{"progressToken -0", `{"id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":-0}}}`, jsonrpc.ReasonToken},
		{"progressToken 1.0", `{"id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1.0}}}`, jsonrpc.ReasonToken},
		{"Name beside name", `{"id":1,"method":"tools/call","params":{"name":"echo","Name":"x"}}`, jsonrpc.ReasonAmbiguous},
		{"a key with NUL", `{"id":1,"method":"tools/call","params":{"name":"echo","a\u0000":1}}`, jsonrpc.ReasonKey},
		{"a lone surrogate in name", `{"id":1,"method":"tools/call","params":{"name":"echo\udfff"}}`, jsonrpc.ReasonEncoding},
		{"not UTF-8", "{\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"a\":\"\xff\"}}", jsonrpc.ReasonEncoding},
		{"many keys, two alike", `{"id":1,"method":"tools/call","params":{"name":"echo","arguments":{` + manyKeys(100) + `,"K7":1}}}`, jsonrpc.ReasonAmbiguous},
		{"many keys", `{"id":1,"method":"tools/call","params":{"name":"echo","arguments":{` + manyKeys(100) + `}}}`, ""},
		{"malformed", `{"id":1,`, jsonrpc.ReasonMalformed},
		{"batch", `[]`, jsonrpc.ReasonBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jsonrpc.ParseClientMessage([]byte(tc.raw))
			switch {
			case tc.reason == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.reason != "" && err == nil:
				t.Errorf("accepted, want refused for %s", tc.reason)
			case err != nil && jsonrpc.ParseReason(err) != tc.reason:
				t.Errorf("reason %s (%v), want %s", jsonrpc.ParseReason(err), err, tc.reason)
			}
		})
	}
	// What a child sends is read with ParseMessage: depth as before, keys
	// as strictly.
	for _, raw := range []string{`{"id":1.5,"result":{}}`, `{"id":1,"result":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`} {
		if _, err := jsonrpc.ParseMessage([]byte(raw)); err != nil {
			t.Errorf("ParseMessage(%.40s…): %v", raw, err)
		}
	}
	if _, err := jsonrpc.ParseMessage([]byte(`{"id":1,"method":"sampling/createMessage","Method":"x"}`)); jsonrpc.ParseReason(err) != jsonrpc.ReasonAmbiguous {
		t.Errorf("ParseMessage of Method beside method: %v", err)
	}
}

func manyKeys(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = `"k` + strconv.Itoa(i) + `":1`
	}
	return strings.Join(keys, ",")
}

// A message that starts with whitespace has its params read like any
// other. Failed before: Path found nothing in it, so a tools/call was
// judged by an empty tool name while every decoder read the name.
func TestPathAfterLeadingSpace(t *testing.T) {
	t.Parallel()
	m, err := jsonrpc.ParseClientMessage([]byte(" \r\n\t{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"env\"}}"))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := m.NameSpan(); m.String(s) != "env" {
		t.Errorf("NameSpan reads %q, want env", m.String(s))
	}
}

// BenchmarkParseClientMessage is the reader's cost on the relay's hot
// path: a tools/call as clients send it.
func BenchmarkParseClientMessage(b *testing.B) {
	raw := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello","count":3},"_meta":{"progressToken":"p-42"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		m, err := jsonrpc.ParseClientMessage(raw)
		if err != nil {
			b.Fatal(err)
		}
		if s, _ := m.NameSpan(); !s.Has() {
			b.Fatal("no name")
		}
	}
}
