package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/gateway/internal/htmltext/htmltexttest"
)

// The status page is written by hand in Go (statuspage.go) since it
// stopped being an html/template (2045fae): it shows what callers, nodes
// and MCP servers chose (logins, node names, tags, client, tool and target
// names, error messages), so its escaping is a security surface. These
// tests keep the old template, testdata/status-template.html, verbatim
// and assert that writeStatusPage draws every view byte for byte as
// html/template drew it: hostile values in every field, a seeded random
// generator over all 256 byte values, and a fuzz target. html/template is
// imported here only: test code is not linked into the binary.

// oldStatusTemplate parses testdata/status-template.html (the page's
// template before 2045fae) with the functions it was executed with.
var oldStatusTemplate = sync.OnceValues(func() (*template.Template, error) {
	text, err := os.ReadFile("testdata/status-template.html")
	if err != nil {
		return nil, err
	}
	return template.New("status").Funcs(template.FuncMap{
		"ago":   ago,
		"clock": func(t time.Time) string { return t.UTC().Format("15:04:05") },
		"ms":    millis,
		"of":    func(part, whole float64) float64 { return part * whole },
	}).Parse(string(text))
})

// checkStatusPageMatchesTemplate fails t unless writeStatusPage draws v
// exactly as the old template did; what names the view in the failure.
func checkStatusPageMatchesTemplate(t testing.TB, what string, v *statusView) {
	t.Helper()
	tmpl, err := oldStatusTemplate()
	if err != nil {
		t.Fatalf("old status template: %v", err)
	}
	var want, got bytes.Buffer
	if err := tmpl.Execute(&want, v); err != nil {
		t.Fatalf("%s: old template: %v", what, err)
	}
	writeStatusPage(&got, v)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("%s: writeStatusPage differs from html/template %s", what, htmltexttest.FirstDifference(got.Bytes(), want.Bytes()))
	}
}

// hostileFloats are numbers html/template printed with fmt.Sprint,
// exponents (whose + it escaped) and non-finite values among them.
var hostileFloats = []float64{0, math.Copysign(0, -1), 1, -1, 0.5, 0.1, 1.0 / 3, 123456789.125, 1e20, 1e21, 1.5e21, -1e21, 1e-7, 1e-5,
	math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.Inf(-1), math.NaN()}

// hostileInts are integers at the ends of their ranges.
var hostileInts = []int64{0, 1, -1, 5, 59, 60, 3599, 86399, 86400, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64}

// statusViewOf is a view whose every string is s (and every caller's
// tags two of s), each caller shape the page draws differently once (a
// person, a tagged node, a node alone, an address alone); shape chooses
// what else is set: readiness, admin and an explanation (its error or
// its text), draining, starting, near.
func statusViewOf(s string, shape int) *statusView {
	now := time.Date(2026, 12, 7, 20, 49, 34, 0, time.UTC)
	callers := []statusCaller{
		{Login: s, Node: s, Tags: []string{s, s}, Address: s},
		{Login: "tagged-devices", Node: s, Tags: []string{s}, Address: s},
		{Node: s, Address: s},
		{Login: s, Address: s},
		{Address: s},
		{},
	}
	flag := func(bit int) bool { return shape&(1<<bit) != 0 }
	v := &statusView{Version: s, Node: s, Now: now, Uptime: 90 * time.Minute, Refresh: 5, Ready: flag(0), Readiness: s,
		DenialsTotal: 7, DeniedConnections: 3, Admin: flag(1)}
	if flag(2) {
		v.Refresh = 0
	}
	if v.Admin && flag(3) {
		v.Explain = &statusExplain{Login: s, Node: s, Tags: s, Caps: s, Text: s}
		if flag(4) {
			v.Explain.Err = s
		}
	}
	for i, c := range callers {
		v.Targets = append(v.Targets, statusTarget{Route: s, Name: s, Error: s, Children: i, PoolReady: i, Draining: flag(5)},
			statusTarget{Route: s, Name: s})
		v.Sessions = append(v.Sessions, statusSession{Route: s, ID: s, Kind: s, Client: statusClient{Protocol: s, Name: s, Version: s},
			Caller: c, Age: time.Duration(i) * time.Hour, Idle: time.Second, Inflight: int64(i), Children: i, Starting: flag(5)})
		v.Children = append(v.Children, statusChild{PID: 100 + i, Route: s, Target: s, Caller: c, Session: s, Uptime: time.Duration(i) * time.Minute})
		v.Denials = append(v.Denials, statusDenial{At: now.Add(-time.Duration(i) * time.Second), Event: s, Caller: c, Route: s, Target: s,
			What: s, Rule: s, Reason: s, Expr: s})
		v.Calls = append(v.Calls, statusCalls{Route: s, Method: s, Target: s, Tool: s, Calls: uint64(i), Mean: time.Millisecond, P95: 20 * time.Millisecond})
		v.Limits = append(v.Limits, statusLimit{Name: s, Key: s, Used: float64(i), Bound: 5, Near: flag(5)})
	}
	return v
}

