package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/internal/htmltext"
)

// Pages are the connect flow's pages, served on tailgate's tailnet
// listeners under /oauth/: the link a caller is given
// (/oauth/connect/<target>/<id>), which sends the caller's browser to the
// authorization server; the callback it comes back to
// (/oauth/callback), which completes the flow only for the login that
// began it (WhoIs, on the same state and PKCE pair); and the caller's
// connections (/oauth/connections), each with a disconnect button.
type Pages struct {
	// Connectors are the targets' connectors, by target name.
	Connectors map[string]*Connector
	// Identify is the login of the browser's tailnet node (WhoIs); an
	// error refuses the page.
	Identify func(r *http.Request) (string, error)
	// MayConnect, if set, says whether the browser's identity may
	// connect target (its grants): an error refuses the link and the
	// callback, saying why.
	MayConnect func(r *http.Request, target string) error
	// FormKey signs the connections page's forms for the login it is
	// shown to (a disconnect must carry it: no other site can make the
	// person's browser post one). Keep it for the gateway's life.
	FormKey []byte
	Log     *slog.Logger
}

// Handler serves the pages.
func (p *Pages) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth/connect/{target}/{id}", p.connect)
	mux.HandleFunc("GET /oauth/callback", p.callback)
	mux.HandleFunc("GET /oauth/connections", p.connections)
	mux.HandleFunc("POST /oauth/disconnect/{target}", p.disconnect)
	return mux
}

// who is the page's caller, or false once it has been refused.
func (p *Pages) who(w http.ResponseWriter, r *http.Request) (string, bool) {
	name, err := p.Identify(r)
	if err != nil || name == "" {
		p.page(w, http.StatusForbidden, "Not on the tailnet", "tailgate could not tell who you are: open this page from a device on the tailnet, signed in as yourself.", nil)
		return "", false
	}
	return name, true
}

func (p *Pages) connect(w http.ResponseWriter, r *http.Request) {
	name, ok := p.who(w, r)
	if !ok {
		return
	}
	c := p.Connectors[r.PathValue("target")]
	if c == nil {
		p.page(w, http.StatusNotFound, "No such target", "tailgate connects no target by that name.", nil)
		return
	}
	f, err := c.flowFor(r.PathValue("id"), name)
	if err != nil {
		p.Log.Info("oauth: connect link refused", "target", c.opts.Target, "user", name, "err", err)
		p.page(w, http.StatusForbidden, "Link not usable", err.Error(), nil)
		return
	}
	if err := p.mayConnect(r, c); err != nil {
		p.page(w, http.StatusForbidden, "Not allowed", err.Error(), nil)
		return
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-f.ready:
	case <-t.C:
	}
	c.mu.Lock()
	authURL := f.authURL
	c.mu.Unlock()
	if authURL == "" {
		p.page(w, http.StatusBadGateway, "Cannot connect", "The target's authorization server could not be reached: make the call again.", nil)
		return
	}
	p.Log.Info("oauth: connect link followed", "target", c.opts.Target, "user", name)
	http.Redirect(w, r, authURL, http.StatusFound)
}

