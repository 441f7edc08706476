package gateway

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/tailgate-dev/tailgate/gateway/internal/htmltext"
)

// This file draws the status page's HTML from a statusView in Go rather
// than with html/template: executing any text/template makes the linker
// keep every exported method of every type in the binary (the template
// looks methods up by name), which grew tailgate's binary, and so its
// resident memory at rest, by about 13 MB. Every value a client or target
// chose goes through htmltext.Escape, the escaping html/template applied
// to it (all of the page's values are in text, RCDATA or quoted
// attributes, whose kinds html/template escapes alike).

// statusPage is the status page being drawn into its buffer.
type statusPage struct{ *bytes.Buffer }

// raw writes markup of the page itself.
func (p statusPage) raw(s string) { p.WriteString(s) }

// text writes a value, escaped.
func (p statusPage) text(s string) { p.WriteString(htmltext.Escape(s)) }

// num writes a number as html/template printed one (fmt.Sprint, escaped:
// 1e+21 has a plus).
func (p statusPage) num(n float64) { p.text(fmt.Sprint(n)) }

// openTable opens section id with its heading (markup) and, when it has
// rows, a table whose header row is columns (markup); with none, it says
// empty, closes the section, then after, and returns false.
func (p statusPage) openTable(id, heading string, rows int, empty, columns, after string) bool {
	p.raw("<section id=\"" + id + "\">\n<h2>" + heading + "</h2>\n")
	if rows == 0 {
		p.raw("<p class=\"empty\">" + empty + "</p>\n</section>\n" + after)
		return false
	}
	p.raw("<table>\n<tr>" + columns + "</tr>\n")
	return true
}

// closeTable closes the table and section openTable opened, then after.
func (p statusPage) closeTable(after string) { p.raw("</table>\n</section>\n" + after) }

