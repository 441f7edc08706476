package gateway

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/tailgate-dev/tailgate/gateway/relay"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// codeURLElicitationRequired is MCP 2025-11-25's URLElicitationRequired
// error: tailgate's answer, for a backendAuth.oauth target, to a caller
// who must connect its account first (gateway/remote's Authorizer). Its
// data carries the connect link as a URL elicitation.
const codeURLElicitationRequired = relay.CodeURLElicitationRequired

// connectAnswer is the answer a client gets for a tools/call answered
// with a connect link (data, with the call's outcome set): as it is for a
// client that declared URL elicitations (it shows the link); else a tool
// result with isError, whose text says what to open, which any client
// shows its user.
func (c *call) connectAnswer(data []byte) []byte {
	// Only an error can be a connect link: an answer is not parsed again
	// for it (one allocation a call).
	if c.outcome != outcomeError || c.msg.MethodName() != "tools/call" || c.takesURLElicitation() {
		return data
	}
	m, err := jsonrpc.ParseMessage(data)
	if err != nil || !m.Error.Has() || string(m.Bytes(m.Path("error", "code"))) != strconv.Itoa(codeURLElicitationRequired) {
		return data
	}
	text := m.String(m.Path("error", "message"))
	result, _ := json.Marshal(map[string]any{
		"content": []any{map[string]string{"type": "text", "text": text}},
		"isError": true,
	})
	return jsonrpc.ResultMessage(m.Bytes(m.ID), result)
}

// takesURLElicitation reports whether the call's client declared URL
// elicitations: in the request's _meta (2026-07-28), else when its
// session began.
func (c *call) takesURLElicitation() bool {
	if caps := c.msg.Path("params", "_meta", jsonrpc.MetaClientCapabilities); caps.Has() {
		return c.msg.Path("params", "_meta", jsonrpc.MetaClientCapabilities, "elicitation", "url").Has()
	}
	return c.fs.urlElicitation.Load()
}

// connectRequired reports whether err, a session's failure to start,
// is a target's URLElicitationRequired: its caller must connect an
// account first.
func connectRequired(err error) bool {
	var wire *relay.WireError
	if !errors.As(err, &wire) {
		return false
	}
	var e struct{ Code int }
	return json.Unmarshal(wire.Raw, &e) == nil && e.Code == relay.CodeURLElicitationRequired
}

// startError is the answer to the request whose session or children
// could not start: a connect link as the target's URLElicitationRequired
// error (its message says what to open; its data is the URL
// elicitation), anything else an internal error that says why.
func startError(id []byte, err error) []byte {
	if connectRequired(err) {
		return relay.ErrorResponse(id, err)
	}
	return jsonrpc.ErrorMessage(id, jsonrpc.CodeInternalError, err.Error())
}
