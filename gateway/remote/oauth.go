package remote

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// Authorizer gives a remote target's requests their caller's own OAuth
// access token (gateway/oauth: a connector, one per target), and is told
// when the target refuses one.
type Authorizer interface {
	// Token is the caller's access token; "" if the caller has none.
	Token(ctx context.Context, id *tsnode.Identity) (string, error)
	// Unauthorized is told that the target answered req with resp (401,
	// or 403 insufficient_scope). A *ConnectRequired error says where the
	// caller connects its account.
	Unauthorized(ctx context.Context, id *tsnode.Identity, req *http.Request, resp *http.Response) error
}

// ConnectRequired is an Authorizer's answer for a caller who must
// connect its account before the target serves it: URL is the page.
type ConnectRequired struct {
	// ID names the connect flow (the URL elicitation's id).
	ID      string
	URL     string
	Message string
}

func (e *ConnectRequired) Error() string { return e.Message }

// codeURLElicitationRequired is MCP 2025-11-25's error for a request that
// needs the user to open a URL first (URLElicitationRequiredError).
const codeURLElicitationRequired = -32042

// authorize sends req with its caller's token (if any); a refusal that
// the caller can cure by connecting is answered, for a JSON-RPC request,
// by tailgate for the target: a URLElicitationRequired error that carries
// the connect link.
func (ct *callerTransport) authorize(req *http.Request, id *tsnode.Identity) (*http.Response, error) {
	auth := ct.opts.Authorizer
	tok, err := auth.Token(req.Context(), id)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := ct.base.RoundTrip(req)
	if err != nil || !refused(resp) {
		return resp, err
	}
	uerr := auth.Unauthorized(req.Context(), id, req, resp)
	if uerr == nil {
		return ct.retry(req, id, resp)
	}
	var cr *ConnectRequired
	if !errors.As(uerr, &cr) {
		resp.Body.Close()
		return nil, uerr
	}
	msg := requestOf(req)
	if msg == nil || !msg.IsRequest() {
		return resp, nil // the link reports the refusal as it is
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	data, _ := json.Marshal(map[string]any{"elicitations": []any{map[string]string{
		"mode": "url", "elicitationId": cr.ID, "url": cr.URL, "message": cr.Message,
	}}})
	body := jsonrpc.ErrorMessage(msg.Bytes(msg.ID), codeURLElicitationRequired, cr.Message)
	body = append(append(append(body[:len(body)-2], `,"data":`...), data...), "}}"...)
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(string(body))),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// retry sends req again, once, with the token the Authorizer has now (a
// service's, just obtained); refused is the answer it had.
func (ct *callerTransport) retry(req *http.Request, id *tsnode.Identity, refused *http.Response) (*http.Response, error) {
	if req.GetBody == nil {
		return refused, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return refused, nil
	}
	io.Copy(io.Discard, io.LimitReader(refused.Body, 1<<16))
	refused.Body.Close()
	again := req.Clone(req.Context())
	again.Body = body
	tok, err := ct.opts.Authorizer.Token(req.Context(), id)
	if err != nil {
		body.Close()
		return nil, err
	}
	again.Header.Set("Authorization", "Bearer "+tok)
	return ct.base.RoundTrip(again)
}

// refused reports whether resp refuses the request's credentials: 401,
// or 403 asking for more scope (step-up).
func refused(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return true
	case http.StatusForbidden:
		return strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_scope")
	}
	return false
}

// requestOf is the JSON-RPC message req posts, if it can be read again.
func requestOf(req *http.Request) *jsonrpc.Message {
	if req.Method != http.MethodPost || req.GetBody == nil {
		return nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		return nil
	}
	m, err := jsonrpc.ParseMessage(b)
	if err != nil {
		return nil
	}
	return m
}