// writeStatusPage draws v.
func writeStatusPage(b *bytes.Buffer, v *statusView) {
	p := statusPage{b}
	p.raw("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
	if v.Refresh != 0 {
		p.raw(`<meta http-equiv="refresh" content="`)
		p.raw(strconv.Itoa(v.Refresh))
		p.raw(`">`)
	}
	p.raw("\n<meta name=\"referrer\" content=\"no-referrer\">\n<title>tailgate status")
	if v.Node != "" {
		p.raw(" · ")
		p.text(v.Node)
	}
	p.raw("</title>\n<style>\n")
	p.raw(statusCSS)
	p.raw("</style>\n</head>\n<body>\n<header>\n<h1>tailgate <span class=\"ver\">")
	p.text(v.Version)
	p.raw("</span></h1>\n<p class=\"meta\">")
	if v.Node != "" {
		p.text(v.Node)
		p.raw(" · ")
	}
	p.raw("up " + ago(v.Uptime) + " · " + v.Now.UTC().Format("15:04:05") + " UTC · ")
	if v.Refresh != 0 {
		p.raw("refreshed every " + strconv.Itoa(v.Refresh) + "s")
	} else {
		p.raw("not refreshed while explaining")
	}
	p.raw("</p>\n")
	if v.Ready {
		p.raw(`<span class="pill ok" id="ready">ready</span>`)
	} else {
		p.raw(`<span class="pill bad" id="ready">`)
		p.text(v.Readiness)
		p.raw(`</span>`)
	}
	p.raw("\n</header>\n<main>\n<div class=\"cards\" id=\"summary\">\n")
	p.raw(`<div class="card"><b>` + strconv.Itoa(len(v.Targets)) + "</b><span>targets</span></div>\n")
	p.raw(`<div class="card"><b>` + strconv.Itoa(len(v.Sessions)) + "</b><span>sessions and callers</span></div>\n")
	p.raw(`<div class="card"><b>` + strconv.Itoa(len(v.Children)) + "</b><span>children</span></div>\n")
	p.raw(`<div class="card"><b>` + strconv.FormatUint(v.DenialsTotal, 10) + "</b><span>denials</span></div>\n")
	p.raw(`<div class="card"><b>` + strconv.FormatUint(v.DeniedConnections, 10) + "</b><span>connections refused</span></div>\n</div>\n\n")
	p.targets(v)
	p.sessions(v)
	p.children(v)
	p.denials(v)
	p.calls(v)
	p.limits(v)
	p.explain(v)
	p.raw("</main>\n</body>\n</html>\n\n")
}

// targets draws the targets section.
func (p statusPage) targets(v *statusView) {
	if !p.openTable("targets", "Targets", len(v.Targets), "No targets.", "<th>Route</th><th>Target</th><th>Health</th><th class=\"n\">Children</th><th class=\"n\">Pool ready</th>", "\n") {
		return
	}
	for _, t := range v.Targets {
		p.raw("<tr><td>")
		p.text(t.Route)
		if t.Draining {
			p.raw(` <span class="pill warn">draining</span>`)
		}
		p.raw("</td><td>")
		p.text(t.Name)
		p.raw("</td><td>")
		if t.Error != "" {
			p.raw(`<span class="pill bad">cannot start</span><span class="err">`)
			p.text(t.Error)
			p.raw("</span>")
		} else {
			p.raw(`<span class="pill ok">ok</span>`)
		}
		p.raw(`</td><td class="n">` + strconv.Itoa(t.Children) + `</td><td class="n">` + strconv.Itoa(t.PoolReady) + "</td></tr>\n")
	}
	p.closeTable("\n")
}

// sessions draws the sessions section.
func (p statusPage) sessions(v *statusView) {
	if !p.openTable("sessions", "Sessions and sessionless callers", len(v.Sessions), "No sessions.", "<th>Caller</th><th>Route</th><th>Kind</th><th>Protocol</th><th>Client</th><th class=\"n\">Age</th><th class=\"n\">Idle</th><th class=\"n\">In flight</th><th class=\"n\">Children</th>", "\n") {
		return
	}
	for _, s := range v.Sessions {
		p.raw("<tr><td>")
		p.caller(s.Caller)
		p.raw("</td><td>")
		p.text(s.Route)
		p.raw(`</td><td class="nw">`)
		p.text(s.Kind)
		if s.ID != "" {
			p.raw(" <code>")
			p.text(s.ID)
			p.raw("</code>")
		}
		if s.Starting {
			p.raw(` <span class="pill warn">starting</span>`)
		}
		p.raw(`</td><td class="nw">`)
		p.text(s.Client.Protocol)
		p.raw("</td><td>")
		p.text(s.Client.Name)
		if s.Client.Version != "" {
			p.raw(` <span class="muted">`)
			p.text(s.Client.Version)
			p.raw("</span>")
		}
		p.raw(`</td><td class="n">` + ago(s.Age) + `</td><td class="n">` + ago(s.Idle) + `</td><td class="n">` +
			strconv.FormatInt(s.Inflight, 10) + `</td><td class="n">` + strconv.Itoa(s.Children) + "</td></tr>\n")
	}
	p.closeTable("\n")
}

// children draws the children section.
func (p statusPage) children(v *statusView) {
	if !p.openTable("children", "Children", len(v.Children), "No child processes running.", "<th class=\"n\">PID</th><th>Route</th><th>Target</th><th>Caller</th><th>Session</th><th class=\"n\">Uptime</th>", "\n") {
		return
	}
	for _, c := range v.Children {
		p.raw(`<tr class="child"><td class="n">` + strconv.Itoa(c.PID) + "</td><td>")
		p.text(c.Route)
		p.raw("</td><td>")
		p.text(c.Target)
		p.raw("</td><td>")
		p.caller(c.Caller)
		p.raw("</td><td><code>")
		p.text(c.Session)
		p.raw(`</code></td><td class="n">` + ago(c.Uptime) + "</td></tr>\n")
	}
	p.closeTable("\n")
}

// denials draws the recent denials section.
func (p statusPage) denials(v *statusView) {
	if !p.openTable("denials", "Recent denials<small>"+strconv.Itoa(len(v.Denials))+" shown of "+strconv.FormatUint(v.DenialsTotal, 10)+"</small>", len(v.Denials), "Nothing denied.", "<th>When</th><th>Caller</th><th>What</th><th>Route / target</th><th>Rule</th>", "\n") {
		return
	}
	for _, d := range v.Denials {
		p.raw(`<tr><td class="nw">` + d.At.UTC().Format("15:04:05") + ` <span class="muted">` + ago(v.Now.Sub(d.At)) + " ago</span></td><td>")
		p.caller(d.Caller)
		p.raw("</td><td>")
		p.text(d.What)
		p.raw("</td><td>")
		p.text(d.Route)
		if d.Target != "" {
			p.raw(" / ")
			p.text(d.Target)
		}
		p.raw("</td><td>")
		if d.Rule != "" {
			p.raw("<code>")
			p.text(d.Rule)
			p.raw("</code>")
		}
		if d.Expr != "" {
			p.raw(" <code>")
			p.text(d.Expr)
			p.raw("</code>")
		}
		p.raw(` <span class="muted">`)
		p.text(d.Reason)
		p.raw("</span></td></tr>\n")
	}
	p.closeTable("\n")
}

// calls draws the calls by tool section.
func (p statusPage) calls(v *statusView) {
	if !p.openTable("calls", "Calls by tool<small>since the gateway started</small>", len(v.Calls), "No calls yet.", "<th>Route</th><th>Method</th><th>Tool</th><th>Target</th><th class=\"n\">Calls</th><th class=\"n\">Errors</th><th class=\"n\">Denied</th><th class=\"n\">Mean</th><th class=\"n\">p95 ≤</th><th class=\"n\">Max</th>", "\n") {
		return
	}
	for _, c := range v.Calls {
		p.raw("<tr><td>")
		p.text(c.Route)
		p.raw("</td><td>")
		p.text(c.Method)
		p.raw("</td><td>")
		p.text(c.Tool)
		p.raw("</td><td>")
		p.text(c.Target)
		p.raw(`</td><td class="n">` + strconv.FormatUint(c.Calls, 10) + `</td><td class="n">` + strconv.FormatUint(c.Errors, 10) +
			`</td><td class="n">` + strconv.FormatUint(c.Denied, 10) + `</td><td class="n">` + millis(c.Mean) +
			`</td><td class="n">` + millis(c.P95) + `</td><td class="n">` + millis(c.Max) + "</td></tr>\n")
	}
	p.closeTable("\n")
}

// limits draws the limits section.
func (p statusPage) limits(v *statusView) {
	if !p.openTable("limits", "Limits", len(v.Limits), "No limit is near its bound.", "<th>Limit</th><th>Key</th><th class=\"n\">Used</th><th class=\"n\">Bound</th><th></th>", "") {
		return
	}
	for _, l := range v.Limits {
		p.raw("<tr><td>")
		p.text(l.Name)
		if l.Near {
			p.raw(` <span class="pill warn">near its bound</span>`)
		}
		p.raw("</td><td>")
		p.text(l.Key)
		p.raw(`</td><td class="n">`)
		p.num(l.Used)
		p.raw(`</td><td class="n">`)
		p.num(l.Bound)
		p.raw(`</td><td><meter min="0" max="`)
		p.num(l.Bound)
		p.raw(`" low="`)
		p.num(0.5 * l.Bound)
		p.raw(`" high="`)
		p.num(0.8 * l.Bound)
		p.raw(`" optimum="0" value="`)
		p.num(l.Used)
		p.raw("\"></meter></td></tr>\n")
	}
	p.closeTable("")
}

// explain draws the admin address's explain form and its answer.
func (p statusPage) explain(v *statusView) {
	if !v.Admin {
		p.raw("\n")
		return
	}
	var login, node, tags, caps string
	if e := v.Explain; e != nil {
		login, node, tags, caps = e.Login, e.Node, e.Tags, e.Caps
	}
	p.raw("\n<section id=\"explain\">\n<h2>Explain an identity<small>what it may use on each route, and the rule that decides</small></h2>\n<form method=\"get\" action=\"status#explain\">\n")
	p.raw(`<label>login <input name="login" value="` + htmltext.Escape(login) + "\" placeholder=\"alice@example.com\"></label>\n")
	p.raw(`<label>node <input name="node" value="` + htmltext.Escape(node) + "\" placeholder=\"laptop.tail1234.ts.net\"></label>\n")
	p.raw(`<label>tags <input name="tags" value="` + htmltext.Escape(tags) + "\" placeholder=\"tag:ci,tag:prod\"></label>\n")
	p.raw(`<label>grants <input name="caps" value="` + htmltext.Escape(caps) + `" placeholder='{"example.com/cap/tailgate": [{"tools": ["echo"]}]}'></label>` + "\n")
	p.raw("<button type=\"submit\">Explain</button>\n</form>\n")
	if e := v.Explain; e != nil {
		if e.Err != "" {
			p.raw(`<p class="pill bad">`)
			p.text(e.Err)
			p.raw("</p>")
		} else {
			p.raw("<pre>")
			p.text(e.Text)
			p.raw("</pre>")
		}
	}
	p.raw("\n</section>\n\n")
}

// caller draws who a caller is: its login, else its node's name, else its
// address; its tags; and its node (or address) beside a login.
func (p statusPage) caller(c statusCaller) {
	person := c.Person()
	switch {
	case person != "":
		p.text(person)
	case c.Node != "":
		p.text(c.Node)
	default:
		p.text(c.Address)
	}
	for _, t := range c.Tags {
		p.raw(` <span class="tag">`)
		p.text(t)
		p.raw("</span>")
	}
	switch {
	case person != "":
		if c.Node != "" {
			p.raw(`<span class="node">`)
			p.text(c.Node)
			p.raw("</span>")
		}
	case c.Node != "":
		p.raw(`<span class="node">`)
		p.text(c.Address)
		p.raw("</span>")
	}
}