// TestStatusPageMatchesTemplateOnHostileValues draws each hostile string
// in every field of the page, in each of its shapes, and hostile numbers
// in every number it shows.
func TestStatusPageMatchesTemplateOnHostileValues(t *testing.T) {
	for i, s := range htmltexttest.Hostile {
		for shape := range 1 << 6 {
			if admin, explain, explainErr := shape&0b10 != 0, shape&0b1000 != 0, shape&0b10000 != 0; !admin && (explain || explainErr) || !explain && explainErr {
				continue // the same page as another shape's
			}
			if len(s) > 1<<10 && shape != 0b011010 && shape != 0b101011 {
				continue // the long ones in two shapes (between them every field drawn) are enough
			}
			checkStatusPageMatchesTemplate(t, fmt.Sprintf("Hostile[%d] %.40q, shape %06b", i, s, shape), statusViewOf(s, shape))
		}
	}
	for _, f := range hostileFloats {
		for _, g := range hostileFloats {
			v := statusViewOf("x", 0)
			v.Limits = []statusLimit{{Name: "n", Key: "k", Used: f, Bound: g}, {Used: g, Bound: f, Near: true}}
			checkStatusPageMatchesTemplate(t, fmt.Sprintf("limit used %v of %v", f, g), v)
		}
	}
	for _, n := range hostileInts {
		v := statusViewOf("x", 2)
		v.Refresh, v.DenialsTotal, v.DeniedConnections = int(n), uint64(n), uint64(n)
		v.Uptime = time.Duration(n)
		v.Now = time.Unix(0, n)
		for i := range v.Targets {
			v.Targets[i].Children, v.Targets[i].PoolReady = int(n), int(-n)
		}
		for i := range v.Sessions {
			v.Sessions[i].Age, v.Sessions[i].Idle, v.Sessions[i].Inflight, v.Sessions[i].Children = time.Duration(n), time.Duration(-n), n, int(n)
		}
		for i := range v.Children {
			v.Children[i].PID, v.Children[i].Uptime = int(n), time.Duration(n)
		}
		for i := range v.Denials {
			v.Denials[i].At = time.Unix(n, 0)
		}
		for i := range v.Calls {
			v.Calls[i].Calls, v.Calls[i].Errors, v.Calls[i].Denied = uint64(n), uint64(-n), uint64(n)
			v.Calls[i].Mean, v.Calls[i].P95, v.Calls[i].Max = time.Duration(n), time.Duration(-n), time.Duration(n/3)
		}
		checkStatusPageMatchesTemplate(t, fmt.Sprintf("numbers %d", n), v)
	}
	checkStatusPageMatchesTemplate(t, "the zero view", &statusView{})
	checkStatusPageMatchesTemplate(t, "the zero admin view", &statusView{Admin: true})
	checkStatusPageMatchesTemplate(t, "an empty explanation", &statusView{Admin: true, Explain: &statusExplain{}})
}

// randomText makes the random views: their strings are text's, their
// other random choices rng's (text's generator, so a run is one
// sequence).
type randomText struct {
	text *htmltexttest.Random
	rng  *rand.Rand
}

// newRandomText is a randomText seeded with seed1 and seed2.
func newRandomText(seed1, seed2 uint64) *randomText {
	text := htmltexttest.NewRandom(seed1, seed2)
	return &randomText{text: text, rng: text.Rand()}
}

