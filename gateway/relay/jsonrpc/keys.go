package jsonrpc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// A ParseError is a message tailgate will not read, and why.
type ParseError struct {
	// Reason is one word, fit for a metric label: one of the Reason
	// constants.
	Reason string
	// Msg says what is wrong, naming the key or field.
	Msg string
}

func (e *ParseError) Error() string { return e.Msg }

// Reasons of a ParseError.
const (
	ReasonMalformed = "malformed" // not JSON
	ReasonBatch     = "batch"     // a JSON-RPC batch
	ReasonEnvelope  = "envelope"  // JSON, but not a JSON-RPC message
	ReasonAmbiguous = "ambiguous" // a key decoders could read as another
	ReasonKey       = "key"       // a key with a control character, bad UTF-8 or a lone surrogate
	ReasonEncoding  = "encoding"  // bad UTF-8 or a lone surrogate where tailgate judges
	ReasonDepth     = "depth"     // nested deeper than allowed
	ReasonToken     = "token"     // a progress token decoders read differently
)

// ParseReason is the Reason of an error of ParseMessage or
// ParseClientMessage.
func ParseReason(err error) string {
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ReasonMalformed
}

func refuse(reason, format string, args ...any) error {
	return &ParseError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// nameSet is the keys tailgate reads in one kind of object, with their
// loose folds (see appendFold).
type nameSet struct {
	names  []string
	folded []string
}

func newNameSet(names ...string) nameSet {
	ns := nameSet{names: names}
	for _, n := range names {
		ns.folded = append(ns.folded, string(appendFold(nil, []byte(n), true)))
	}
	return ns
}

// The _meta keys of MCP 2026-07-28 that tailgate reads.
const (
	// MetaProtocolVersion, MetaClientCapabilities and MetaClientInfo are
	// how a sessionless request says its protocol version and its client.
	MetaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	MetaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	MetaClientInfo         = "io.modelcontextprotocol/clientInfo"
	// MetaSubscriptionID tags the notifications of a subscriptions/listen:
	// the listen request's id, as the target saw it.
	MetaSubscriptionID = "io.modelcontextprotocol/subscriptionId"
)

// The keys tailgate, or the decoders of the servers behind it, read in
// each object whose keys are checked. A key that folds to one of these
// without being it is refused even alone: a case-insensitive decoder
// reads "Method" as method where tailgate sees no method at all.
var (
	envelopeNames = newNameSet("jsonrpc", "id", "method", "params", "result", "error")
	paramsNames   = newNameSet("name", "arguments", "_meta", "uri", "taskId", "ref", "argument", "context",
		"cursor", "requestState", "requestId", "progressToken", "progress", "total", "message",
		"protocolVersion", "clientInfo", "capabilities", "logger", "level", "data", "reason",
		"inputResponses", "notifications", "task", "messages", "requestedSchema", "roots")
	metaNames = newNameSet("progressToken", MetaProtocolVersion, MetaClientCapabilities, MetaSubscriptionID,
		"io.modelcontextprotocol/related-task")
	refNames = newNameSet("type", "name", "uri")
	// Policy does not read arguments yet: their keys are checked against
	// each other only.
	argumentNames nameSet
)

// keyChecker checks the keys of one object as they are scanned; err is
// the first problem.
type keyChecker struct {
	where string
	names *nameSet
	// small holds the first n keys; folded the folds of the keys once
	// there are more than fit in small: pairwise comparison would be
	// quadratic. (No slice of small is kept in the checker: it would move
	// the checker to the heap.)
	small  [16][]byte
	n      int
	folded map[string][]byte
	err    error
}

func (c *keyChecker) add(rawKey, key []byte) {
	if c.err != nil {
		return
	}
	if err := checkKey(c.where, rawKey, key); err != nil {
		c.err = err
		return
	}
	if len(c.names.names) > 0 && !c.names.has(key) {
		var buf [64]byte
		f := appendFold(buf[:0], key, true)
		for i, nf := range c.names.folded {
			if string(f) == nf {
				c.err = refuse(ReasonAmbiguous, "%s: key %q is %q to a case-insensitive decoder", c.where, key, c.names.names[i])
				return
			}
		}
	}
	if c.folded == nil && c.n < len(c.small) {
		for i := range c.n {
			if k := c.small[i]; bytes.EqualFold(k, key) {
				c.err = duplicate(c.where, k, key)
				return
			}
		}
		c.small[c.n] = key
		c.n++
		return
	}
	if c.folded == nil {
		c.folded = make(map[string][]byte, 2*c.n)
		for _, k := range c.small[:c.n] {
			c.folded[string(appendFold(nil, k, false))] = k
		}
	}
	f := string(appendFold(nil, key, false))
	if k, ok := c.folded[f]; ok {
		c.err = duplicate(c.where, k, key)
		return
	}
	c.folded[f] = key
}

func duplicate(where string, a, b []byte) error {
	if bytes.Equal(a, b) {
		return refuse(ReasonAmbiguous, "%s: duplicate key %q", where, a)
	}
	return refuse(ReasonAmbiguous, "%s: keys %q and %q are the same key to a case-insensitive decoder", where, a, b)
}

func (ns *nameSet) has(key []byte) bool {
	for _, n := range ns.names {
		if string(key) == n {
			return true
		}
	}
	return false
}

// checkKey refuses a key that decoders read differently or that is
// meant to confuse: invalid UTF-8 (Go reads U+FFFD, Python refuses the
// message), an unpaired surrogate escape (Go reads U+FFFD, JavaScript and
// Python keep it), a control character, C1 included (go-sdk's decoder
// once matched "fi\u0000eld" to field).
func checkKey(where string, rawKey, key []byte) error {
	for i := 0; i < len(rawKey); i++ {
		c := rawKey[i]
		if c == 0x7f {
			return refuse(ReasonKey, "%s: key %q has a control character", where, key)
		}
		if c >= utf8.RuneSelf || c == '\\' {
			if !utf8.Valid(rawKey) {
				return refuse(ReasonKey, "%s: a key is not valid UTF-8", where)
			}
			if c == '\\' {
				if _, lone := unescape(rawKey); lone {
					return refuse(ReasonKey, "%s: key %q has an unpaired surrogate", where, rawKey)
				}
			}
			for _, r := range string(key) {
				if unicode.IsControl(r) {
					return refuse(ReasonKey, "%s: key %q has a control character", where, key)
				}
			}
			return nil
		}
		// A raw C0 control character is not JSON: skipString refused it.
	}
	return nil
}

// checkString refuses a judged string value (raw JSON, with its quotes)
// that decoders read differently: invalid UTF-8 or an unpaired surrogate.
func checkString(what string, raw []byte) error {
	for _, c := range raw {
		if c >= utf8.RuneSelf || c == '\\' {
			if !utf8.Valid(raw) {
				return refuse(ReasonEncoding, "%s is not valid UTF-8", what)
			}
			if _, lone := unescape(raw[1 : len(raw)-1]); lone {
				return refuse(ReasonEncoding, "%s has an unpaired surrogate", what)
			}
			return nil
		}
	}
	return nil
}

// unescape decodes a JSON string's contents (between its quotes, already
// checked by skipString) as encoding/json does: an unpaired surrogate
// becomes U+FFFD, and lone reports it.
func unescape(s []byte) (out []byte, lone bool) {
	out = make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16IsSurrogate(r) {
				if r < 0xdc00 && i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2 := hex4(s[i+2 : i+6]); 0xdc00 <= r2 && r2 < 0xe000 {
						out = utf8.AppendRune(out, 0x10000+(r-0xd800)<<10+(r2-0xdc00))
						i += 6
						continue
					}
				}
				lone = true
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // " \ /
			out = append(out, s[i+1])
		}
		i += 2
	}
	return out, lone
}

func utf16IsSurrogate(r rune) bool { return 0xd800 <= r && r < 0xe000 }

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendFold appends the fold of key: equal folds are equal keys to
// bytes.EqualFold, that is to Go's encoding/json (as its foldName). loose
// also drops '_' and '-', as encoding/json/v2 matches names
// case-insensitively (MatchCaseInsensitiveNames, `case:ignore`).
func appendFold(out, key []byte, loose bool) []byte {
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			if !loose || c != '_' && c != '-' {
				out = append(out, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(key[i:])
		out = utf8.AppendRune(out, foldRune(r))
		i += n
	}
	return out
}

// foldRune is the smallest rune of r's simple fold orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// safeInteger reports whether a JSON number is an integer every decoder
// reads exactly: no fraction, no exponent, not -0, within ±(2^53-1).
func safeInteger(n []byte) bool {
	if len(n) == 0 || len(n) > 17 || bytes.ContainsAny(n, ".eE") || string(n) == "-0" {
		return false
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	return err == nil && -(1<<53-1) <= v && v <= 1<<53-1
}

// clipped is a value for an error message, cut short.
func clipped(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
