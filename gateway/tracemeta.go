package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// This file holds where a request's trace context is in its message: a
// carrier that reads params._meta, and the rewrite that puts the
// gateway's own context there for the target. MCP has no header a stdio
// server could read: _meta is the one carrier every target has
// (OpenTelemetry's MCP conventions, SEP-414), with the W3C keys
// unprefixed.

// traceMetaKeys are the _meta keys of a trace context, in the order the
// gateway writes them.
var traceMetaKeys = [...]string{"traceparent", "tracestate", "baggage"}

// metaCarrier reads a message's params._meta (a span of m) as the W3C
// propagators read HTTP headers: each key's string value.
type metaCarrier struct {
	m    *jsonrpc.Message
	meta jsonrpc.Span
}

// Get is the string value of key in _meta, "" if it has none.
func (mc metaCarrier) Get(key string) string { return mc.m.String(mc.m.Field(mc.meta, key)) }

// Set does nothing: the carrier is read only; withTraceMeta writes.
func (metaCarrier) Set(string, string) {}

// Keys are the trace context's keys, the only ones the propagators ask.
func (metaCarrier) Keys() []string { return traceMetaKeys[:] }

// withTraceMeta is m's bytes with params._meta carrying the trace
// context in set (traceparent, tracestate, baggage; an empty value is left
// out): _meta added when m has none (params too), else rebuilt with the
// context's keys first and every other member as it came. A member whose
// key is one of the context's under case folding ("TraceParent") is
// dropped, so that no decoder, case-insensitive or not, reads two. Nil
// when there is nothing to write, or params is not an object (not an MCP
// request).
func withTraceMeta(m *jsonrpc.Message, set map[string]string) []byte {
	var members []byte
	for _, k := range traceMetaKeys {
		if v := set[k]; v != "" {
			if len(members) > 0 {
				members = append(members, ',')
			}
			members = append(members, jsonrpc.Quote(k)...)
			members = append(members, ':')
			members = append(members, jsonrpc.Quote(v)...)
		}
	}
	if len(members) == 0 {
		return nil
	}
	if !m.Params.Has() {
		end := bytes.LastIndexByte(m.Raw, '}')
		if end < 0 {
			return nil
		}
		ins := append(append([]byte(`,"params":{"_meta":{`), members...), "}}"...)
		return m.Replace(jsonrpc.Span{Start: end, End: end}, ins)
	}
	if m.Raw[m.Params.Start] != '{' {
		return nil
	}
	meta := m.Field(m.Params, "_meta")
	if !meta.Has() {
		ins := append(append([]byte(`"_meta":{`), members...), '}')
		if len(bytes.TrimSpace(m.Raw[m.Params.Start+1:m.Params.End-1])) > 0 {
			ins = append(ins, ',')
		}
		at := m.Params.Start + 1
		return m.Replace(jsonrpc.Span{Start: at, End: at}, ins)
	}
	obj := append([]byte{'{'}, members...)
	if m.Raw[meta.Start] == '{' {
		// Any other _meta (null, a string) is not MCP's: it is replaced.
		err := eachMember(m.Bytes(meta), func(key string, member []byte) {
			if isTraceMetaKey(key) {
				return
			}
			obj = append(obj, ',')
			obj = append(obj, member...)
		})
		if err != nil {
			return nil // parsed before: cannot happen
		}
	}
	return m.Replace(meta, append(obj, '}'))
}

// isTraceMetaKey reports whether key is one of a trace context's under
// Unicode case folding, as Go's encoding/json matches keys.
func isTraceMetaKey(key string) bool {
	for _, k := range traceMetaKeys {
		if strings.EqualFold(key, k) {
			return true
		}
	}
	return false
}

// eachMember calls fn with each member of the JSON object obj: its key,
// unescaped, and its bytes as they are in obj (`"key": value`).
func eachMember(obj []byte, fn func(key string, member []byte)) error {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	for dec.More() {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("not a JSON object")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		// From the end of the member before: its comma and spaces go.
		fn(key, bytes.TrimLeft(obj[start:dec.InputOffset()], ", \t\r\n"))
	}
	return nil
}