// string is a random string of text's.
func (r *randomText) string() string { return r.text.String() }

// float is a random number the limits table shows.
func (r *randomText) float() float64 {
	switch r.rng.IntN(4) {
	case 0:
		return hostileFloats[r.rng.IntN(len(hostileFloats))]
	case 1:
		return float64(r.rng.IntN(1000))
	case 2:
		return math.Float64frombits(r.rng.Uint64())
	}
	return r.rng.NormFloat64() * math.Pow(10, float64(r.rng.IntN(50)-10))
}

// int is a random integer, now and then at an end of its range.
func (r *randomText) int() int64 {
	if r.rng.IntN(4) == 0 {
		return hostileInts[r.rng.IntN(len(hostileInts))]
	}
	return r.rng.Int64N(1<<40) - 1<<39
}

// caller is a random caller, a tagged node's login now and then.
func (r *randomText) caller() statusCaller {
	c := statusCaller{Login: r.string(), Node: r.string(), Address: r.string()}
	if r.rng.IntN(4) == 0 {
		c.Login = "tagged-devices"
	}
	for range r.rng.IntN(4) {
		c.Tags = append(c.Tags, r.string())
	}
	return c
}

// view is a random view: every string field filled, up to four rows of
// each table, every flag either way.
func (r *randomText) view() *statusView {
	rows := func() int { return r.rng.IntN(5) }
	yes := func() bool { return r.rng.IntN(2) == 0 }
	v := &statusView{Version: r.string(), Node: r.string(), Now: time.Unix(0, r.int()), Uptime: time.Duration(r.int()), Refresh: int(r.int() % 3),
		Ready: yes(), Readiness: r.string(), DenialsTotal: uint64(r.int()), DeniedConnections: uint64(r.int()), Admin: yes()}
	if yes() {
		v.Explain = &statusExplain{Login: r.string(), Node: r.string(), Tags: r.string(), Caps: r.string(), Text: r.string(), Err: r.string()}
	}
	for range rows() {
		v.Targets = append(v.Targets, statusTarget{Route: r.string(), Name: r.string(), Error: r.string(), Children: int(r.int()), PoolReady: int(r.int()), Draining: yes()})
	}
	for range rows() {
		v.Sessions = append(v.Sessions, statusSession{Route: r.string(), ID: r.string(), Kind: r.string(),
			Client: statusClient{Protocol: r.string(), Name: r.string(), Version: r.string()}, Caller: r.caller(),
			Age: time.Duration(r.int()), Idle: time.Duration(r.int()), Inflight: r.int(), Children: int(r.int()), Starting: yes()})
	}
	for range rows() {
		v.Children = append(v.Children, statusChild{PID: int(r.int()), Route: r.string(), Target: r.string(), Caller: r.caller(), Session: r.string(), Uptime: time.Duration(r.int())})
	}
	for range rows() {
		v.Denials = append(v.Denials, statusDenial{At: time.Unix(0, r.int()), Event: r.string(), Caller: r.caller(), Route: r.string(), Target: r.string(),
			What: r.string(), Rule: r.string(), Reason: r.string(), Expr: r.string()})
	}
	for range rows() {
		v.Calls = append(v.Calls, statusCalls{Route: r.string(), Method: r.string(), Target: r.string(), Tool: r.string(),
			Calls: uint64(r.int()), Errors: uint64(r.int()), Denied: uint64(r.int()), Mean: time.Duration(r.int()), P95: time.Duration(r.int()), Max: time.Duration(r.int())})
	}
	for range rows() {
		v.Limits = append(v.Limits, statusLimit{Name: r.string(), Key: r.string(), Used: r.float(), Bound: r.float(), Near: yes()})
	}
	return v
}

// TestStatusPageMatchesTemplateOnRandomViews draws 2000 random views
// (a fixed seed: a failure is the same on every run) through both.
func TestStatusPageMatchesTemplateOnRandomViews(t *testing.T) {
	r := newRandomText(2045, 0xfae)
	for i := range 2000 {
		checkStatusPageMatchesTemplate(t, fmt.Sprintf("random view %d", i), r.view())
	}
	if unseen := r.text.Unseen(); len(unseen) > 0 {
		t.Errorf("no random string held the bytes % #02x", unseen)
	}
}

