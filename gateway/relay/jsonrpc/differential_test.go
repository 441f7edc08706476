package jsonrpc_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	m3 "github.com/mark3labs/mcp-go/mcp"
	sdkjsonrpc "github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdkmcp "github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// reading is what one decoder reads of a message: the fields tailgate
// judges. Each is "" when absent or empty, "s:" and the code points of a
// string (an unpaired surrogate stays itself where the decoder keeps it),
// "n:" and a number, or "t:" and a JSON type.
type reading struct {
	Parsed   bool   `json:"parsed"`
	Err      string `json:"err"`
	Method   string `json:"method"`
	Name     string `json:"name"`
	URI      string `json:"uri"`
	TaskID   string `json:"taskId"`
	MetaKeys string `json:"metaKeys"`
	Token    string `json:"token"`
}

func (r reading) fields() []string {
	return []string{r.Method, r.Name, r.URI, r.TaskID, r.MetaKeys, r.Token}
}

// judged is the reading of what tailgate judges of a message of the
// method it read: the name of a tool call or prompt, the URI of a read,
// the task id of the tasks methods (SEP-2243's Mcp-Name); _meta always.
func (r reading) judged(method string) reading {
	name, uri, task := r.Name, r.URI, r.TaskID
	r.Name, r.URI, r.TaskID = "", "", ""
	switch method {
	case str("tools/call"), str("prompts/get"):
		r.Name = name
	case str("resources/read"):
		r.URI = uri
	case str("tasks/get"), str("tasks/update"), str("tasks/cancel"):
		r.TaskID = task
	}
	return r
}

var fieldNames = []string{"method", "params.name", "params.uri", "params.taskId", "params._meta keys", "params._meta.progressToken"}

// str is a value as a reading spells it.
func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		if v == "" {
			return ""
		}
		cps := make([]string, 0, len(v))
		for _, r := range v {
			cps = append(cps, strconv.Itoa(int(r)))
		}
		return "s:" + strings.Join(cps, ",")
	case float64:
		return "n:" + strconv.FormatFloat(v, 'g', -1, 64)
	case json.Number:
		return "n:" + v.String()
	case bool:
		return "t:boolean"
	case []any:
		return "t:array"
	}
	return "t:object"
}

func metaKeys(meta map[string]any) string {
	var keys []string
	for k := range meta {
		keys = append(keys, str(k))
	}
	slices.Sort(keys)
	return strings.Join(keys, " ")
}

// tailgateReading is what tailgate judged: its accessors, as the gateway
// uses them.
func tailgateReading(m *jsonrpc.Message) reading {
	val := func(s jsonrpc.Span) string {
		if !s.Has() {
			return ""
		}
		if m.Raw[s.Start] == '"' {
			return str(m.String(s))
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(m.Bytes(s)))
		d.UseNumber()
		d.Decode(&v)
		return str(v)
	}
	r := reading{Parsed: true, Method: str(m.MethodName())}
	if ns, ok := m.NameSpan(); ok {
		// NameSpan is what SEP-2243's header is checked against.
		switch m.MethodName() {
		case "tools/call", "prompts/get":
			r.Name = val(ns)
		case "resources/read":
			r.URI = val(ns)
		default:
			r.TaskID = val(ns)
		}
	}
	if meta := m.Path("params", "_meta"); meta.Has() && m.Raw[meta.Start] == '{' {
		var keys map[string]json.RawMessage
		json.Unmarshal(m.Bytes(meta), &keys)
		km := make(map[string]any, len(keys))
		for k := range keys {
			km[k] = nil
		}
		r.MetaKeys = metaKeys(km)
		r.Token = val(m.Path("params", "_meta", "progressToken"))
	}
	return r
}

