package relay

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// The targets' lists as the client sees them: joined across targets, names
// prefixed, items policy refuses left out, and the task ids and resource
// URIs of answers prefixed.

// Item is one entry of a list, as policy sees it.
type Item struct {
	// Kind is "tool", "prompt" or "resource".
	Kind string
	// Target serves it.
	Target string
	// Name is the target's own tool or prompt name, or resource URI (or
	// URI template).
	Name string
	// Title is a resource's name.
	Title string
}

// joinLists lists every target's items, every page, with front names.
func (s *Session) joinLists(ctx context.Context, lk listKind, keep func(Item) bool) ([]byte, error) {
	results := make([][]json.RawMessage, len(s.children))
	errs := make([]error, len(s.children))
	hints := make([]*cacheHints, len(s.children))
	var wg sync.WaitGroup
	for i, c := range s.children {
		if !c.init.has(lk.capability) || !c.alive() && s.degrades() {
			continue
		}
		hints[i] = &cacheHints{}
		wg.Go(func() {
			items, err := c.listAll(ctx, lk, hints[i])
			if err == nil {
				items = s.rewriteItems(c, lk, items, keep)
			}
			results[i], errs[i] = items, err
		})
	}
	wg.Wait()
	all := []json.RawMessage{}
	for i, items := range results {
		if errs[i] != nil {
			if s.b.opts.FailureMode == FailOpen {
				s.log.Warn("list failed on one target; leaving it out (failOpen)", "target", s.children[i].target.Name, "err", errs[i])
				continue
			}
			return nil, errs[i]
		}
		all = append(all, items...)
	}
	res := map[string]any{lk.field: all}
	if s.sessionless {
		// The joined list may be cached as long as every part may
		// (SEP-2549): the least ttlMs, 0 if a target gave none; shared
		// between callers only if every target said public and policy
		// did not filter it by the caller's identity.
		ttl, public, some := int64(0), keep == nil, false
		for i, h := range hints {
			if h == nil || errs[i] != nil {
				continue
			}
			switch {
			case !h.hasTTL:
				ttl = 0
			case !some || h.ttlMs < ttl:
				ttl = h.ttlMs
			}
			public = public && h.scoped && !h.private
			some = true
		}
		scope := "private"
		if public && some {
			scope = "public"
		}
		res["resultType"], res["ttlMs"], res["cacheScope"] = "complete", ttl, scope
	}
	return json.Marshal(res)
}

// rewriteItems prefixes the items' names and drops what keep refuses.
func (s *Session) rewriteItems(c *child, lk listKind, items []json.RawMessage, keep func(Item) bool) []json.RawMessage {
	out := items[:0]
	for _, it := range items {
		im := &jsonrpc.Message{Raw: it}
		sp := im.Field(jsonrpc.Span{Start: 0, End: len(it)}, lk.key)
		name := im.String(sp)
		if keep != nil {
			item := Item{Kind: lk.kind, Target: c.target.Name, Name: name}
			if lk.kind == "resource" {
				item.Title = im.String(im.Field(jsonrpc.Span{Start: 0, End: len(it)}, "name"))
			}
			if !keep(item) {
				continue
			}
		}
		if s.prefixed && sp.Has() {
			exposed := s.exposed(c, name)
			if lk.kind == "resource" {
				exposed = s.exposedURI(c, name)
			}
			it = im.Replace(sp, jsonrpc.Quote(exposed))
		}
		out = append(out, it)
	}
	return out
}

// rewriteList is rewriteItems on one child's list response, which keeps
// every other field (nextCursor, _meta, …) as it came.
func (s *Session) rewriteList(c *child, lk listKind, res *jsonrpc.Message, frontID []byte, keep func(Item) bool) []byte {
	if !res.Result.Has() {
		return res.Replace(res.ID, frontID)
	}
	var result map[string]json.RawMessage
	var items []json.RawMessage
	if json.Unmarshal(res.Bytes(res.Result), &result) != nil || json.Unmarshal(result[lk.field], &items) != nil {
		return res.Replace(res.ID, frontID)
	}
	items = s.rewriteItems(c, lk, items, keep)
	if items == nil {
		items = []json.RawMessage{}
	}
	result[lk.field], _ = json.Marshal(items)
	if _, ok := result["cacheScope"]; (ok || s.sessionless) && keep != nil {
		// Filtered by the caller's identity: another caller's cache must
		// not serve it (SEP-2549), whatever the target said.
		result["cacheScope"] = json.RawMessage(`"private"`)
	}
	b, _ := json.Marshal(result)
	return jsonrpc.ResultMessage(frontID, b)
}

// rewriteContents prefixes the URIs of a resources/read result.
func (s *Session) rewriteContents(c *child, res *jsonrpc.Message, frontID []byte) []byte {
	var result map[string]json.RawMessage
	var contents []json.RawMessage
	if !res.Result.Has() || json.Unmarshal(res.Bytes(res.Result), &result) != nil || json.Unmarshal(result["contents"], &contents) != nil {
		return res.Replace(res.ID, frontID)
	}
	for i, it := range contents {
		im := &jsonrpc.Message{Raw: it}
		if sp := im.Field(jsonrpc.Span{Start: 0, End: len(it)}, "uri"); sp.Has() {
			contents[i] = im.Replace(sp, jsonrpc.Quote(s.exposedURI(c, im.String(sp))))
		}
	}
	result["contents"], _ = json.Marshal(contents)
	b, _ := json.Marshal(result)
	return jsonrpc.ResultMessage(frontID, b)
}

// Tools lists every target's tools as the client sees them (names
// prefixed where they are), every page, for what tailgate must know of a
// tool itself: the x-mcp-header bindings of its input schema.
func (s *Session) Tools(ctx context.Context) ([]json.RawMessage, error) {
	lk := listKinds["tools/list"]
	var all []json.RawMessage
	for _, c := range s.children {
		if !c.init.has(lk.capability) || !c.alive() && s.degrades() {
			continue
		}
		// tailgate's own request, on a caller's path: bounded.
		lctx, cancel := context.WithTimeout(ctx, c.ownTimeout)
		items, err := c.listAll(lctx, lk, nil)
		cancel()
		if err != nil && s.b.opts.FailureMode == FailOpen {
			s.log.Warn("tools/list failed on one target; leaving it out (failOpen)", "target", c.target.Name, "err", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		all = append(all, s.rewriteItems(c, lk, items, nil)...)
	}
	return all, nil
}

// rewriteTaskID prefixes the task id of a result that names a task
// (resultType "task", or a task as tasks/get returns it).
func (s *Session) rewriteTaskID(c *child, res *jsonrpc.Message, frontID []byte) []byte {
	id := res.Path("result", "taskId")
	if !id.Has() {
		id = res.Path("result", "task", "taskId")
	}
	if !id.Has() {
		return res.Replace(res.ID, frontID)
	}
	if res.ID.Start < id.Start {
		return res.Replace2(res.ID, frontID, id, jsonrpc.Quote(c.target.Name+nameSep+res.String(id)))
	}
	return res.Replace2(id, jsonrpc.Quote(c.target.Name+nameSep+res.String(id)), res.ID, frontID)
}

// itemKey is the string field key of a list item.
func itemKey(item json.RawMessage, key string) string {
	im := &jsonrpc.Message{Raw: item}
	return im.String(im.Field(jsonrpc.Span{Start: 0, End: len(item)}, key))
}
