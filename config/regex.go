package config

import (
	"fmt"
	"regexp"
	"strings"
)

// compileRegex compiles a map key's regular expression ("~PATTERN" or
// "~*PATTERN", caseless). nginx compiles with PCRE and no options but
// PCRE2_CASELESS; baton uses Go's RE2, which reads most patterns the same
// way, leftmost-first with the same submatches. What RE2 lacks (backreferences,
// lookaround, atomic groups, possessive quantifiers, recursion, verbs) is
// refused by name, and so is "\v", which RE2 reads as a vertical tab where
// PCRE reads any vertical space. It returns the message for the loader, or "".
//
// Differences that stay: "$" matches only at the very end (PCRE also before
// a final newline), and RE2 reads the key as UTF-8, so "." and (?i) treat a
// multi-byte character as one and fold non-ASCII letters, where PCRE without
// its UTF option works on bytes and folds ASCII only.
func compileRegex(pattern string, caseless bool) (*regexp.Regexp, string) {
	if what := pcreOnly(pattern); what != "" {
		return nil, fmt.Sprintf("the regular expression \"%s\" uses %s, which baton does not support "+
			"(its regular expressions are Go's RE2, not PCRE)", pattern, what)
	}
	expr := pattern
	if caseless {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error parsing regexp: ")
		return nil, fmt.Sprintf("invalid regular expression \"%s\": %s", pattern, msg)
	}
	return re, ""
}

// pcreOnly describes the first construct of p that PCRE has and RE2 lacks
// or reads differently, or returns "". It only looks; anything else that
// is wrong with p is left for regexp.Compile to report.
func pcreOnly(p string) string {
	inClass := false
	quantified := false // the token before was a quantifier
	for i := 0; i < len(p); i++ {
		c := p[i]
		afterQuantifier := quantified
		quantified = false
		switch {
		case c == '\\':
			if i+1 == len(p) {
				return ""
			}
			e := p[i+1]
			if e == 'Q' { // \Q...\E is literal text, in RE2 too
				end := strings.Index(p[i+2:], `\E`)
				if end < 0 {
					return ""
				}
				i += 2 + end + 1
				continue
			}
			if what := pcreEscape(e, inClass); what != "" {
				return what
			}
			i++
		case inClass:
			if c == '[' && i+1 < len(p) && strings.IndexByte(":.=", p[i+1]) >= 0 {
				// a POSIX class such as [:alpha:]
				if end := strings.Index(p[i+2:], string(p[i+1])+"]"); end >= 0 {
					i += 2 + end + 1
				}
				continue
			}
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
			j := i + 1
			if j < len(p) && p[j] == '^' {
				j++
			}
			if j < len(p) && p[j] == ']' { // a "]" first is literal
				j++
			}
			i = j - 1
		case c == '(' && strings.HasPrefix(p[i:], "(*"):
			return "a backtracking control verb \"(*\""
		case c == '(' && strings.HasPrefix(p[i:], "(?"):
			if what := pcreGroup(p[i+2:]); what != "" {
				return what
			}
		case c == '*' || c == '+' || c == '?':
			if afterQuantifier && c == '+' {
				return "a possessive quantifier"
			}
			quantified = !afterQuantifier // "a+?" is lazy, not quantified again
		case c == '{':
			if n := repeatLen(p[i:]); n > 0 {
				i += n - 1
				quantified = true
			}
		}
	}
	return ""
}

// pcreEscape describes the escape "\e" if RE2 lacks it or reads it
// differently, or returns "".
func pcreEscape(e byte, inClass bool) string {
	switch e {
	case '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if !inClass { // in a class PCRE reads an octal escape
			return fmt.Sprintf("a backreference \"\\%c\"", e)
		}
	case 'g':
		return "a backreference or subroutine call \"\\g\""
	case 'k':
		return "a named backreference \"\\k\""
	case 'K':
		return "\"\\K\" (reset the match start)"
	case 'G':
		return "\"\\G\" (the first matching position)"
	case 'Z':
		return "\"\\Z\" (the end or before a final newline)"
	case 'R':
		return "\"\\R\" (any newline sequence)"
	case 'X':
		return "\"\\X\" (an extended grapheme cluster)"
	case 'h', 'H':
		return fmt.Sprintf("\"\\%c\" (horizontal space)", e)
	case 'v', 'V':
		return fmt.Sprintf("\"\\%c\" (vertical space; RE2 reads \"\\v\" as a vertical tab)", e)
	case 'N':
		return "\"\\N\" (not a newline)"
	case 'C':
		return "\"\\C\" (one code unit)"
	case 'e':
		return "\"\\e\" (escape; write \"\\x1b\")"
	case 'c':
		return "a control character escape \"\\c\""
	case 'o':
		return "an octal escape \"\\o{...}\""
	}
	return ""
}

// pcreGroup describes the group that starts "(?"+rest if RE2 lacks it, or
// returns "".
func pcreGroup(rest string) string {
	for _, g := range []struct{ prefix, what string }{
		{"=", "a lookahead \"(?=\""},
		{"!", "a negative lookahead \"(?!\""},
		{"<=", "a lookbehind \"(?<=\""},
		{"<!", "a negative lookbehind \"(?<!\""},
		{">", "an atomic group \"(?>\""},
		{"|", "a branch reset group \"(?|\""},
		{"#", "a comment group \"(?#\""},
		{"(", "a conditional group \"(?(\""},
		{"P=", "a named backreference \"(?P=\""},
		{"P>", "a subroutine call \"(?P>\""},
		{"&", "a subroutine call \"(?&\""},
		{"R", "a recursion \"(?R\""},
		{"+", "a subroutine call \"(?+\""},
		{"'", "a named group \"(?'name'\" (write \"(?<name>\")"},
		{"C", "a callout \"(?C\""},
	} {
		if strings.HasPrefix(rest, g.prefix) {
			return g.what
		}
	}
	if rest != "" && (rest[0] >= '0' && rest[0] <= '9' || rest[0] == '-' && len(rest) > 1 && rest[1] >= '0' && rest[1] <= '9') {
		return "a subroutine call \"(?" + rest[:1] + "\""
	}
	if strings.HasPrefix(rest, "<") || strings.HasPrefix(rest, "P<") { // a named group
		return ""
	}
	// option letters: RE2 has i, m, s and U; "x" changes how the rest reads
	for i := 0; i < len(rest) && (rest[i] >= 'a' && rest[i] <= 'z' || rest[i] >= 'A' && rest[i] <= 'Z' || rest[i] == '-' || rest[i] == '^'); i++ {
		if rest[i] == 'x' {
			return "the extended option \"(?x)\""
		}
	}
	return ""
}

// repeatLen returns the length of the counted repetition "{n}", "{n,}" or
// "{n,m}" that s starts with, or 0 when s starts with a literal "{".
func repeatLen(s string) int {
	i := 1
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if digits() == 0 {
		return 0
	}
	if i < len(s) && s[i] == ',' {
		i++
		digits()
	}
	if i < len(s) && s[i] == '}' {
		return i + 1
	}
	return 0
}
