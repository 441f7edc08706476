package jsonrpc

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Message is one JSON-RPC message as the bytes it arrived as, with the
// places of the envelope fields tailgate reads. Nothing else is decoded:
// a field tailgate does not know is forwarded as it came.
type Message struct {
	// Raw is the whole message.
	Raw []byte
	// ID, Method, Params, Result and Error are spans of Raw; a zero span
	// is a field the message does not have.
	ID, Method, Params, Result, Error Span
}

// Span is a JSON value's place in a message: Raw[Start:End].
type Span struct{ Start, End int }

// Has reports whether the field is present.
func (s Span) Has() bool { return s.End > s.Start }

// ParseMessage reads the envelope of one JSON-RPC message. It checks that
// raw is a single JSON object whose values are well-formed; a batch (an
// array) is an error. It is the reader for every message; what a client
// sends is read with ParseClientMessage, which is stricter.
//
// A message that could be read two ways is refused (see checkKeys): in
// each object whose keys tailgate reads or judges (the envelope, params,
// params._meta, params.ref and params.arguments), a key that equals
// another, or equals a key tailgate reads without being it, under Unicode
// simple case folding after unescaping (Go's encoding/json matches struct
// fields that way and takes the last match; JSON.parse, Python's json and
// go-sdk match exactly), a key with a control character, invalid UTF-8 or
// an unpaired surrogate escape; and a judged string value (method, name,
// uri, taskId, ref.type/name/uri) with invalid UTF-8 or an unpaired
// surrogate (Go reads U+FFFD where JavaScript and Python keep it).
//
// Why refuse rather than re-encode: tailgate forwards the client's bytes
// (the relay's throughput depends on it, and what tailgate does not
// understand must pass through unchanged). Re-encoding canonically would
// need a full decode and encode of every message and would still have to
// pick one reading of an ambiguous one; refusing it costs nothing on the
// messages real clients send, and leaves a single reading to forward.
func ParseMessage(raw []byte) (*Message, error) {
	return parse(raw, maxDepth, false)
}

// ClientMaxDepth is how deeply a client's message may nest, counting the
// message itself as 1: the least that mainstream MCP servers read. go-sdk
// (v1.8.0) refuses JSON deeper than 1000 and, on stdio, a message it
// cannot decode ends the session: the child exits; Python's json stops
// near its recursion limit (1000, less the stack in use); Rust's
// serde_json (rmcp) at 128; .NET's System.Text.Json (the C# SDK) at 64.
// No MCP request needs more; a deeper one is refused before any server
// sees it.
const ClientMaxDepth = 64

// ParseClientMessage is ParseMessage for what a client sends, which is
// forwarded to servers that may decode it differently from tailgate. On
// top of ParseMessage's checks it refuses: nesting deeper than
// ClientMaxDepth; invalid UTF-8 anywhere (RFC 8259 requires UTF-8;
// decoders replace, refuse or keep bad bytes); a numeric
// params._meta.progressToken that is not a safe integer (a fraction, an
// exponent, -0, or beyond 2^53-1: JavaScript rounds it, go-sdk reads a
// float, Python keeps it exact, so the token a server echoes in its
// progress would not be the one tailgate matches).
//
// The id is not judged that way: tailgate gives every request an id of
// its own before a server sees it, and answers the client with the bytes
// the client sent, so no server decodes a client's id.
func ParseClientMessage(raw []byte) (*Message, error) {
	return parse(raw, ClientMaxDepth, true)
}

