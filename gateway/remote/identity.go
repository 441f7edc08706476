package remote

import (
	"net/http"
	"sync/atomic"
)

// A remote target with identity headers is told who asks on every HTTP
// request tailgate sends it: the identity of the caller as of its latest
// request (ForwardOptions.Identity), not as of the link's start. A tag
// taken from a node, a login changed, is what the next request says.

// identityHeaders are the headers that tell a remote target who asks, and
// the identity's environment variables (OpenParams.Identity) they say.
var identityHeaders = [...]struct{ header, env string }{
	{"X-Tailgate-User-Login", "TAILGATE_USER_LOGIN"},
	{"X-Tailgate-Node-Name", "TAILGATE_NODE_NAME"},
	{"X-Tailgate-Node-Tags", "TAILGATE_NODE_TAGS"},
}

// identityTransport sets the identity headers of a link's caller on each
// request it carries, in place of any the request had.
type identityTransport struct {
	base     http.RoundTripper
	identity atomic.Pointer[http.Header]
}

// withIdentity is client for one link: with identity headers (tell), a
// client of its own that says identity until told another (SetIdentity);
// else client itself.
func withIdentity(client *http.Client, tell bool, identity map[string]string) *http.Client {
	if !tell {
		return client
	}
	it := &identityTransport{base: client.Transport}
	if it.base == nil {
		it.base = http.DefaultTransport
	}
	it.set(identity)
	own := *client
	own.Transport = it
	return &own
}

func (it *identityTransport) set(identity map[string]string) {
	h := make(http.Header, len(identityHeaders))
	for _, ih := range identityHeaders {
		if v := identity[ih.env]; v != "" {
			h.Set(ih.header, v)
		}
	}
	it.identity.Store(&h)
}

func (it *identityTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context()) // a RoundTripper must not change its request
	if _, own := req.Header[identityHeaders[0].header]; own {
		// A client's request that carries its own caller's identity
		// (withIdentityHeaders): an empty header is one the caller has
		// not. Nothing a client sends reaches these headers: only
		// Mcp-Param-* of its headers are passed on.
		for _, ih := range identityHeaders {
			if req.Header.Get(ih.header) == "" {
				req.Header.Del(ih.header)
			}
		}
		return it.base.RoundTrip(req)
	}
	for _, ih := range identityHeaders {
		req.Header.Del(ih.header)
	}
	for k, v := range *it.identity.Load() {
		req.Header[k] = v
	}
	return it.base.RoundTrip(req)
}

// withIdentityHeaders is headers with every identity header set to
// identity's, "" for what it has not.
func withIdentityHeaders(headers, identity map[string]string) map[string]string {
	out := make(map[string]string, len(headers)+len(identityHeaders))
	for k, v := range headers {
		out[k] = v
	}
	for _, ih := range identityHeaders {
		out[ih.header] = identity[ih.env]
	}
	return out
}

// SetIdentity makes identity the one the link's requests carry from now
// on, if the target is told it.
func (l *httpLink) SetIdentity(identity map[string]string) {
	if l.client == nil {
		return
	}
	if it, ok := l.client.Transport.(*identityTransport); ok {
		it.set(identity)
	}
}