// goDecoders read a message as Go servers do, in process.
var goDecoders = []struct {
	name string
	read func(raw []byte) reading
}{
	{"encoding/json into a struct (case-insensitive, as hand-written Go servers)", func(raw []byte) reading {
		var msg struct {
			Method any `json:"method"`
			Params *struct {
				Name   any            `json:"name"`
				URI    any            `json:"uri"`
				TaskID any            `json:"taskId"`
				Meta   map[string]any `json:"_meta"`
			} `json:"params"`
		}
		if err := json.Unmarshal(raw, &msg); err != nil {
			return reading{Err: err.Error()}
		}
		r := reading{Parsed: true, Method: str(msg.Method)}
		if p := msg.Params; p != nil {
			r.Name, r.URI, r.TaskID = str(p.Name), str(p.URI), str(p.TaskID)
			r.MetaKeys, r.Token = metaKeys(p.Meta), str(p.Meta["progressToken"])
		}
		return r
	}},
	{"encoding/json into maps (exact keys)", func(raw []byte) reading {
		var msg map[string]any
		if err := json.Unmarshal(raw, &msg); err != nil {
			return reading{Err: err.Error()}
		}
		r := reading{Parsed: true, Method: str(msg["method"])}
		if p, ok := msg["params"].(map[string]any); ok {
			r.Name, r.URI, r.TaskID = str(p["name"]), str(p["uri"]), str(p["taskId"])
			meta, _ := p["_meta"].(map[string]any)
			r.MetaKeys, r.Token = metaKeys(meta), str(meta["progressToken"])
		}
		return r
	}},
	{"mark3labs/mcp-go v1.2.1 (its server's decoding: the envelope, then the method's request type)", func(raw []byte) reading {
		// As server.(*MCPServer).HandleMessage.
		var base struct {
			JSONRPC string       `json:"jsonrpc"`
			Method  m3.MCPMethod `json:"method"`
			ID      any          `json:"id,omitempty"`
			Result  any          `json:"result,omitempty"`
		}
		if err := json.Unmarshal(raw, &base); err != nil {
			return reading{Err: err.Error()}
		}
		r := reading{Parsed: true, Method: str(string(base.Method))}
		meta := func(m *m3.Meta) {
			if m == nil {
				return
			}
			keys := map[string]any{}
			for k := range m.AdditionalFields {
				keys[k] = nil
			}
			if m.ProgressToken != nil {
				keys["progressToken"] = nil
			}
			r.MetaKeys, r.Token = metaKeys(keys), str(m.ProgressToken)
		}
		var err error
		switch base.Method {
		case m3.MethodToolsCall:
			var req m3.CallToolRequest
			if err = json.Unmarshal(raw, &req); err == nil {
				r.Name = str(req.Params.Name)
				meta(req.Params.Meta)
			}
		case m3.MethodPromptsGet:
			var req m3.GetPromptRequest
			if err = json.Unmarshal(raw, &req); err == nil {
				r.Name = str(req.Params.Name)
				meta(req.Params.Meta)
			}
		case m3.MethodResourcesRead:
			var req m3.ReadResourceRequest
			if err = json.Unmarshal(raw, &req); err == nil {
				r.URI = str(req.Params.URI)
				meta(req.Params.Meta)
			}
		case m3.MethodTasksGet:
			var req m3.GetTaskRequest
			if err = json.Unmarshal(raw, &req); err == nil {
				r.TaskID = str(req.Params.TaskId)
			}
		case m3.MethodTasksCancel:
			var req m3.CancelTaskRequest
			if err = json.Unmarshal(raw, &req); err == nil {
				r.TaskID = str(req.Params.TaskId)
			}
		default:
			var req m3.JSONRPCRequest
			if err = json.Unmarshal(raw, &req); err == nil {
				meta(req.Request.Params.Meta)
			}
		}
		if err != nil {
			return reading{Err: err.Error()}
		}
		return r
	}},
	{"go-sdk v1.8.0 (sdkjsonrpc.DecodeMessage, then its params types decoded case-sensitively as its server does)", func(raw []byte) reading {
		msg, err := sdkjsonrpc.DecodeMessage(raw)
		if err != nil {
			return reading{Err: err.Error()}
		}
		req, ok := msg.(*sdkjsonrpc.Request)
		if !ok {
			return reading{Parsed: true}
		}
		r := reading{Parsed: true, Method: str(req.Method)}
		if len(req.Params) == 0 {
			return r
		}
		// go-sdk's internal/json: segmentio/encoding without
		// case-insensitive matching.
		unmarshal := func(v any) error {
			d := segjson.NewDecoder(bytes.NewReader(req.Params))
			d.DontMatchCaseInsensitiveStructFields()
			return d.Decode(v)
		}
		meta := func(m sdkmcp.Meta) { r.MetaKeys, r.Token = metaKeys(m), str(m["progressToken"]) }
		switch req.Method {
		case "tools/call":
			var p sdkmcp.CallToolParamsRaw
			if err = unmarshal(&p); err == nil {
				r.Name = str(p.Name)
				meta(p.Meta)
			}
		case "prompts/get":
			var p sdkmcp.GetPromptParams
			if err = unmarshal(&p); err == nil {
				r.Name = str(p.Name)
				meta(p.Meta)
			}
		case "resources/read":
			var p sdkmcp.ReadResourceParams
			if err = unmarshal(&p); err == nil {
				r.URI = str(p.URI)
				meta(p.Meta)
			}
		case "tasks/get", "tasks/cancel", "tasks/update":
			var p struct {
				TaskID string      `json:"taskId"`
				Meta   sdkmcp.Meta `json:"_meta"`
			}
			if err = unmarshal(&p); err == nil {
				r.TaskID = str(p.TaskID)
				meta(p.Meta)
			}
		default:
			var p struct {
				Meta sdkmcp.Meta `json:"_meta"`
			}
			if err = unmarshal(&p); err == nil {
				meta(p.Meta)
			}
		}
		if err != nil {
			return reading{Err: err.Error()}
		}
		return r
	}},
}

