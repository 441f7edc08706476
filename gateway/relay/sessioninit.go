package relay

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// What a session tells its client of its targets as one server: the
// initialize result and the server/discover result, capabilities joined.

// InitializeResult is the result of the client's initialize: with one
// target, the target's own, as it sent it; with several, tailgate's, with
// the capabilities joined, the lowest protocol version and each target's
// instructions marked with its name.
func (s *Session) InitializeResult() []byte { return s.init }

func (s *Session) initializeResult() []byte {
	if len(s.b.targets) == 1 && len(s.children) == 1 && s.children[0].bridge != toModern {
		return s.children[0].init.raw
	}
	caps := map[string]any{}
	var instructions []string
	version := ""
	serverInfo := any(map[string]any{"name": "tailgate", "version": s.b.opts.Version})
	for _, c := range s.children {
		v := c.init.version
		if c.bridge == toModern {
			// Spoken to in 2026-07-28 for this client (bridge.go): the
			// client's own version is the session's.
			v = c.clientVersion
			if len(s.children) == 1 && len(c.init.serverInfo) > 0 {
				serverInfo = c.init.serverInfo
			}
		}
		if version == "" || v < version {
			version = v
		}
		if c.init.instructions != "" {
			instructions = append(instructions, fmt.Sprintf("[%s] %s", c.target.Name, c.init.instructions))
		}
		for k, raw := range c.init.capabilities {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				caps[k] = mergeJSON(caps[k], v)
			}
		}
	}
	for _, name := range slices.Sorted(mapKeys(s.missing)) {
		instructions = append(instructions, fmt.Sprintf("[tailgate] target %s is unavailable in this session: %v", name, s.missing[name]))
	}
	res := map[string]any{
		"protocolVersion": version,
		"capabilities":    caps,
		"serverInfo":      serverInfo,
	}
	if len(instructions) > 0 {
		res["instructions"] = strings.Join(instructions, "\n\n")
	}
	b, _ := json.Marshal(res)
	return b
}

// discoverResult is server/discover's result for the targets as one
// server: capabilities joined as for initialize, the versions every target
// speaks, each target's instructions marked with its name.
func (s *Session) discoverResult() []byte {
	caps := map[string]any{}
	var instructions []string
	var versions []string
	for i, c := range s.children {
		if i == 0 {
			versions = append(versions, c.init.versions...)
		} else {
			versions = slices.DeleteFunc(versions, func(v string) bool { return !slices.Contains(c.init.versions, v) })
		}
		if c.init.instructions != "" {
			if len(s.children) == 1 {
				instructions = append(instructions, c.init.instructions)
			} else {
				instructions = append(instructions, fmt.Sprintf("[%s] %s", c.target.Name, c.init.instructions))
			}
		}
		for k, raw := range c.init.capabilities {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				caps[k] = mergeJSON(caps[k], v)
			}
		}
	}
	if versions == nil {
		versions = []string{}
	}
	serverInfo := any(map[string]any{"name": "tailgate", "version": s.b.opts.Version})
	if len(s.children) == 1 && len(s.children[0].init.serverInfo) > 0 {
		serverInfo = s.children[0].init.serverInfo
	}
	res := map[string]any{
		"resultType":        "complete",
		"ttlMs":             0,
		"cacheScope":        "public",
		"supportedVersions": versions,
		"capabilities":      caps,
		"_meta":             map[string]any{"io.modelcontextprotocol/serverInfo": serverInfo},
	}
	if len(instructions) > 0 {
		res["instructions"] = strings.Join(instructions, "\n\n")
	}
	b, _ := json.Marshal(res)
	return b
}

// needsOwnDiscover reports whether tailgate answers server/discover for the
// session's targets rather than passing it to the one target.
func (s *Session) needsOwnDiscover() bool {
	return len(s.children) > 1 || len(s.children) == 1 && !s.children[0].init.speaks2026
}

// mergeJSON joins two capability values: objects key by key, booleans by
// "or"; otherwise the first one stays.
func mergeJSON(a, b any) any {
	switch av := a.(type) {
	case nil:
		return b
	case map[string]any:
		if bv, ok := b.(map[string]any); ok {
			for k, v := range bv {
				av[k] = mergeJSON(av[k], v)
			}
		}
	case bool:
		if bv, ok := b.(bool); ok {
			return av || bv
		}
	}
	return a
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
