package htmltext

import (
	"html/template"
	"strings"
	"testing"
)

// TestEscapeAndURLPathAsHTMLTemplate checks Escape and URLPath against
// html/template itself: each value is executed as {{.}} in text (Escape
// is what html/template writes there) and in the path of a double-quoted
// href (Escape of URLPath is what it writes there).
func TestEscapeAndURLPathAsHTMLTemplate(t *testing.T) {
	text := template.Must(template.New("text").Parse(`<p>{{.}}</p>`))
	href := template.Must(template.New("href").Parse(`<a href="/x/{{.}}">`))
	for _, s := range []string{
		"",
		"plain",
		`<a href="x">&'+`,
		"a b/c?d=e#f",
		"!#$&*+,/:;=?@[]-._~()'",
		"%41",
		"a%41",
		"%41x",
		"%4",
		"%zz",
		"%",
		"\x00",
		"\xff\xe2",
		"\u2028\ufffd\ufdd0",
		"é 🙂",
	} {
		var b strings.Builder
		if err := text.Execute(&b, s); err != nil {
			t.Fatal(err)
		}
		if got, want := Escape(s), strings.TrimSuffix(strings.TrimPrefix(b.String(), "<p>"), "</p>"); got != want {
			t.Errorf("Escape(%q) = %q, html/template wrote %q", s, got, want)
		}
		b.Reset()
		if err := href.Execute(&b, s); err != nil {
			t.Fatal(err)
		}
		if got, want := Escape(URLPath(s)), strings.TrimSuffix(strings.TrimPrefix(b.String(), `<a href="/x/`), `">`); got != want {
			t.Errorf("Escape(URLPath(%q)) = %q, html/template wrote %q", s, got, want)
		}
	}
}
