package gateway

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"

	"github.com/tailgate-dev/tailgate/gateway/relay"
	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// outcome is how an MCP request ended, as the access log and the
// tailgate_mcp_calls_total metric name it. This file is the one mapping
// between a call's outcome, the JSON-RPC error its client gets and the
// HTTP status that carries it.
type outcome string

// The outcomes of a request.
const (
	outcomeOK         outcome = "ok"          // a result
	outcomeToolError  outcome = "tool_error"  // a tools/call result with isError
	outcomeError      outcome = "error"       // a JSON-RPC error, the target's or tailgate's
	outcomeDenied     outcome = "denied"      // refused by mcpAuthorization
	outcomeLimited    outcome = "limited"     // refused by a limit (policies.localRateLimit)
	outcomeCancelled  outcome = "cancelled"   // the client cancelled it
	outcomeClientGone outcome = "client_gone" // the client left before its answer
	outcomeWriteError outcome = "write_error" // the answer could not be written whole
)

// finalOutcome is the outcome of a call whose target answered, and the
// error it answered with.
func finalOutcome(fr relay.Frame) (outcome, error) {
	switch fr.Outcome {
	case relay.OutcomeError:
		return outcomeError, errorOf(fr.Data)
	case relay.OutcomeToolError:
		return outcomeToolError, nil
	}
	return outcomeOK, nil
}

// sendOutcome is the outcome of a call whose answer could not be sent:
// a write that failed part-way is not a client that left before its
// answer (the log then says how much was written).
func sendOutcome(err error) (outcome, error) {
	if errors.As(err, new(*writeError)) {
		return outcomeWriteError, err
	}
	return outcomeClientGone, nil
}

// errorOf is the message of a JSON-RPC error response.
func errorOf(resp []byte) error {
	m, err := jsonrpc.ParseMessage(resp)
	if err != nil {
		return err
	}
	return errors.New(m.String(m.Field(m.Error, "message")))
}

// codeLimited is the JSON-RPC error code of a request a limit refused
// (outcomeLimited), in the range JSON-RPC leaves to servers; its error's
// data names the limit and the seconds to wait (limits.go limitError).
const codeLimited = -32029

// answerLimited sends the error of a call a limit refused: where the
// answer is its own HTTP response and nothing of it is written yet (a
// Streamable HTTP POST, a sessionless request) under HTTP 429 with
// Retry-After; elsewhere (a legacy SSE session's stream), and for a limit
// that could not be evaluated (retrying would not help), as the JSON-RPC
// error alone.
func answerLimited(out sink, msg []byte, ref *limitRefusal) error {
	hs, ok := out.(*httpSink)
	if !ok || hs.sse != nil || hs.answered || ref == nil || ref.retryAfter <= 0 {
		return out.send(msg, true)
	}
	hs.answered = true
	hs.w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(ref.retryAfter)))
	return answerJSONStatus(hs.w, http.StatusTooManyRequests, msg, hs.stall)
}

// writeRPCError answers an HTTP request with a JSON-RPC error, under an
// HTTP status that is not 200: for what tailgate refuses before a call
// begins (a header that disagrees with the body, a cap reached).
func writeRPCError(w http.ResponseWriter, status int, id []byte, code int, msg string) {
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	w.Write(jsonrpc.ErrorMessage(id, code, msg))
}

// errorStatus is the HTTP status of a sessionless answer (MCP 2026-07-28,
// as go-sdk maps it): 404 for a method the server does not have, 400 for
// invalid params, an unsupported version, a missing capability or a
// header mismatch, else 200.
func errorStatus(msg []byte) int {
	if !bytes.Contains(msg, []byte(`"error"`)) {
		return http.StatusOK
	}
	m, err := jsonrpc.ParseMessage(msg)
	if err != nil || !m.Error.Has() {
		return http.StatusOK
	}
	switch string(m.Bytes(m.Field(m.Error, "code"))) {
	case "-32601":
		return http.StatusNotFound
	case "-32602", "-32022", "-32021", "-32020":
		return http.StatusBadRequest
	}
	return http.StatusOK
}
