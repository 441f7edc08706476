package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"

	"github.com/yosida95/uritemplate/v3"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// tailgate's own list lookups at a child, and their caches: the tool,
// prompt and resource names it lists, asked once and kept until it says
// they changed, for routing, policy and metric labels.

// offers reports whether c lists a tool or prompt named name. The list is
// asked once and kept until the child says it changed.
func (c *child) offers(ctx context.Context, kind, name string) bool {
	names, err := c.listNames(ctx, kind)
	return err == nil && names[name]
}

// lookup is one of tailgate's own list requests to a child: it runs
// detached from whoever first needed it, bounded by the child's
// ownTimeout, so that a caller that leaves does not fail the others and a
// child that never answers holds nobody past the bound.
type lookup struct {
	done   chan struct{}
	names  map[string]bool
	titles *resourceNames
	err    error
}

// wait waits for l's answer, or for ctx.
func (l *lookup) wait(ctx context.Context) error {
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startLookup returns the lookup of key in flight, or starts fill as a new
// one. fill keeps what it learns if the lists did not change meanwhile
// (gen is the list generation when it started).
func (c *child) startLookup(key string, fill func(ctx context.Context, l *lookup, gen uint64)) *lookup {
	c.namesMu.Lock()
	defer c.namesMu.Unlock()
	if l := c.lookups[key]; l != nil {
		return l
	}
	l := &lookup{done: make(chan struct{})}
	if c.lookups == nil {
		c.lookups = make(map[string]*lookup)
	}
	c.lookups[key] = l
	gen := c.namesGen
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.ownTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.conn.Done(): // a grandchild may keep stdout open
				cancel()
			case <-ctx.Done():
			}
		}()
		fill(ctx, l, gen)
		c.namesMu.Lock()
		if c.lookups[key] == l {
			delete(c.lookups, key)
		}
		c.namesMu.Unlock()
		close(l.done)
	}()
	return l
}

// listNames is the set of names c lists for kind ("tool" or "prompt"),
// waiting for the list (as long as ctx and c's ownTimeout allow) if it is
// not known yet.
func (c *child) listNames(ctx context.Context, kind string) (map[string]bool, error) {
	if n, ok := c.knownNames(kind); ok {
		return n, nil
	}
	l := c.lookupNames(kind)
	if err := l.wait(ctx); err != nil {
		return nil, err
	}
	return l.names, nil
}

// knownNames is the set of names c lists for kind if tailgate knows it
// already; if not, it starts asking and reports false at once.
func (c *child) knownNames(kind string) (map[string]bool, bool) {
	c.namesMu.Lock()
	n, ok := c.names[kind]
	c.namesMu.Unlock()
	if !ok {
		c.lookupNames(kind)
	}
	return n, ok
}

// lookupNames asks c for its list of kind, unless that is being asked.
func (c *child) lookupNames(kind string) *lookup {
	return c.startLookup(kind, func(ctx context.Context, l *lookup, gen uint64) {
		// The lock is not held while the child is asked: its reader takes
		// it to drop the cache on list_changed, and must stay free to
		// deliver the answer.
		lk := listKinds[kind+"s/list"]
		names := make(map[string]bool)
		if c.init.has(lk.capability) {
			items, err := c.listAll(ctx, lk, nil)
			if err != nil {
				l.err = err
				return
			}
			for _, it := range items {
				names[itemKey(it, lk.key)] = true
			}
		}
		l.names = names
		c.namesMu.Lock()
		if c.namesGen == gen { // not changed while asked
			if c.names == nil {
				c.names = make(map[string]map[string]bool)
			}
			c.names[kind] = names
		}
		c.namesMu.Unlock()
	})
}

// listChanged drops the cached names; a lookup in flight may answer from
// before the change, so the next one who asks starts another.
func (c *child) listChanged() {
	c.namesMu.Lock()
	c.names, c.titles, c.lookups = nil, nil, nil
	c.namesGen++
	c.namesMu.Unlock()
}

// resourceNames are the names a child lists for its resources and
// resource templates.
type resourceNames struct {
	byURI     map[string]string // resource URI, or URI template → name
	templates []resourceTemplate
}

type resourceTemplate struct {
	re   *regexp.Regexp // matches the URIs the template expands to
	name string
}

