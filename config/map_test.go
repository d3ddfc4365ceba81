package config

import (
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The error and warning texts in this file and in geo_test.go and
// split_test.go were checked against "nginx -t" of nginx 1.22.1 on the
// same configurations, except where a comment says baton differs.

// memLoader is testLoader reading files from memory; names are relative
// to the main file "a.conf", so "x.conf" is read for "include x.conf".
func memLoader(files map[string]string) *Loader {
	ld := testLoader()
	ld.ReadFile = func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
	ld.Glob = func(pattern string) ([]string, error) {
		var out []string
		for name := range files {
			if ok, _ := filepath.Match(pattern, name); ok {
				out = append(out, name)
			}
		}
		return out, nil
	}
	return ld
}

// inStream wraps stream-level text in a valid configuration.
func inStream(body string) string { return "stream {\n" + body + "\n" + okServer + "\n}\n" }

// mapEntries flattens m's entries as "KEY VALUE" with "W" (wildcard) or
// "R" (regex) marks and the line, for comparing.
func mapEntries(m *Map) []string {
	var out []string
	for _, e := range m.Entries {
		kind := "="
		switch {
		case e.Wildcard:
			kind = "W"
		case e.Regex != nil:
			kind = "R"
		}
		out = append(out, kind+" "+e.Key+" "+e.Value+" :"+itoa(e.Pos.Line))
	}
	return out
}

// TestMapStreamMapT reads the map of nginx's stream_map.t.
func TestMapStreamMapT(t *testing.T) {
	c := mustParse(t, inStream(`map $server_port $x {
        8080             literal;
        default                   default;
        ~(8082)          $1;
        ~(?P<ncap>8083)  $ncap;
    }`))
	m := c.Stream.Maps[0]
	if m.Source != "$server_port" || m.Var != "x" || m.Hostnames || m.Volatile || m.Pos.Line != 2 ||
		m.Default == nil || m.Default.Value != "default" || m.Default.Pos.Line != 4 {
		t.Errorf("map %+v default %+v", m, m.Default)
	}
	want := []string{"= 8080 literal :3", "R (8082) $1 :5", "R (?P<ncap>8083) $ncap :6"}
	if got := mapEntries(m); !reflect.DeepEqual(got, want) {
		t.Errorf("entries\n got %q\nwant %q", got, want)
	}
	if names := m.Entries[2].Regex.SubexpNames(); len(names) != 2 || names[1] != "ncap" {
		t.Errorf("named capture: %q", names)
	}
}

func TestMapKeys(t *testing.T) {
	ld := memLoader(map[string]string{"keys.conf": "Included.Example.com inc;\ninclude more.conf;\n", "more.conf": "\n\nmore more;\n"})
	c, err := ld.Parse("a.conf", []byte(inStream(`map $ssl_preread_server_name $backend {
    *.before.hostnames    exact;
    hostnames;
    volatile;
    Example.COM           exact;
    .Example.org          dotorg;
    *.example.NET         starnet;
    www.EXAMPLE.*         tail;
    \default              escaped;
    \~tilde               escaped;
    \\include             escaped;
    hostnames:2           two;
    ~*^(?<sub>\w+)\.re$   re:$sub:$1;
    ~                     any;
    ""                    empty;
    include               keys.conf;
}`)))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Stream.Maps[0]
	if !m.Hostnames || !m.Volatile || m.Default != nil || m.Var != "backend" {
		t.Errorf("map %+v", m)
	}
	want := []string{
		"= *.before.hostnames exact :3", // before "hostnames": exact
		"= example.com exact :6",
		"W .example.org dotorg :7",
		"W *.example.net starnet :8",
		"W www.example.* tail :9",
		"= default escaped :10",
		"= ~tilde escaped :11",
		"= include escaped :12",
		"= hostnames:2 two :13",
		`R ^(?<sub>\w+)\.re$ re:$sub:$1 :14`,
		"R  any :15",
		"=  empty :16",
		"= included.example.com inc :1",
		"= more more :3",
	}
	if got := mapEntries(m); !reflect.DeepEqual(got, want) {
		t.Errorf("entries\n got %q\nwant %q", got, want)
	}
	if re := m.Entries[9].Regex; !re.MatchString("WWW.RE") || re.MatchString("www.rex") {
		t.Errorf("~* is not caseless: %v", re)
	}
	if f := m.Entries[12].Pos.File; f != "keys.conf" {
		t.Errorf("included entry's file %q", f)
	}
}

func TestMapHashSizeAccepted(t *testing.T) {
	c := mustParse(t, inStream("map_hash_bucket_size 128;\nmap_hash_max_size 4096;\nmap $remote_addr $a { }"))
	if len(c.Stream.Maps) != 1 || len(c.Warnings) != 0 {
		t.Errorf("maps %d warnings %q", len(c.Stream.Maps), warnings(c))
	}
}

func TestMapErrors(t *testing.T) {
	m := func(body string) string { return inStream("map $remote_addr $x {\n" + body + "\n}") }
	runErrCases(t, []errCase{
		{"conflict case", m("hostnames;\nFOO.example.com a;\nfoo.example.com b;"), `conflicting parameter "foo.example.com" in a.conf:5`},
		{"conflict lower-cased as nginx prints it", m("FOO b;\nFOO c;"), `conflicting parameter "foo" in a.conf:4`},
		{"dot then exact", m("hostnames;\n.Example.com a;\nexample.com b;"), `conflicting parameter "example.com" in a.conf:5`},
		{"exact then dot", m("hostnames;\nexample.com b;\n.example.com a;"), `conflicting parameter ".example.com" in a.conf:5`},
		{"star then dot", m("hostnames;\n*.example.com b;\n.example.com a;"), `conflicting parameter ".example.com" in a.conf:5`},
		{"tail twice", m("hostnames;\nwww.EXAMPLE.* b;\nwww.example.* a;"), `conflicting parameter "www.example.*" in a.conf:5`},
		{"star without hostnames is exact", m("*.a b;\n*.a c;"), `conflicting parameter "*.a" in a.conf:4`},
		{"two stars", m("hostnames;\n*.*.com b;"), `invalid hostname or wildcard "*.*.com" in a.conf:4`},
		{"two dots", m("hostnames;\na..com b;"), `invalid hostname or wildcard "a..com" in a.conf:4`},
		{"star inside", m("hostnames;\na*b b;"), `invalid hostname or wildcard "a*b" in a.conf:4`},
		{"star alone", m("hostnames;\n* b;"), `invalid hostname or wildcard "*" in a.conf:4`},
		{"declined key printed as written", m("hostnames;\nA*B b;"), `invalid hostname or wildcard "A*B" in a.conf:4`},
		{"default twice", m("default a;\ndefault b;"), `duplicate default map parameter in a.conf:4`},
		{"three words", m("a b c;"), `invalid number of the map parameters in a.conf:3`},
		{"one word", m("a;"), `invalid number of the map parameters in a.conf:3`},
		{"include alone", m("include;"), `invalid number of the map parameters in a.conf:3`},
		{"include two files", m("include a b;"), `invalid number of the map parameters in a.conf:3`},
		{"include missing", m("include nope.conf;"), `open() "nope.conf" failed (2: No such file or directory) in a.conf:3`},
		{"block", m("a {\n}"), `unexpected "{" in a.conf:3`},
		{"var name", inStream("map $remote_addr x { }"), `invalid variable name "x" in a.conf:2`},
		{"var name $", inStream("map $remote_addr $ { }"), `invalid variable name "$" in a.conf:2`},
		{"arguments", inStream("map $remote_addr { }"), `invalid number of arguments in "map" directive in a.conf:2`},
		{"no block", inStream("map $remote_addr $x;"), `directive "map" has no opening "{" in a.conf:2`},
		{"not in server", "stream {\nserver {\nlisten 1;\nproxy_pass 1.1.1.1:1;\nmap $a $b { }\n}\n}", `"map" directive is not allowed here in a.conf:5`},
		{"source syntax", inStream("map $ $x { }"), `invalid variable name in a.conf:2`},
		{"value $", m("a $;"), `invalid variable name in a.conf:3`},
		{"value bracket", m("a ${b;"), `the closing bracket in "b" variable is missing in a.conf:3`},
		{"value bracket dash", m("a ${b-c};"), `the closing bracket in "b" variable is missing in a.conf:3`},
		{"value empty braces", m("a $1$2;\nb ${};"), `invalid variable name in a.conf:4`},
		{"map_hash twice", inStream("map_hash_max_size 10;\nmap_hash_max_size 11;"), `"map_hash_max_size" directive is duplicate in a.conf:3`},
		{"map_hash number", inStream("map_hash_bucket_size x;"), `"map_hash_bucket_size" directive invalid number in a.conf:2`},
		// nginx: pcre2_compile() failed: missing closing parenthesis in "(a"
		{"bad regex", m("~(a b;"), "invalid regular expression \"(a\": missing closing ): `(a` in a.conf:3"},
		// nginx accepts this (PCRE); RE2 has no backreferences
		{"backreference", m(`~(a)\1 b;`), `the regular expression "(a)\1" uses a backreference "\1", which baton does not support ` +
			`(its regular expressions are Go's RE2, not PCRE) in a.conf:3`},
		{"lookahead caseless", m(`~*a(?=b) b;`), `the regular expression "a(?=b)" uses a lookahead "(?=", which baton does not support ` +
			`(its regular expressions are Go's RE2, not PCRE) in a.conf:3`},
	})
}

// An include in a map of an included file is read the map's way too.
func TestMapIncludeInInclude(t *testing.T) {
	ld := memLoader(map[string]string{"a.conf": inStream("map $remote_addr $x {\ninclude k.conf;\n}"),
		"k.conf": "include j.conf x;\n"})
	_, err := ld.Load("a.conf")
	if err == nil || err.Error() != "invalid number of the map parameters in k.conf:1" {
		t.Errorf("got %v", err)
	}
}

func TestComplexValueError(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"plain text", ""},
		{"$a", ""},
		{"${a}b", ""},
		{"$a$b:$1$10", ""},
		{"$1", ""},
		{"$", "invalid variable name"},
		{"a$", "invalid variable name"},
		{"$-", "invalid variable name"},
		{"${", "invalid variable name"},
		{"${}", "invalid variable name"},
		{"${a", `the closing bracket in "a" variable is missing`},
		{"${a-b}", `the closing bracket in "a" variable is missing`},
		{"$0", ""}, // the variable "0", which proxy will find unknown
	} {
		if got := complexValueError(tt.in); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPCREOnly(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`^(www\.)?(?<name>[a-z0-9-]+)\.example\.com$`, ""},
		{`(?P<x>a)(?i:b)[\d\s]{2,3}\QA(?=B\E`, ""},
		{`a+?b*?c??`, ""},
		{`[\1]`, ""}, // octal in a class
		{`[[:alpha:]](?=x)`, `a lookahead "(?="`},
		{`[]\]]\2`, `a backreference "\2"`},
		{`a{2}+`, "a possessive quantifier"},
		{`a++`, "a possessive quantifier"},
		{`a{x}+`, ""}, // "{x}" is literal, "+" quantifies it
		{`(?!a)`, `a negative lookahead "(?!"`},
		{`(?<=a)`, `a lookbehind "(?<="`},
		{`(?<!a)`, `a negative lookbehind "(?<!"`},
		{`(?>a)`, `an atomic group "(?>"`},
		{`(?|a)`, `a branch reset group "(?|"`},
		{`(?#c)`, `a comment group "(?#"`},
		{`(?(1)a|b)`, `a conditional group "(?("`},
		{`(?R)`, `a recursion "(?R"`},
		{`(?1)`, `a subroutine call "(?1"`},
		{`(?-1)`, `a subroutine call "(?-"`},
		{`(?'n'a)`, `a named group "(?'name'" (write "(?<name>")`},
		{`(?x) a`, `the extended option "(?x)"`},
		{`(?i-x:a)`, `the extended option "(?x)"`},
		{`(*UTF)a`, `a backtracking control verb "(*"`},
		{`a\Kb`, `"\K" (reset the match start)`},
		{`a\Z`, `"\Z" (the end or before a final newline)`},
		{`\v`, `"\v" (vertical space; RE2 reads "\v" as a vertical tab)`},
		{`\k<n>`, `a named backreference "\k"`},
		{`\g1`, `a backreference or subroutine call "\g"`},
	} {
		if got := pcreOnly(tt.in); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMapsInOrder(t *testing.T) {
	c := mustParse(t, inStream("map $a $x { }\nmap $b $x { }\nmap \"${c}d\" $y { }"))
	var got []string
	for _, m := range c.Stream.Maps {
		got = append(got, m.Source+">"+m.Var)
	}
	if strings.Join(got, " ") != "$a>x $b>x ${c}d>y" {
		t.Errorf("maps %q", got)
	}
}

func TestLookupDirectivesAreImplemented(t *testing.T) {
	for _, name := range strings.Fields("map map_hash_bucket_size map_hash_max_size geo split_clients") {
		if _, ok := notSupported[name]; ok {
			t.Errorf("%s is still in notSupported", name)
		}
		if c, ok := implemented[name]; !ok || c != ctxStream {
			t.Errorf("%s is not implemented in stream", name)
		}
	}
}