// FuzzStatusPageMatchesTemplate draws a view made of three strings, a
// number and a set of flags through both; its seed corpus (every hostile
// string) runs in go test.
func FuzzStatusPageMatchesTemplate(f *testing.F) {
	for i, s := range htmltexttest.Hostile {
		b := htmltexttest.Hostile[(i+1)%len(htmltexttest.Hostile)]
		if len(s) > 1<<10 || len(b) > 1<<10 {
			continue // the fuzzer's inputs are small; the table tests the long ones
		}
		f.Add(s, b, "\x00", hostileFloats[i%len(hostileFloats)], hostileInts[i%len(hostileInts)], uint8(i*37))
	}
	f.Fuzz(func(t *testing.T, a, b, c string, n float64, d int64, flags uint8) {
		strs := []string{a, b, c}
		k := 0
		next := func() string { k++; return strs[k%3] }
		flag := func(bit int) bool { return flags&(1<<bit) != 0 }
		caller := func() statusCaller {
			c := statusCaller{Login: next(), Node: next(), Tags: []string{next(), next()}, Address: next()}
			if flag(6) {
				c.Login = "tagged-devices"
			}
			return c
		}
		v := &statusView{Version: next(), Node: next(), Now: time.Unix(0, d), Uptime: time.Duration(d), Refresh: int(d % 7), Ready: flag(0),
			Readiness: next(), DenialsTotal: uint64(d), DeniedConnections: uint64(d), Admin: flag(1)}
		if flag(2) {
			v.Explain = &statusExplain{Login: next(), Node: next(), Tags: next(), Caps: next(), Text: next(), Err: next()}
		}
		if !flag(3) {
			v.Targets = []statusTarget{{Route: next(), Name: next(), Error: next(), Children: int(d), PoolReady: int(d), Draining: flag(4)}}
			v.Sessions = []statusSession{{Route: next(), ID: next(), Kind: next(), Client: statusClient{Protocol: next(), Name: next(), Version: next()},
				Caller: caller(), Age: time.Duration(d), Idle: time.Duration(-d), Inflight: d, Children: int(d), Starting: flag(5)}}
			v.Children = []statusChild{{PID: int(d), Route: next(), Target: next(), Caller: caller(), Session: next(), Uptime: time.Duration(d)}}
			v.Denials = []statusDenial{{At: time.Unix(d, 0), Caller: caller(), Route: next(), Target: next(), What: next(), Rule: next(), Reason: next(), Expr: next()}}
			v.Calls = []statusCalls{{Route: next(), Method: next(), Target: next(), Tool: next(), Calls: uint64(d), Mean: time.Duration(d)}}
			v.Limits = []statusLimit{{Name: next(), Key: next(), Used: n, Bound: float64(d), Near: flag(7)}, {Used: float64(d), Bound: n}}
		}
		checkStatusPageMatchesTemplate(t, "fuzzed view", v)
	})
}

// TestStatusCSPHashesItsStyle checks that the page's CSP allows the
// style element it serves, by the hash of that element's text, and that
// the text is the old template's style sheet byte for byte (a page whose
// CSP hash is stale would show unstyled).
func TestStatusCSPHashesItsStyle(t *testing.T) {
	var page bytes.Buffer
	writeStatusPage(&page, statusViewOf("</style><style>*{}", 0b11011))
	_, rest, ok := strings.Cut(page.String(), "<style>")
	css, _, ok2 := strings.Cut(rest, "</style>")
	if !ok || !ok2 || strings.Count(page.String(), "<style>") != 1 {
		t.Fatalf("the page has not one <style> element:\n%s", page.String())
	}
	sum := sha256.Sum256([]byte(css))
	if want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "';"; !strings.Contains(statusCSP, want) {
		t.Errorf("statusCSP does not allow the page's style (%s): %s", want, statusCSP)
	}
	old, err := os.ReadFile("testdata/status-template.html")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ = strings.Cut(string(old), "<style>")
	oldCSS, _, _ := strings.Cut(rest, "</style>")
	if css != oldCSS {
		t.Errorf("the page's style differs from the old template's:\n%s\nwant:\n%s", css, oldCSS)
	}
}
