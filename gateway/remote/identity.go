package remote

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// A remote target that is told who calls (Options.IdentityHeaders, and
// Options.CallerHeaders: a signed identity token) is told on every HTTP
// request tailgate sends it: the caller of the request itself where the
// relay names one (Write), else the link's caller as of its latest
// request (SetIdentity), not as of the link's start. A tag taken from a
// node, a login changed, is what the next request says.

// Identity headers, which tell a remote target who asks (from WhoIs only:
// nothing a client sends reaches them).
const (
	headerLogin = "X-Tailgate-User-Login"
	headerNode  = "X-Tailgate-Node-Name"
	headerTags  = "X-Tailgate-Node-Tags"
)

// callerKey carries the caller of one request (Write) to the transport.
type callerKey struct{}

// callerTransport sets the headers that say who calls on each request it
// carries, in place of any the request had.
type callerTransport struct {
	base   http.RoundTripper
	opts   *Options
	caller atomic.Pointer[tsnode.Identity]
}

// clientFor is the client of one link whose caller is id: where the
// target is told who calls, a client of its own that says id until told
// another (SetIdentity); else the target's.
func (t *Target) clientFor(id *tsnode.Identity) *http.Client {
	if t.client == nil || !t.opts.IdentityHeaders && t.opts.CallerHeaders == nil && t.opts.Authorizer == nil {
		return t.client
	}
	ct := &callerTransport{base: t.client.Transport, opts: &t.opts}
	if ct.base == nil {
		ct.base = http.DefaultTransport
	}
	ct.caller.Store(id)
	own := *t.client
	own.Transport = ct
	return &own
}

// RoundTrip sends req with the headers of its caller.
func (ct *callerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	id, _ := req.Context().Value(callerKey{}).(*tsnode.Identity)
	if id == nil {
		id = ct.caller.Load()
	}
	req = req.Clone(req.Context()) // a RoundTripper must not change its request
	req.Header.Del(headerLogin)
	req.Header.Del(headerNode)
	req.Header.Del(headerTags)
	if id == nil {
		return ct.base.RoundTrip(req)
	}
	if ct.opts.IdentityHeaders {
		setHeader(req.Header, headerLogin, id.UserLogin)
		setHeader(req.Header, headerNode, id.NodeName)
		setHeader(req.Header, headerTags, strings.Join(id.Tags, ","))
	}
	if ct.opts.CallerHeaders != nil {
		h, err := ct.opts.CallerHeaders(id)
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, fmt.Errorf("the caller's credentials for target %q: %w", ct.opts.Name, err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
	}
	if ct.opts.Authorizer != nil {
		return ct.authorize(req, id)
	}
	return ct.base.RoundTrip(req)
}

func setHeader(h http.Header, k, v string) {
	if v != "" {
		h.Set(k, v)
	}
}

// SetIdentity makes id the caller the link's requests carry from now on,
// where the target is told who calls.
func (l *httpLink) SetIdentity(id *tsnode.Identity) {
	if l.client == nil || id == nil {
		return
	}
	if ct, ok := l.client.Transport.(*callerTransport); ok {
		ct.caller.Store(id)
	}
}

// withCaller is ctx carrying id as the caller of the requests made with
// it (nil: the link's latest).
func withCaller(ctx context.Context, id *tsnode.Identity) context.Context {
	if id == nil {
		return ctx
	}
	return context.WithValue(ctx, callerKey{}, id)
}