func parse(raw []byte, depth int, client bool) (*Message, error) {
	m := &Message{Raw: raw}
	kc := keyChecker{where: "message", names: &envelopeNames}
	err := scanObject(raw, 0, depth, func(rawKey, key []byte, v Span) {
		kc.add(rawKey, key)
		switch string(key) {
		case "id":
			m.ID = v
		case "method":
			m.Method = v
		case "params":
			m.Params = v
		case "result":
			m.Result = v
		case "error":
			m.Error = v
		}
	})
	if err != nil {
		return nil, err
	}
	if client && !utf8.Valid(raw) {
		return nil, refuse(ReasonEncoding, "message is not valid UTF-8")
	}
	if kc.err != nil {
		return nil, kc.err
	}
	if m.Method.Has() {
		if raw[m.Method.Start] != '"' {
			return nil, refuse(ReasonEnvelope, "method is not a string")
		}
		if err := checkString("method", m.Bytes(m.Method)); err != nil {
			return nil, err
		}
	}
	if m.Params.Has() && raw[m.Params.Start] == '{' {
		if err := m.checkParams(client); err != nil {
			return nil, err
		}
	}
	if m.ID.Has() {
		switch raw[m.ID.Start] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		case 'n': // null: a response to a request that could not be read
			if m.Method.Has() {
				return nil, refuse(ReasonEnvelope, "a request id may not be null")
			}
		default:
			return nil, refuse(ReasonEnvelope, "id is neither a string nor a number")
		}
	}
	if !m.Method.Has() && !m.ID.Has() {
		return nil, refuse(ReasonEnvelope, "neither a request, a notification nor a response")
	}
	return m, nil
}

// checkParams checks the keys of params and of the objects in it that
// tailgate reads, and the strings it judges.
func (m *Message) checkParams(client bool) error {
	var meta, ref, args Span
	judged := [...]struct {
		name string
		span Span
	}{{name: "params.name"}, {name: "params.uri"}, {name: "params.taskId"}}
	kc := keyChecker{where: "params", names: &paramsNames}
	err := scanObject(m.Raw[m.Params.Start:m.Params.End], m.Params.Start, maxDepth, func(rawKey, key []byte, v Span) {
		kc.add(rawKey, key)
		switch string(key) {
		case "_meta":
			meta = v
		case "ref":
			ref = v
		case "arguments":
			args = v
		case "name":
			judged[0].span = v
		case "uri":
			judged[1].span = v
		case "taskId":
			judged[2].span = v
		}
	})
	if err == nil {
		err = kc.err
	}
	if err != nil {
		return err
	}
	for _, j := range judged {
		if j.span.Has() && m.Raw[j.span.Start] == '"' {
			if err := checkString(j.name, m.Bytes(j.span)); err != nil {
				return err
			}
		}
	}
	for _, o := range [...]struct {
		where string
		span  Span
		names *nameSet
	}{{"params._meta", meta, &metaNames}, {"params.ref", ref, &refNames}, {"params.arguments", args, &argumentNames}} {
		if !o.span.Has() || m.Raw[o.span.Start] != '{' {
			continue
		}
		kc := keyChecker{where: o.where, names: o.names}
		var tok Span
		scanObject(m.Raw[o.span.Start:o.span.End], o.span.Start, maxDepth, func(rawKey, key []byte, v Span) {
			kc.add(rawKey, key)
			switch {
			case o.names == &refNames && m.Raw[v.Start] == '"':
				if err := checkString(o.where+"."+string(key), m.Bytes(v)); err != nil && kc.err == nil {
					kc.err = err
				}
			case o.names == &metaNames && string(key) == "progressToken":
				tok = v
			}
		})
		if kc.err != nil {
			return kc.err
		}
		if client && tok.Has() && m.Raw[tok.Start] != '"' && !safeInteger(m.Bytes(tok)) {
			return refuse(ReasonToken, "params._meta.progressToken %s is neither a string nor an integer between -(2^53-1) and 2^53-1", clipped(m.Bytes(tok)))
		}
	}
	return nil
}

// Bytes is the raw value of span s.
func (m *Message) Bytes(s Span) []byte { return m.Raw[s.Start:s.End] }

// MethodName is the message's method, "" for a response.
func (m *Message) MethodName() string {
	if !m.Method.Has() {
		return ""
	}
	b := m.Bytes(m.Method)
	if len(b) >= 2 {
		// The methods of the protocol cost no allocation.
		if name, ok := knownMethods[string(b[1:len(b)-1])]; ok {
			return name
		}
	}
	return unquote(b)
}

// KnownMethod reports whether name is a method of the protocol (or of its
// tasks extension), as opposed to one a client or server made up.
func KnownMethod(name string) bool {
	_, ok := knownMethods[name]
	return ok
}