func (p *Pages) callback(w http.ResponseWriter, r *http.Request) {
	name, ok := p.who(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	var c *Connector
	var f *flow
	for _, cc := range p.Connectors {
		if f = cc.byState(state); f != nil {
			c = cc
			break
		}
	}
	if f == nil {
		p.page(w, http.StatusBadRequest, "Unknown authorization", "This authorization is unknown or has expired: make the call again for a new link.", nil)
		return
	}
	if err := p.mayConnect(r, c); err != nil {
		p.page(w, http.StatusForbidden, "Not allowed", err.Error(), nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	if err := c.complete(ctx, f, name, q); err != nil {
		p.Log.Info("oauth: callback refused", "target", c.opts.Target, "user", name, "err", redactErr(err))
		p.page(w, http.StatusForbidden, "Not connected", err.Error(), nil)
		return
	}
	p.page(w, http.StatusOK, "Connected", "Your account at "+c.opts.Target+" is connected. Go back to your AI client and try again.", nil)
}

// mayConnect applies MayConnect to c's target.
func (p *Pages) mayConnect(r *http.Request, c *Connector) error {
	if p.MayConnect == nil {
		return nil
	}
	if err := p.MayConnect(r, c.opts.Target); err != nil {
		p.Log.Info("oauth: connect refused by connectAuthorization", "target", c.opts.Target, "err", err)
		return err
	}
	return nil
}

// connection is one row of the connections page.
type connection struct {
	Target    string
	Connected string
	Scopes    string
}

func (p *Pages) connections(w http.ResponseWriter, r *http.Request) {
	name, ok := p.who(w, r)
	if !ok {
		return
	}
	var rows []connection
	for _, c := range sortedConnectors(p.Connectors) {
		if rec := c.Connection(name); rec != nil {
			rows = append(rows, connection{Target: c.opts.Target, Connected: rec.Connected.Format(time.RFC3339), Scopes: strings.Join(rec.Scopes, " ")})
		}
	}
	msg := "You have no connections."
	if len(rows) > 0 {
		msg = "Your accounts that tailgate uses for you, " + name + ":"
	}
	p.pageFor(w, http.StatusOK, "Connections", msg, rows, p.formToken(name))
}

func (p *Pages) disconnect(w http.ResponseWriter, r *http.Request) {
	name, ok := p.who(w, r)
	if !ok {
		return
	}
	if !sameOrigin(r) || !hmac.Equal([]byte(r.PostFormValue("form")), []byte(p.formToken(name))) {
		p.page(w, http.StatusForbidden, "Refused", "A disconnect must come from tailgate's own connections page.", nil)
		return
	}
	c := p.Connectors[r.PathValue("target")]
	if c == nil {
		p.page(w, http.StatusNotFound, "No such target", "tailgate connects no target by that name.", nil)
		return
	}
	if err := c.Disconnect(r.Context(), name); err != nil {
		p.page(w, http.StatusInternalServerError, "Not disconnected", err.Error(), nil)
		return
	}
	http.Redirect(w, r, "/oauth/connections", http.StatusSeeOther)
}

// sameOrigin reports whether a form post may come from a page of the
// same origin: a browser that says it comes from another site (in
// Sec-Fetch-Site, over https, or in Origin) is refused. Over http a
// browser may say neither ("null" Origin), so the form's token
// (formToken) is what proves the page was tailgate's.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// formToken is the token of login's forms: an HMAC of the login under
// FormKey, which no other site can read from the page or make.
func (p *Pages) formToken(login string) string {
	m := hmac.New(sha256.New, p.FormKey)
	m.Write([]byte("tailgate-oauth-form\x00" + login))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// pageStyle is the pages' inline style sheet.
const pageStyle = `<style>body{font:16px system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}table{border-collapse:collapse}td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}</style>`

// writePage writes a page: its title and message, and a table of the
// caller's connections with a Disconnect form each (signed with form) when
// there are rows. It is written in Go, not with html/template: executing a
// template makes the linker keep every exported method of every type in
// the binary (package gateway/internal/htmltext). Every value is escaped
// as html/template escaped it: htmltext.Escape in text and attributes,
// htmltext.URLPath first in the form's action.
func writePage(w io.Writer, title, message, form string, rows []connection) {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tailgate · " + htmltext.Escape(title) + "</title>\n")
	b.WriteString(pageStyle + "\n</head><body><h1>" + htmltext.Escape(title) + "</h1><p id=\"message\">" + htmltext.Escape(message) + "</p>\n")
	if len(rows) > 0 {
		b.WriteString("<table><tr><th>Target</th><th>Connected</th><th>Scopes</th><th></th></tr>\n")
		for _, c := range rows {
			target := htmltext.Escape(c.Target)
			b.WriteString("<tr><td>" + target + "</td><td>" + htmltext.Escape(c.Connected) + "</td><td>" + htmltext.Escape(c.Scopes) + "</td>\n")
			b.WriteString("<td><form method=\"post\" action=\"/oauth/disconnect/" + htmltext.Escape(htmltext.URLPath(c.Target)) + "\"><input type=\"hidden\" name=\"form\" value=\"" + htmltext.Escape(form) +
				"\"><button type=\"submit\" name=\"disconnect\" value=\"" + target + "\">Disconnect</button></form></td></tr>\n")
		}
		b.WriteString("</table>")
	}
	b.WriteString("\n<p><a href=\"/oauth/connections\">Your connections</a></p></body></html>\n")
	io.WriteString(w, b.String())
}

func (p *Pages) page(w http.ResponseWriter, status int, title, message string, rows []connection) {
	p.pageFor(w, status, title, message, rows, "")
}

// pageFor is page, its forms signed with form (formToken).
func (p *Pages) pageFor(w http.ResponseWriter, status int, title, message string, rows []connection, form string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	// The callback's URL carries a code: it goes to no other site; a
	// form post keeps its Origin (same-origin).
	w.Header().Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	writePage(w, title, message, form, rows)
}

// sortedConnectors are cs in the order of their targets' names.
func sortedConnectors(cs map[string]*Connector) []*Connector {
	out := make([]*Connector, 0, len(cs))
	for _, name := range slices.Sorted(maps.Keys(cs)) {
		out = append(out, cs[name])
	}
	return out
}
