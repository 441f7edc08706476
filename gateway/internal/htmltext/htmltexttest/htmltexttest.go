// Package htmltexttest holds what the tests of tailgate's Go-written
// pages share (the status page in package gateway, the connect pages in
// gateway/oauth), which compare those pages byte for byte with the
// html/template they replaced: the hostile values, a seeded random
// string generator and a description of where two pages differ.
//
// It is a normal package so that both packages' tests can import it, but
// only tests may: no package linked into tailgate imports it.
package htmltexttest

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Hostile are values chosen to break hand-written escaping: markup,
// quotes of both kinds, entities, URL schemes and paths (a target's name
// is written in the connect pages' disconnect form action), percent
// escapes valid and not, NUL, invalid UTF-8, the characters html/template
// treats apart (U+2028, U+FFFD, the noncharacters), template delimiters,
// whitespace, and lengths from nothing to 16 KiB. The last Long of them
// are the long ones (1 KiB and more), for callers that draw those in
// fewer ways or leave them out.
var Hostile = append(hostileShort, hostileLong...)

// Long is how many of Hostile, at its end, are long.
var Long = len(hostileLong)

// hostileShort are the Hostile values under 1 KiB.
var hostileShort = []string{
	"",
	"<script>",
	"<script>alert(1)</script>",
	`"'><img src=x onerror=alert(1)>`,
	`' onmouseover='alert(1)`,
	`" autofocus onfocus="alert(1)`,
	"javascript:alert(1)",
	" JaVaScRiPt:alert(1)",
	"data:text/html,<script>alert(1)</script>",
	"vbscript:msgbox(1)",
	"//evil.example/x",
	"../../../connect",
	"http://a.example/p?q=1&r=2#f",
	"a b\tc\nd",
	"!#$&*+,/:;=?@[]-._~()'",
	"&amp;",
	"&lt;&#34;&#x27;",
	"\x00",
	"a\x00b\x00",
	"\xff\xfe",
	"\xe2<\x80>",
	"\u2028\u2029",
	"\ufffd",
	"\ufdd0\ufdef\ufff0\uffff",
	"\u0085\u00a0\u200b\u202e",
	"%zz",
	"%41",
	"%",
	"a%",
	"%4",
	"%4g",
	"%%41",
	"%2F..%2f%00",
	"%e2%80%a8",
	"{{",
	"}}",
	"{{.}}{{template \"caller\" .}}",
	"{{.}}{{$.Form}}",
	"`",
	"``${x}`",
	"+",
	"1e+21",
	"'",
	`"`,
	"\\",
	"\t\n\r\f\v",
	"</style><script>alert(1)</script>",
	"</title><script>alert(1)</script>",
	"</pre></textarea><!--",
	"-->]]><![CDATA[",
	"é 日本 🙂",
	"tagged-devices",
}

// hostileLong are the Hostile values of 1 KiB and more, up to 16 KiB.
var hostileLong = []string{
	strings.Repeat("x", 1<<14),
	strings.Repeat(`<&>"'+`, 2500),
	strings.Repeat(`<&>"'+%`, 2500),
	strings.Repeat("%zz\x00\xff", 2000),
}

// randomPieces are what Random's strings are mostly made of: the
// characters escaping is about, alone and in the sequences html/template
// treats apart.
var randomPieces = []string{"<", ">", "&", `"`, "'", "+", "\x00", "%", "%4", "%41", "%zz", "%Fa", "{{", "}}", "`", "\u2028", "\ufffd", "\uffff",
	"\ufdd0", "\xff", "\xfe", "\xe2\x80", "javascript:", "&amp;", "/", "?", "#", "=", "(", ")", " ", "\n", "a", "Z", "9", "-", ".", "_", "~",
	"é", "🙂", "tagged-devices"}

// Random makes random strings from a fixed seed (a failure is the same
// on every run) and records which byte values they held, so that a test
// can assert that its strings held all 256.
type Random struct {
	rng  *rand.Rand
	seen [256]bool
}

// NewRandom is a Random seeded with seed1 and seed2 (a PCG's two seeds).
func NewRandom(seed1, seed2 uint64) *Random {
	return &Random{rng: rand.New(rand.NewPCG(seed1, seed2))}
}

// Rand is the generator String draws from, for a test's other random
// choices: drawing them from it too keeps a run one sequence.
func (r *Random) Rand() *rand.Rand { return r.rng }

// String is a random string of bytes of all 256 values, randomPieces and
// pieces of Hostile (not the long ones): mostly short, now and then
// empty or long.
func (r *Random) String() string {
	n := r.rng.IntN(12)
	switch r.rng.IntN(20) {
	case 0:
		return ""
	case 1:
		n = 200 + r.rng.IntN(3000)
	}
	var b strings.Builder
	for range n {
		switch r.rng.IntN(3) {
		case 0:
			b.WriteByte(byte(r.rng.IntN(256)))
		case 1:
			b.WriteString(randomPieces[r.rng.IntN(len(randomPieces))])
		default:
			b.WriteString(Hostile[r.rng.IntN(len(Hostile)-Long)])
		}
	}
	s := b.String()
	for i := range len(s) {
		r.seen[s[i]] = true
	}
	return s
}

// Unseen are the byte values no string of String's held yet, in order;
// none once its strings held all 256.
func (r *Random) Unseen() []byte {
	var unseen []byte
	for b, seen := range r.seen {
		if !seen {
			unseen = append(unseen, byte(b))
		}
	}
	return unseen
}

// FirstDifference says where got first differs from want (a page and the
// template's), with a little of each around it.
func FirstDifference(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	around := func(b []byte) string { return fmt.Sprintf("%q", b[max(i-60, 0):min(i+60, len(b))]) }
	return fmt.Sprintf("at byte %d (lengths %d, template %d):\n got  %s\n want %s", i, len(got), len(want), around(got), around(want))
}