var knownMethods = func() map[string]string {
	m := make(map[string]string)
	for _, name := range []string{
		"initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get",
		"resources/list", "resources/templates/list", "resources/read", "resources/subscribe",
		"resources/unsubscribe", "completion/complete", "logging/setLevel", "roots/list",
		"sampling/createMessage", "elicitation/create", "server/discover", "subscriptions/listen",
		"tasks/get", "tasks/list", "tasks/cancel", "tasks/result", "tasks/update",
		"notifications/initialized", "notifications/cancelled", "notifications/progress",
		"notifications/message", "notifications/resources/updated", "notifications/resources/list_changed",
		"notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/roots/list_changed",
		"notifications/elicitation/complete", "notifications/tasks/status",
	} {
		m[name] = name
	}
	return m
}()

// IsRequest reports whether the message expects an answer.
func (m *Message) IsRequest() bool { return m.Method.Has() && m.ID.Has() }

// IsNotification reports whether the message is a notification.
func (m *Message) IsNotification() bool { return m.Method.Has() && !m.ID.Has() }

// IsResponse reports whether the message answers a request.
func (m *Message) IsResponse() bool { return !m.Method.Has() && m.ID.Has() }

// Field finds key in the object at span obj (a span of m.Raw); the result
// is a span of m.Raw.
func (m *Message) Field(obj Span, key string) Span {
	if !obj.Has() || m.Raw[obj.Start] != '{' {
		return Span{}
	}
	var found Span
	scanObject(m.Raw[obj.Start:obj.End], obj.Start, maxDepth, func(_, k []byte, v Span) {
		if string(k) == key {
			found = v // the last one, as decoders take it
		}
	})
	return found
}

// Path follows keys from the message's top level.
func (m *Message) Path(keys ...string) Span {
	s := Span{0, len(m.Raw)}
	if len(keys) > 0 {
		// The object starts after any whitespace: a message that began
		// with a space once had no params.name to judge, while every
		// decoder read one.
		s.Start = skipSpace(m.Raw, 0)
	}
	for _, k := range keys {
		if s = m.Field(s, k); !s.Has() {
			return Span{}
		}
	}
	return s
}

// NameSpan is where the message names what SEP-2243's Mcp-Name header
// repeats: params.name of tools/call and prompts/get, params.uri of
// resources/read, params.taskId of tasks/get, update and cancel (the tasks
// extension). ok is false for other methods.
func (m *Message) NameSpan() (s Span, ok bool) {
	switch m.MethodName() {
	case "tools/call", "prompts/get":
		return m.Path("params", "name"), true
	case "resources/read":
		return m.Path("params", "uri"), true
	case "tasks/get", "tasks/update", "tasks/cancel":
		return m.Path("params", "taskId"), true
	}
	return Span{}, false
}

// String is the string at span s, "" if it is not a string.
func (m *Message) String(s Span) string {
	if !s.Has() || m.Raw[s.Start] != '"' {
		return ""
	}
	return unquote(m.Bytes(s))
}

// Replace returns a copy of the message's bytes with span s replaced by v.
func (m *Message) Replace(s Span, v []byte) []byte {
	// One byte more: the stdio framing appends a newline.
	out := make([]byte, 0, len(m.Raw)-(s.End-s.Start)+len(v)+1)
	out = append(out, m.Raw[:s.Start]...)
	out = append(out, v...)
	return append(out, m.Raw[s.End:]...)
}

// Rewrite is Replace made in m.Raw's own buffer where it has room, for a
// message whose buffer is its own: a large answer is then not copied. m is
// not to be used after.
func (m *Message) Rewrite(s Span, v []byte) []byte {
	d := len(v) - (s.End - s.Start)
	if d > cap(m.Raw)-len(m.Raw)-1 { // and room for stdio's newline
		return m.Replace(s, v)
	}
	out := m.Raw[:len(m.Raw)+d]
	copy(out[s.Start+len(v):], m.Raw[s.End:])
	copy(out[s.Start:], v)
	return out
}

// Replace2 is Replace for two spans, a before b, that do not overlap.
func (m *Message) Replace2(a Span, av []byte, b Span, bv []byte) []byte {
	out := make([]byte, 0, len(m.Raw)+len(av)+len(bv)+1)
	out = append(out, m.Raw[:a.Start]...)
	out = append(out, av...)
	out = append(out, m.Raw[a.End:b.Start]...)
	out = append(out, bv...)
	return append(out, m.Raw[b.End:]...)
}

