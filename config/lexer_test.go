package config

import (
	"reflect"
	"strings"
	"testing"
)

// flat renders a directive tree as "line:name|arg|arg" lines, blocks indented.
func flat(dirs []*directive, indent string) []string {
	var out []string
	for _, d := range dirs {
		s := indent + strings.Join(append([]string{itoa(d.pos.Line) + ":" + d.name}, d.args...), "|")
		if d.hasBlock {
			s += " {"
		}
		out = append(out, s)
		if d.hasBlock {
			out = append(out, flat(d.block, indent+"  ")...)
			out = append(out, indent+"} "+itoa(d.end.Line))
		}
	}
	return out
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func TestLexer(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"empty", "", nil},
		{"comment only", "# nothing\n  # here", nil},
		{"simple", "a b c;", []string{"1:a|b|c"}},
		{"tabs and CRLF", "a\tb\r\nc;\r\n", []string{"2:a|b|c"}},
		{"line of the semicolon", "log_format x\n 'a'\n 'b';", []string{"3:log_format|x|a|b"}},
		{"block", "s {\n  a 1;\n}\n", []string{"1:s {", "  2:a|1", "} 3"}},
		{"nested", "a{b{c;}}", []string{"1:a {", "  1:b {", "    1:c", "  } 1", "} 1"}},
		{"comment after word", "a b; # c;\nd;", []string{"1:a|b", "2:d"}},
		{"hash inside word", "a b#c;", []string{"1:a|b#c"}},
		{"double quotes", `a "b c" "";`, []string{"1:a|b c|"}},
		{"single quotes", `a 'b "c"';`, []string{`1:a|b "c"`}},
		{"quoted then semicolon", `a "b";`, []string{"1:a|b"}},
		{"quoted then brace", `a "b"{}`, []string{"1:a|b {", "} 1"}},
		{"quoted then paren", `a "b")c;`, []string{"1:a|b|)c"}},
		{"escapes", `a "q\"s\'b\\t\tr\rn\nx\y";`, []string{"1:a|q\"s'b\\t\tr\rn\nx\\y"}},
		{"unquoted escapes keep unknown backslashes", `a b\ c\;d;`, []string{`1:a|b\ c\;d`}},
		{"variable braces", "a ${host}x{}", []string{"1:a|${host}x {", "} 1"}},
		{"variable at start", "a ${x};", []string{"1:a|${x}"}},
		{"quote in word", `a b"c";`, []string{`1:a|b"c"`}},
		{"multi-line quote counts lines", "a 'x\ny';\nb;", []string{"2:a|x\ny", "3:b"}},
		{"brace closing", "a {}\nb;", []string{"1:a {", "} 1", "2:b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dirs, err := parseFile("a.conf", []byte(tt.src))
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if got := flat(dirs, ""); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestLexerErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"lone semicolon", "a;\n;", `unexpected ";" in a.conf:2`},
		{"lone brace", "\n{", `unexpected "{" in a.conf:2`},
		{"close with args", "a {\nb }", `unexpected "}" in a.conf:2`},
		{"stray close", "a;\n}\n", `unexpected "}" in a.conf:2`},
		{"eof in directive", "a b", `unexpected end of file, expecting ";" or "}" in a.conf:1`},
		{"eof in quote", "a 'b\n\n", `unexpected end of file, expecting ";" or "}" in a.conf:3`},
		{"eof in block", "stream {\n  a;\n", `unexpected end of file, expecting "}" in a.conf:3`},
		{"eof after backslash", `a \`, `unexpected end of file, expecting ";" or "}" in a.conf:1`},
		{"char after quote", `a "b"c;`, `unexpected "c" in a.conf:1`},
		{"hash after quote", "a 'b'#\n;", `unexpected "#" in a.conf:1`},
		{"too deep", strings.Repeat("a{", 70) + strings.Repeat("}", 70), `blocks are nested more than 64 deep in a.conf:1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFile("a.conf", []byte(tt.src))
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestRawBytesInMessages(t *testing.T) {
	// nginx prints names as they are, not Go-quoted.
	_, err := testLoader().Parse("a.conf", []byte("caf\xc3\xa9\\x;"))
	if want := "unknown directive \"caf\xc3\xa9\\x\" in a.conf:1"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
