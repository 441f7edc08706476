package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Policy explain over HTTP: GET /explain on the admin address, for any
// identity, and GET /.well-known/tailgate/whoami on the tailnet
// listeners, where a caller asks what it may use itself.

// WhoamiPath is where a tailnet caller asks what it may use: on every
// listener, for the caller's own identity only.
const WhoamiPath = "/.well-known/tailgate/whoami"

// Query is who as GET /explain's query: login, name (display name), node,
// tags (comma-separated), caps (JSON: each capability's list of values),
// addr and peer.
func (who ExplainIdentity) Query() url.Values {
	q := url.Values{}
	set := func(key, value string) {
		if value != "" {
			q.Set(key, value)
		}
	}
	set("login", who.Login)
	set("name", who.DisplayName)
	set("node", who.Node)
	set("tags", strings.Join(who.Tags, ","))
	if len(who.Caps) > 0 {
		caps, _ := json.Marshal(who.Caps)
		q.Set("caps", string(caps))
	}
	set("addr", who.Address)
	set("peer", who.Peer)
	return q
}

// ParseExplainQuery is the identity GET /explain's query names (see
// Query). Unknown parameters are errors, so that a misspelt one does not
// explain someone else.
func ParseExplainQuery(q url.Values) (ExplainIdentity, error) {
	known := map[string]bool{"login": true, "name": true, "node": true, "tags": true, "caps": true, "addr": true, "peer": true, "format": true}
	for key := range q {
		if !known[key] {
			return ExplainIdentity{}, &ExplainInputError{fmt.Errorf("unknown parameter %q (want login, name, node, tags, caps, addr, peer, format)", key)}
		}
	}
	who := ExplainIdentity{Login: q.Get("login"), DisplayName: q.Get("name"), Node: q.Get("node"), Address: q.Get("addr"), Peer: q.Get("peer")}
	for tag := range strings.SplitSeq(q.Get("tags"), ",") {
		if tag = strings.TrimSpace(tag); tag != "" {
			who.Tags = append(who.Tags, tag)
		}
	}
	if raw := q.Get("caps"); raw != "" {
		caps, err := ParseCaps(raw)
		if err != nil {
			return ExplainIdentity{}, err
		}
		who.Caps = caps
	}
	return who, nil
}

// ParseCaps reads grants' app capabilities as a JSON object of each
// capability's values, e.g. {"example.com/cap/tailgate": [{"tools":
// ["info"]}]}.
func ParseCaps(raw string) (map[string][]json.RawMessage, error) {
	var caps map[string][]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &caps); err != nil {
		return nil, &ExplainInputError{fmt.Errorf(`caps: want a JSON object of each capability's list of values, e.g. {"example.com/cap/tailgate": [{"tools": ["info"]}]}: %v`, err)}
	}
	return caps, nil
}

// serveExplain is the admin address's GET /explain: the explanation of
// the identity the query names (ParseExplainQuery), as JSON, or as text
// for ?format=text or an Accept that prefers text/plain.
func (s *Server) serveExplain(w http.ResponseWriter, r *http.Request) {
	who, err := ParseExplainQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ex, err := s.Explain(r.Context(), who)
	var ie *ExplainInputError
	switch {
	case errors.As(err, &ie):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		http.Error(w, "explain: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeExplanation(w, r, ex)
}

// serveWhoami answers a tailnet caller's "what can I use": its own
// explanation, as its requests are judged now, showing only the routes it
// gets into and the items it may use there (what it may not use it is
// not told of, as a filtered list does not). The items are what the
// caller's own children list: those that serve its sessionless requests,
// started as its first such request would start them if they are not
// running, counted against the same caps.
func (s *Server) serveWhoami(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	src := sourceFrom(r.Context())
	ex := s.explain(r.Context(), src, true, func(_ context.Context, f *mcpFront) ([]listing, error) {
		fs, err := f.callerSession(r)
		if err != nil {
			return nil, err
		}
		fs.touch()
		fs.inflight.Add(1)
		defer fs.callDone()
		bs := fs.backend()
		if bs == nil {
			return nil, errors.New("your children for sessionless requests are not running")
		}
		listings := bs.Listings(r.Context())
		out := make([]listing, len(listings))
		for i, l := range listings {
			out[i] = listing{Listing: l}
		}
		return out, nil
	})
	ex.Real = src.Tailscale != nil
	s.log.Info("policy explained to the caller", append(sourceAttrs(src), "routes", len(ex.Routes))...)
	writeExplanation(w, r, ex)
}

// writeExplanation answers with ex: JSON, or text for ?format=text or an
// Accept that names text/plain and not JSON.
func writeExplanation(w http.ResponseWriter, r *http.Request, ex *Explanation) {
	w.Header().Set("Cache-Control", "no-store")
	if wantsText(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.Method != http.MethodHead {
			ex.WriteText(w)
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodHead {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(ex)
	}
}

// wantsText reports whether r asks for text: ?format=text, or an Accept
// header that names text/plain and not application/json.
func wantsText(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "text":
		return true
	case "json":
		return false
	}
	accept := r.Header.Values("Accept")
	return acceptsExactly(accept, "text/plain") && !acceptsExactly(accept, "application/json")
}

// acceptsExactly reports whether an Accept header names media type typ
// itself (not by a wildcard).
func acceptsExactly(values []string, typ string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), typ) {
				return true
			}
		}
	}
	return false
}
