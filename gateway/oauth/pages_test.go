package oauth

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tailgate-dev/tailgate/gateway/internal/htmltext/htmltexttest"
)

// The connect flow's pages are written by hand in Go (writePage) since
// they stopped being an html/template (2045fae): they show target names,
// scopes and error messages that targets and authorization servers chose,
// a target's name in a form's action URL among them, so their escaping is
// a security surface. These tests keep the old template, oldPageTemplate,
// verbatim and assert that writePage writes every page byte for byte as
// html/template wrote it: hostile values in every field, a seeded random
// generator over all 256 byte values, and a fuzz target. html/template is
// imported here only: test code is not linked into the binary.

// oldPageTemplate is the pages' template before 2045fae, verbatim.
const oldPageTemplate = `<!doctype html>
<html><head><meta charset="utf-8"><title>tailgate · {{.Title}}</title>
<style>body{font:16px system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}table{border-collapse:collapse}td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}</style>
</head><body><h1>{{.Title}}</h1><p id="message">{{.Message}}</p>
{{if .Rows}}<table><tr><th>Target</th><th>Connected</th><th>Scopes</th><th></th></tr>
{{range .Rows}}<tr><td>{{.Target}}</td><td>{{.Connected}}</td><td>{{.Scopes}}</td>
<td><form method="post" action="/oauth/disconnect/{{.Target}}"><input type="hidden" name="form" value="{{$.Form}}"><button type="submit" name="disconnect" value="{{.Target}}">Disconnect</button></form></td></tr>
{{end}}</table>{{end}}
<p><a href="/oauth/connections">Your connections</a></p></body></html>
`

// oldPageTmpl is oldPageTemplate parsed, as pages.go parsed it.
var oldPageTmpl = template.Must(template.New("page").Parse(oldPageTemplate))

// pageData is the view the old template was executed with.
type pageData struct {
	Title, Message, Form string
	Rows                 []connection
}

// checkPageMatchesTemplate fails t unless writePage writes d exactly as
// the old template did; what names the page in the failure.
func checkPageMatchesTemplate(t testing.TB, what string, d pageData) {
	t.Helper()
	var want, got bytes.Buffer
	if err := oldPageTmpl.Execute(&want, d); err != nil {
		t.Fatalf("%s: old template: %v", what, err)
	}
	writePage(&got, d.Title, d.Message, d.Form, d.Rows)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("%s: writePage differs from html/template %s", what, htmltexttest.FirstDifference(got.Bytes(), want.Bytes()))
	}
}

// TestConnectPageMatchesTemplateOnHostileValues writes each hostile
// string in every field of a page, with no rows, one row and three.
func TestConnectPageMatchesTemplateOnHostileValues(t *testing.T) {
	for i, s := range htmltexttest.Hostile {
		what := fmt.Sprintf("Hostile[%d] %.40q", i, s)
		checkPageMatchesTemplate(t, what+", no rows", pageData{Title: s, Message: s, Form: s})
		checkPageMatchesTemplate(t, what+", empty rows", pageData{Title: s, Message: s, Form: s, Rows: []connection{}})
		checkPageMatchesTemplate(t, what+", one row", pageData{Title: s, Message: s, Form: s, Rows: []connection{{Target: s, Connected: s, Scopes: s}}})
		checkPageMatchesTemplate(t, what+", three rows", pageData{Title: "Connections", Message: "m", Form: "f", Rows: []connection{
			{Target: s}, {Target: "a" + s + "z", Connected: s}, {Target: s + "%", Scopes: s}}})
	}
}

// TestConnectPageMatchesTemplateOnRandomPages writes 2000 random pages
// (a fixed seed: a failure is the same on every run) through both.
func TestConnectPageMatchesTemplateOnRandomPages(t *testing.T) {
	r := htmltexttest.NewRandom(2045, 0xfae)
	rng, str := r.Rand(), r.String
	for i := range 2000 {
		d := pageData{Title: str(), Message: str(), Form: str()}
		for range rng.IntN(5) {
			d.Rows = append(d.Rows, connection{Target: str(), Connected: str(), Scopes: str()})
		}
		checkPageMatchesTemplate(t, fmt.Sprintf("random page %d", i), d)
	}
	if unseen := r.Unseen(); len(unseen) > 0 {
		t.Errorf("no random string held the bytes % #02x", unseen)
	}
}

// FuzzConnectPageMatchesTemplate writes a page of the fuzzer's title,
// message, form token and one or two rows through both; its seed corpus
// (every hostile string) runs in go test.
func FuzzConnectPageMatchesTemplate(f *testing.F) {
	for i, s := range htmltexttest.Hostile {
		b := htmltexttest.Hostile[(i+1)%len(htmltexttest.Hostile)]
		if len(s) > 1<<10 || len(b) > 1<<10 {
			continue // the fuzzer's inputs are small; the table tests the long ones
		}
		f.Add(s, b, "\x00", uint8(i))
	}
	f.Fuzz(func(t *testing.T, a, b, c string, rows uint8) {
		d := pageData{Title: a, Message: b, Form: c}
		switch rows % 3 {
		case 1:
			d.Rows = []connection{{Target: a, Connected: b, Scopes: c}}
		case 2:
			d.Rows = []connection{{Target: c, Connected: a, Scopes: b}, {Target: b + a}}
		}
		checkPageMatchesTemplate(t, "fuzzed page", d)
	})
}

// TestConnectPageServesItsStyle checks the page a handler serves: its
// style element is pageStyle (the CSP allows inline style, so no hash is
// to be kept in step) and its body is writePage's.
func TestConnectPageServesItsStyle(t *testing.T) {
	rec := httptest.NewRecorder()
	(&Pages{}).pageFor(rec, 200, "</style>", "<style>", []connection{{Target: "</style>"}}, "f")
	body := rec.Body.String()
	if strings.Count(body, "<style>") != 1 || !strings.Contains(body, pageStyle+"\n") {
		t.Errorf("the page's style is not pageStyle once:\n%s", body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	checkPageMatchesTemplate(t, "a served page", pageData{Title: "</style>", Message: "<style>", Form: "f", Rows: []connection{{Target: "</style>"}}})
}