// unquote is the string a JSON string literal says, "" if b is not one.
func unquote(b []byte) string {
	if len(b) >= 2 && bytes.IndexByte(b, '\\') < 0 {
		return string(b[1 : len(b)-1])
	}
	var s string
	if json.Unmarshal(b, &s) != nil {
		return ""
	}
	return s
}

// Quote is s as a JSON string literal.
func Quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// errSyntax is a malformed message.
var errSyntax error = &ParseError{Reason: ReasonMalformed, Msg: "malformed JSON"}

// scanObject walks the top-level object in b, calling fn with each key
// (rawKey between its quotes; key unescaped, the same bytes when rawKey
// has no escape) and the span of its value, offset by base. It validates
// the whole object, refusing nesting deeper than depth (the object itself
// is 1).
func scanObject(b []byte, base, depth int, fn func(rawKey, key []byte, v Span)) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		if i < len(b) && b[i] == '[' {
			return refuse(ReasonBatch, "a JSON-RPC batch (array) is not supported")
		}
		return errSyntax
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		if skipSpace(b, i+1) != len(b) {
			return errSyntax
		}
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errSyntax
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		rawKey := b[i+1 : end-1]
		key := rawKey
		if bytes.IndexByte(key, '\\') >= 0 {
			// An escaped key means what it decodes to.
			key, _ = unescape(rawKey)
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
		vend, err := skipValue(b, i, 2, depth)
		if err != nil {
			return err
		}
		fn(rawKey, key, Span{base + i, base + vend})
		i = skipSpace(b, vend)
		if i >= len(b) {
			return errSyntax
		}
		if b[i] == '}' {
			if skipSpace(b, i+1) != len(b) {
				return errSyntax
			}
			return nil
		}
		if b[i] != ',' {
			return errSyntax
		}
		i = skipSpace(b, i+1)
	}
}

// maxDepth bounds nesting of what tailgate reads from anyone (a child's
// results included), so a hostile message cannot exhaust the stack.
const maxDepth = 1000

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i]. It
// refuses what JSON refuses: control characters, unknown escapes.
func skipString(b []byte, i int) (int, error) {
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c < 0x20:
			return 0, errSyntax
		case c == '\\':
			if i+1 >= len(b) {
				return 0, errSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
					return 0, errSyntax
				}
				i += 6
			default:
				return 0, errSyntax
			}
		default:
			i++
		}
	}
	return 0, errSyntax
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// skipNumber returns the index after the number that starts at b[i]:
// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, error) {
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return 0, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return 0, errSyntax
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return 0, errSyntax
		}
	}
	return i, nil
}

// skipValue returns the index after the JSON value that starts at b[i],
// at nesting level depth (if it is an object or an array), at most limit.
func skipValue(b []byte, i, depth, limit int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth > limit {
			return 0, refuse(ReasonDepth, "JSON nested too deeply (more than %d levels)", limit)
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1, nil
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return 0, errSyntax
				}
				end, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = skipSpace(b, end)
				if i >= len(b) || b[i] != ':' {
					return 0, errSyntax
				}
				i = skipSpace(b, i+1)
			}
			end, err := skipValue(b, i, depth+1, limit)
			if err != nil {
				return 0, err
			}
			i = skipSpace(b, end)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == closer {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = skipSpace(b, i+1)
		}
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	}
	return 0, errSyntax
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

// ErrorMessage is a JSON-RPC error response to id (raw JSON; null if nil).
func ErrorMessage(id []byte, code int, message string) []byte {
	if len(id) == 0 {
		id = []byte("null")
	}
	out := make([]byte, 0, 64+len(id)+len(message))
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"error":{"code":`...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, `,"message":`...)
	out = append(out, Quote(message)...)
	return append(out, "}}"...)
}

// ResultMessage is a JSON-RPC response to id with result (raw JSON).
func ResultMessage(id, result []byte) []byte {
	out := make([]byte, 0, 40+len(id)+len(result))
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	return append(out, '}')
}

// JSON-RPC and MCP error codes tailgate answers with.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeRequestCancelled answers a request whose session closed or
	// whose client cancelled it (as go-sdk's and the TypeScript SDK's
	// "request cancelled").
	CodeRequestCancelled = -32800
	// CodeRequestTimeout answers a request that got no answer in time
	// (MCP's "request timeout", as the TypeScript SDK uses it).
	CodeRequestTimeout = -32001
)