// hostile is the corpus of testdata/hostile.txt: each message, with the
// comment above it.
type hostileMessage struct {
	what string
	raw  []byte
	// refused is set for messages tailgate must refuse (the comment
	// starts with "refused"); accepted for those it must read ("ok").
	refused, accepted bool
}

func hostileCorpus(tb testing.TB) []hostileMessage {
	tb.Helper()
	f, err := os.Open("testdata/hostile.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []hostileMessage
	what := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if c, ok := strings.CutPrefix(line, "# "); ok {
			what = c
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := strconv.Unquote(line)
		if err != nil {
			tb.Fatalf("testdata/hostile.txt: %q: %v", line, err)
		}
		out = append(out, hostileMessage{what: what, raw: []byte(s),
			refused: strings.HasPrefix(what, "refused"), accepted: strings.HasPrefix(what, "ok")})
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// runScript runs a decoder script of testdata over the corpus, one
// reading per message.
func runScript(t *testing.T, corpus []hostileMessage, name string, args ...string) []reading {
	t.Helper()
	// A decoder left out would let the corpus pass unproven for the
	// servers users run on it: node and python3 are make test's to have.
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: the differential test needs it (make test's prerequisites): %v", name, err)
	}
	var in bytes.Buffer
	for _, m := range corpus {
		in.WriteString(base64.StdEncoding.EncodeToString(m.raw) + "\n")
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = &in
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	var rs []reading
	for line := range strings.Lines(string(out)) {
		var r reading
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %q: %v", name, line, err)
		}
		rs = append(rs, r)
	}
	if len(rs) != len(corpus) {
		t.Fatalf("%s read %d messages of %d", name, len(rs), len(corpus))
	}
	return rs
}

// Whatever tailgate forwards, every decoder of the servers users run
// reads the same method, name, URI, task id and _meta that tailgate
// judged (a decoder that cannot parse the message at all runs nothing).
// The decoders: Go's encoding/json (case-insensitive into structs, as
// mark3labs/mcp-go and hand-written servers; and into maps), mark3labs'
// own request types, go-sdk v1.8.0's, JavaScript's JSON.parse (node) and
// Python's json (python3). Failed before: the corpus' case, folding and
// NUL messages were accepted and read otherwise by encoding/json.
func TestDecodersAgree(t *testing.T) {
	corpus := hostileCorpus(t)
	type decoder struct {
		name     string
		readings []reading
	}
	var decoders []decoder
	for _, d := range goDecoders {
		rs := make([]reading, len(corpus))
		for i, m := range corpus {
			rs[i] = d.read(m.raw)
		}
		decoders = append(decoders, decoder{d.name, rs})
	}
	decoders = append(decoders,
		decoder{"JavaScript JSON.parse (node " + version(t, "node", "--version") + ")", runScript(t, corpus, "node", "testdata/decode.js")},
		decoder{"Python json (" + version(t, "python3", "--version") + ")", runScript(t, corpus, "python3", "testdata/decode.py")})
	for _, d := range decoders {
		t.Logf("decoder: %s", d.name)
	}
	accepted := 0
	for i, m := range corpus {
		tm, err := jsonrpc.ParseClientMessage(m.raw)
		switch {
		case err != nil && m.accepted:
			t.Errorf("%s: refused (%v), want it read", m.what, err)
		case err == nil && m.refused:
			t.Errorf("%s: accepted, want it refused", m.what)
		}
		if err != nil {
			continue
		}
		accepted++
		judged := tailgateReading(tm)
		want := judged.fields()
		for _, d := range decoders {
			r := d.readings[i]
			if !r.Parsed {
				continue // nothing runs
			}
			for j, got := range r.judged(judged.Method).fields() {
				if got != want[j] {
					t.Errorf("%s: %s reads %s %q, tailgate judged %q\n%q", m.what, d.name, fieldNames[j], got, want[j], m.raw)
				}
			}
		}
	}
	t.Logf("%d messages, %d accepted by tailgate, %d decoders", len(corpus), accepted, len(decoders))
}

func version(t *testing.T, name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("version unknown: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// keyPattern finds an object key: a string followed by a colon.
var keyPattern = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"\s*:`)

// mutateKeys applies ops to the keys of raw, two bytes an op: which key,
// and what to do to it: flip a letter's case, put a fold-equivalent rune
// (ſ for s, the Kelvin sign for k) in place of a letter, escape a
// letter, add a member before it whose key is the key in capitals (a
// near-duplicate), upper-case it, or put NUL in it.
func mutateKeys(raw, ops []byte) []byte {
	for i := 0; i+1 < len(ops); i += 2 {
		keys := keyPattern.FindAllSubmatchIndex(raw, -1)
		if len(keys) == 0 {
			return raw
		}
		k := keys[int(ops[i])%len(keys)]
		start, end := k[2], k[3] // the key, between its quotes
		key := raw[start:end]
		var nk []byte
		switch op := ops[i+1]; op % 6 {
		case 0, 1, 2:
			j := bytes.IndexFunc(key, func(r rune) bool { return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' })
			if j < 0 {
				continue
			}
			c := key[j]
			var sub []byte
			switch op % 6 {
			case 0:
				sub = []byte{c ^ 0x20}
			case 1:
				switch c | 0x20 {
				case 's':
					sub = []byte("ſ")
				case 'k':
					sub = []byte("\u212a")
				default:
					sub = []byte{c ^ 0x20}
				}
			case 2:
				sub = fmt.Appendf(nil, `\u%04X`, c^byte(op&0x20))
			}
			nk = slices.Concat(key[:j], sub, key[j+1:])
		case 3:
			member := slices.Concat([]byte(`"`), bytes.ToUpper(key), []byte(`":"secret",`))
			raw = slices.Concat(raw[:start-1], member, raw[start-1:])
			continue
		case 4:
			nk = bytes.ToUpper(key)
		case 5:
			nk = slices.Concat(key[:len(key)/2], []byte(`\u0000`), key[len(key)/2:])
		}
		raw = slices.Concat(raw[:start], nk, raw[end:])
	}
	return raw
}

// FuzzKeysAgree mutates the keys of valid calls (and of the hostile
// corpus) against the rule a route with "only echo may be called" relies
// on: whatever tailgate accepts, Go's encoding/json (case-insensitive, as
// mark3labs/mcp-go and hand-written Go servers decode) and mark3labs'
// request types read the method and tool name tailgate judged. Its seeds
// run in go test.
func FuzzKeysAgree(f *testing.F) {
	calls := []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"name":"secret"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":"p","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		`{"jsonrpc":"2.0","id":"k","method":"tasks/get","params":{"taskId":"t-1"}}`,
	}
	for _, c := range calls {
		for _, ops := range [][]byte{nil, {0, 0}, {1, 0}, {2, 1}, {3, 1}, {2, 2}, {4, 3}, {3, 3}, {1, 4}, {4, 5}, {3, 0, 3, 1}, {2, 3, 2, 0}} {
			f.Add([]byte(c), ops)
		}
	}
	for _, m := range hostileCorpus(f) {
		if len(m.raw) < 4096 {
			f.Add(m.raw, []byte(nil))
		}
	}
	caseInsensitive, mark3labs := goDecoders[0], goDecoders[2]
	f.Fuzz(func(t *testing.T, raw, ops []byte) {
		msg := mutateKeys(raw, ops)
		m, err := jsonrpc.ParseClientMessage(msg)
		if err != nil {
			return
		}
		judged := tailgateReading(m)
		for _, d := range []struct {
			name string
			read func([]byte) reading
		}{caseInsensitive, mark3labs} {
			r := d.read(msg)
			if !r.Parsed {
				continue
			}
			r = r.judged(judged.Method)
			if r.Method != judged.Method || r.Name != judged.Name {
				t.Fatalf("%s reads method %q name %q; tailgate judged method %q name %q\n%q", d.name, r.Method, r.Name, judged.Method, judged.Name, msg)
			}
		}
	})
}
