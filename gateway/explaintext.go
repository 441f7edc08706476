package gateway

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// An explanation as a person reads it (`tailgate explain`, GET /explain
// with ?format=text): who, whether they connect, then per route whether
// they get in and a table of every item with its decision and rule.

// WriteText writes ex as text: a line on who it is for and the
// connection's decision, then each route: its authorization, and a table
// of each target's tools, prompts, resources and resource templates with
// the decision on each and the rule that made it (every item of a route
// they may not enter is named on one line, with the rule that keeps them
// out), and how much of each they may use.
func (ex *Explanation) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "who      %s\n", ex.Identity.describe(ex.Real))
	if len(ex.Identity.Caps) > 0 {
		for _, name := range slices.Sorted(maps.Keys(ex.Identity.Caps)) {
			vals := make([]string, len(ex.Identity.Caps[name]))
			for i, v := range ex.Identity.Caps[name] {
				vals[i] = string(v)
			}
			fmt.Fprintf(bw, "grant    %s: [%s]\n", name, strings.Join(vals, ", "))
		}
	}
	fmt.Fprintf(bw, "connect  %s\n", ex.Network.describe())
	if ex.Self {
		fmt.Fprintln(bw, "(what you may use: routes and items you may not use are not shown)")
	}
	if len(ex.Routes) == 0 {
		fmt.Fprintln(bw, "\nno route")
	}
	for _, re := range ex.Routes {
		writeRouteText(bw, ex.Network, re, ex.Self)
	}
	return bw.Flush()
}

// describe is who, on one line.
func (who ExplainIdentity) describe(real bool) string {
	parts := []string{who.Login}
	if who.DisplayName != "" {
		parts[0] += " (" + who.DisplayName + ")"
	}
	if who.Node != "" {
		parts = append(parts, "node "+who.Node)
	}
	if len(who.Tags) > 0 {
		parts = append(parts, "tags "+strings.Join(who.Tags, ","))
	}
	if who.Address != "" {
		parts = append(parts, "address "+who.Address)
	}
	s := strings.Join(parts, ", ")
	if real {
		return s + " (as WhoIs says)"
	}
	return s + " (as asked: no node is looked up)"
}

// describe is a verdict as "allow by RULE (reason)".
func (v Verdict) describe() string {
	decision := "deny"
	if v.Allow {
		decision = "allow"
	}
	if v.Rule == "" {
		return decision + " (" + v.Reason + ")"
	}
	return decision + " by " + v.Rule + " (" + v.Reason + ")"
}

// writeRouteText writes one route of an explanation; of a caller's own
// (self), whose items are those it may use, it counts only those.
func writeRouteText(w io.Writer, network Verdict, re RouteExplanation, self bool) {
	paths := "every path"
	if len(re.Paths) > 0 {
		paths = "paths " + strings.Join(re.Paths, " ")
	}
	fmt.Fprintf(w, "\nroute %s: port %d, %s; judged as %s\n", re.Name, re.Port, paths, re.Request)
	fmt.Fprintf(w, "  authorization  %s\n", re.Authorization.describe())
	gate := network
	if gate.Allow {
		gate = re.Authorization
	}
	if !gate.Allow {
		writeShutOutText(w, gate, re.Targets)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TARGET\tKIND\tNAME\tDECISION\tRULE\tWHY")
	var counts itemCounts
	for _, t := range re.Targets {
		for _, kind := range itemKinds {
			for _, it := range kind.of(&t) {
				counts.add(kind.plural, it.Allow)
				decision, rule := "deny", it.Rule
				if it.Allow {
					decision = "allow"
				}
				if rule == "" {
					rule = "-"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", t.Name, kind.name, it.Name, decision, rule, it.Reason)
			}
		}
	}
	tw.Flush()
	for _, t := range re.Targets {
		if t.Note != "" {
			fmt.Fprintf(w, "  target %s: %s\n", t.Name, t.Note)
		}
		if t.Error != "" {
			fmt.Fprintf(w, "  target %s: not (all) listed: %s\n", t.Name, t.Error)
		}
	}
	if self {
		fmt.Fprintf(w, "  may use: %s\n", counts.usableOnly())
		return
	}
	fmt.Fprintf(w, "  may use: %s\n", counts)
}

// writeShutOutText writes the items of a route gate keeps the identity
// out of, by kind, on one line each, with the rule that keeps it out.
func writeShutOutText(w io.Writer, gate Verdict, targets []TargetExplained) {
	fmt.Fprintf(w, "  no item may be used: %s\n", gate.describe())
	for _, t := range targets {
		fmt.Fprintf(w, "  target %s\n", t.Name)
		for _, kind := range itemKinds {
			items := kind.of(&t)
			if len(items) == 0 {
				continue
			}
			names := make([]string, len(items))
			for i, it := range items {
				names[i] = it.Name
			}
			fmt.Fprintf(w, "    %s: %s\n", kind.plural, strings.Join(names, " "))
		}
		if t.Error != "" {
			fmt.Fprintf(w, "    not (all) listed: %s\n", t.Error)
		}
	}
}

// itemKind is one of a target's lists, as the text names it.
type itemKind struct {
	name, plural string
	of           func(*TargetExplained) []ItemExplained
}

var itemKinds = []itemKind{
	{"tool", "tools", func(t *TargetExplained) []ItemExplained { return t.Tools }},
	{"prompt", "prompts", func(t *TargetExplained) []ItemExplained { return t.Prompts }},
	{"resource", "resources", func(t *TargetExplained) []ItemExplained { return t.Resources }},
	{"template", "resource templates", func(t *TargetExplained) []ItemExplained { return t.ResourceTemplates }},
}

// itemCounts counts, by kind, the items listed and those allowed.
type itemCounts struct {
	kinds          []string
	listed, usable map[string]int
}

func (c *itemCounts) add(kind string, allowed bool) {
	if c.listed == nil {
		c.listed, c.usable = make(map[string]int), make(map[string]int)
	}
	if c.listed[kind] == 0 {
		c.kinds = append(c.kinds, kind)
	}
	c.listed[kind]++
	if allowed {
		c.usable[kind]++
	}
}

// usableOnly is "4 tools, 1 prompts", or "nothing".
func (c itemCounts) usableOnly() string {
	if len(c.kinds) == 0 {
		return "nothing"
	}
	parts := make([]string, len(c.kinds))
	for i, kind := range c.kinds {
		parts[i] = fmt.Sprintf("%d %s", c.usable[kind], kind)
	}
	return strings.Join(parts, ", ")
}

// String is "4 of 12 tools, 1 of 1 prompts", or "nothing listed".
func (c itemCounts) String() string {
	if len(c.kinds) == 0 {
		return "nothing listed"
	}
	parts := make([]string, len(c.kinds))
	for i, kind := range c.kinds {
		parts[i] = fmt.Sprintf("%d of %d %s", c.usable[kind], c.listed[kind], kind)
	}
	return strings.Join(parts, ", ")
}
