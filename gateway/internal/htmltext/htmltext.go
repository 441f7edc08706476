// Package htmltext escapes values for the pages tailgate writes in Go
// (the status page, the connect pages) exactly as html/template escaped
// them where they stand: executing any template makes the linker keep
// every exported method of every type in the binary (about 13 MB of
// tailgate's), so the pages are not templates, and their tests compare
// them byte for byte with the templates they replaced.
package htmltext

import (
	"fmt"
	"strings"
)

// escaper replaces what html/template's HTML escaper replaces in text and
// quoted attribute values, with the same entities.
var escaper = strings.NewReplacer(
	"\x00", "\uFFFD",
	`"`, "&#34;",
	"&", "&amp;",
	"'", "&#39;",
	"+", "&#43;",
	"<", "&lt;",
	">", "&gt;",
)

// Escape is s escaped for HTML text, RCDATA or a quoted attribute value,
// as html/template escapes a string there.
func Escape(s string) string { return escaper.Replace(s) }

// URLPath is s as html/template normalizes a value in a URL's path:
// bytes other than RFC 3986's unreserved and reserved characters are
// percent-encoded, as are ' ( and ), and a % that does not start an
// escape followed by more of s. The result still goes through Escape in
// an attribute.
func URLPath(s string) string {
	isHex := func(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&*+,/:;=?@[]-._~", c) >= 0:
			b.WriteByte(c)
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}