// names are the names listed for uri: a resource's, a template's (uri
// being the template), or those of every template uri is an expansion of
// (templates may overlap: each one's rules must hold).
func (n *resourceNames) names(uri string) []string {
	if name, ok := n.byURI[uri]; ok {
		return []string{name}
	}
	var names []string
	for _, t := range n.templates {
		if t.re.MatchString(uri) && !slices.Contains(names, t.name) {
			names = append(names, t.name)
		}
	}
	return names
}

// resourceTitles are the names c lists for the resource at uri (or the
// templates it expands, or the template uri), none if it lists none. Like
// listNames, the lists are asked once and kept until they change; a list
// that fails is an error, so that a policy on names cannot be sidestepped
// by a failing list (a server without resource templates, which answers
// their list -32601, lists none).
func (c *child) resourceTitles(ctx context.Context, uri string) ([]string, error) {
	c.namesMu.Lock()
	titles := c.titles
	c.namesMu.Unlock()
	if titles != nil {
		return titles.names(uri), nil
	}
	l := c.startLookup("resource", func(ctx context.Context, l *lookup, gen uint64) {
		titles := &resourceNames{byURI: make(map[string]string)}
		if c.init.has("resources") {
			for _, list := range []struct{ method, key string }{{"resources/list", "uri"}, {"resources/templates/list", "uriTemplate"}} {
				items, err := c.listAll(ctx, listKinds[list.method], nil)
				if err != nil && !(list.key == "uriTemplate" && isMethodNotFound(err)) {
					l.err = fmt.Errorf("%s: %w", list.method, err)
					return
				}
				for _, it := range items {
					key, name := itemKey(it, list.key), itemKey(it, "name")
					titles.byURI[key] = name
					if list.key == "uriTemplate" {
						if t, err := uritemplate.New(key); err == nil {
							titles.templates = append(titles.templates, resourceTemplate{t.Regexp(), name})
						}
					}
				}
			}
		}
		l.titles = titles
		c.namesMu.Lock()
		if c.namesGen == gen {
			c.titles = titles
		}
		c.namesMu.Unlock()
	})
	if err := l.wait(ctx); err != nil {
		return nil, err
	}
	return l.titles.names(uri), nil
}

// cacheHints are what a child said of caching its list (SEP-2549): the
// least ttlMs of its pages, and whether any page was private.
type cacheHints struct {
	ttlMs   int64
	hasTTL  bool
	private bool
	scoped  bool // some page said a cacheScope
}

// add takes in one page's hints.
func (h *cacheHints) add(page map[string]json.RawMessage) {
	var ttl int64
	if raw, ok := page["ttlMs"]; ok && json.Unmarshal(raw, &ttl) == nil {
		if !h.hasTTL || ttl < h.ttlMs {
			h.ttlMs = ttl
		}
		h.hasTTL = true
	}
	if raw, ok := page["cacheScope"]; ok {
		h.scoped = true
		h.private = h.private || string(raw) != `"public"`
	}
}

// listAll collects every page of a list from c, and its cache hints into
// hints if not nil.
func (c *child) listAll(ctx context.Context, lk listKind, hints *cacheHints) ([]json.RawMessage, error) {
	var all []json.RawMessage
	cursor := ""
	for range 1000 {
		params := []byte("{")
		if cursor != "" {
			params = fmt.Appendf(params, `"cursor":%s`, jsonrpc.Quote(cursor))
		}
		if c.init.speaks2026 {
			// A sessionless child needs every request to say who asks.
			if cursor != "" {
				params = append(params, ',')
			}
			params = append(params, modernMeta...)
		}
		params = append(params, '}')
		res, err := c.request(ctx, lk.method, params)
		if err != nil {
			return nil, c.failure(ctx, lk.method, err)
		}
		if res.Error.Has() {
			return nil, &WireError{Raw: bytes.Clone(res.Bytes(res.Error))}
		}
		var page map[string]json.RawMessage
		if err := json.Unmarshal(res.Bytes(res.Result), &page); err != nil {
			return nil, fmt.Errorf("target %q: %s: %w", c.target.Name, lk.method, err)
		}
		var items []json.RawMessage
		if raw := page[lk.field]; len(raw) > 0 {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("target %q: %s: %w", c.target.Name, lk.method, err)
			}
		}
		all = append(all, items...)
		if hints != nil {
			hints.add(page)
		}
		cursor = ""
		if raw := page["nextCursor"]; len(raw) > 0 {
			json.Unmarshal(raw, &cursor)
		}
		if cursor == "" {
			return all, nil
		}
	}
	return all, fmt.Errorf("target %q: %s: more than 1000 pages", c.target.Name, lk.method)
}
