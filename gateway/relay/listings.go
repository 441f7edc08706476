package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// What each target lists, whole and unfiltered, for tailgate's own use:
// policy explain (gateway/explain.go) judges every item as a list filter
// would (Item), to say what a caller may use and which rule decided.

// Listing is what one target lists: its tools, prompts, resources and
// resource templates, every page. Err says why the target could not be
// listed (it failed to start, or a list failed); what was listed before
// a list failed is kept.
type Listing struct {
	Target            string
	Tools             []ListedItem
	Prompts           []ListedItem
	Resources         []ListedItem
	ResourceTemplates []ListedItem
	Err               error
	// Skipped is why Backend.Listings did not start the target, if it
	// did not (then nothing is listed, and Err is nil).
	Skipped string
}

// ListedItem is one item of a target's list: as policy judges it (a
// resource template's Name is its URI template, its Title the template's
// name), and the name or URI the client sees.
type ListedItem struct {
	Item
	// Exposed is the name (or URI) the client sees: the target's own, or
	// prefixed with the target's name where the backend prefixes names.
	Exposed string
}

// listingKinds are the lists a Listing holds, in the order it shows them.
var listingKinds = []string{"tools/list", "prompts/list", "resources/list", "resources/templates/list"}

// Listings lists what each target of the session offers, in the backend's
// target order; a target the session does not have (failOpen left it
// out) is listed with why. Each list is one of tailgate's own requests,
// bounded as such (the target's ownTimeout).
func (s *Session) Listings(ctx context.Context) []Listing {
	out := make([]Listing, len(s.b.targets))
	var wg sync.WaitGroup
	for i := range s.b.targets {
		name := s.b.targets[i].Name
		out[i].Target = name
		c := s.child(name)
		if c == nil {
			out[i].Err = s.missing[name]
			if out[i].Err == nil {
				out[i].Err = fmt.Errorf("target %q: not running", name)
			}
			continue
		}
		wg.Go(func() { s.listChild(ctx, c, &out[i]) })
	}
	wg.Wait()
	return out
}

// Listing lists what the session's child of target offers, as Listings
// does; false if the session has no running child of it.
func (s *Session) Listing(ctx context.Context, target string) (Listing, bool) {
	c := s.child(target)
	if c == nil || !c.alive() {
		return Listing{}, false
	}
	l := Listing{Target: target}
	s.listChild(ctx, c, &l)
	return l, true
}

// child is the session's child of the target named name, if it has one.
func (s *Session) child(name string) *child {
	for _, c := range s.children {
		if c.target.Name == name {
			return c
		}
	}
	return nil
}

// listChild fills l with every list c offers, stopping at the first that
// fails. A server without resource templates, which answers their list
// -32601, lists none.
func (s *Session) listChild(ctx context.Context, c *child, l *Listing) {
	for _, method := range listingKinds {
		lk := listKinds[method]
		if !c.init.has(lk.capability) {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, c.ownTimeout)
		items, err := c.listAll(lctx, lk, nil)
		cancel()
		if err != nil && !(method == "resources/templates/list" && isMethodNotFound(err)) {
			l.Err = fmt.Errorf("target %q: %s: %w", c.target.Name, method, err)
			return
		}
		listed := make([]ListedItem, 0, len(items))
		for _, it := range items {
			item := Item{Kind: lk.kind, Target: c.target.Name, Name: itemKey(it, lk.key)}
			exposed := s.exposed(c, item.Name)
			if lk.kind == "resource" {
				item.Title = itemKey(it, "name")
				exposed = s.exposedURI(c, item.Name)
			}
			listed = append(listed, ListedItem{Item: item, Exposed: exposed})
		}
		switch method {
		case "tools/list":
			l.Tools = listed
		case "prompts/list":
			l.Prompts = listed
		case "resources/list":
			l.Resources = listed
		default:
			l.ResourceTemplates = listed
		}
	}
}

// Listings starts each target once for identity, as a session of its own
// would (a remote target is dialled), lists what each offers
// (Session.Listings) and stops them all before it returns; Close of the
// backend stops them too. A target for which skip gives a reason is not
// started, and its Listing says why (Skipped): a target whose children
// start with the caller's own secrets cannot be started for a caller
// that is only asked about. A target that fails to start is listed with
// its error, and the others all the same. It fails only if the backend
// is closed.
func (b *Backend) Listings(ctx context.Context, identity Identity, skip func(*Target) string) ([]Listing, error) {
	s := b.newSession(OpenParams{ID: "explain", Identity: identity})
	children := make([]*child, len(b.targets))
	errs := make([]error, len(b.targets))
	skipped := make([]string, len(b.targets))
	var wg sync.WaitGroup
	for i := range b.targets {
		t := &b.targets[i]
		if skipped[i] = skip(t); skipped[i] != "" {
			errs[i] = errors.New(skipped[i])
			continue
		}
		wg.Go(func() {
			children[i], errs[i] = b.startChild(ctx, t, identityFor(t, identity), nil, "explain", false)
		})
	}
	wg.Wait()
	for i, c := range children {
		if c == nil {
			s.missing[b.targets[i].Name] = errs[i]
			continue
		}
		c.owner.Store(s)
		s.children = append(s.children, c)
	}
	// Tracked once started (not while s.children grows), so that the
	// backend's Close stops them from here on; before, Listings stops
	// them itself.
	if err := b.add(s); err != nil {
		s.end(nil)
		return nil, err
	}
	defer s.Close()
	listings := s.Listings(ctx)
	for i := range listings {
		if skipped[i] != "" {
			listings[i].Err, listings[i].Skipped = nil, skipped[i]
		}
	}
	return listings, nil
}
