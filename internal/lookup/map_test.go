package lookup

import (
	"strings"
	"testing"

	"github.com/batonproxy/baton/config"
)

// find returns the value key selects in the map of block (its first map):
// the entry's value, "DEFAULT" for the default, with $1..$9 replaced by the
// submatches Find reported.
func find(t *testing.T, m *config.Map, lm *Map, key string) string {
	t.Helper()
	e, caps := lm.Find([]byte(key), nil)
	if e < 0 {
		return "DEFAULT"
	}
	v := m.Entries[e].Value
	for n := 1; n <= 9; n++ {
		c := ""
		if 2*n+1 < len(caps) && caps[2*n] >= 0 {
			c = key[caps[2*n]:caps[2*n+1]]
		}
		v = strings.ReplaceAll(v, "$"+string(rune('0'+n)), c)
	}
	return v
}

func newTestMap(t *testing.T, body string) (*config.Map, *Map) {
	t.Helper()
	m := parse(t, "map $k $x {\n"+body+"\n}").Stream.Maps[0]
	return m, NewMap(m)
}

// TestMapStreamMapT mirrors nginx's stream_map.t: a literal key, the
// default, a capture and a named capture.
func TestMapStreamMapT(t *testing.T) {
	m, lm := newTestMap(t, `8080 literal; default default; ~(8082) $1; ~(?P<ncap>8083) $ncap;`)
	for key, want := range map[string]string{"8080": "literal", "8081": "DEFAULT", "8082": "8082", "8083": "$ncap"} {
		if got := find(t, m, lm, key); got != want {
			t.Errorf("%s: got %q, want %q", key, got, want)
		}
	}
	e, caps := lm.Find([]byte("8083"), nil)
	if names := m.Entries[e].Regex.SubexpNames(); names[1] != "ncap" || caps[2] != 0 || caps[3] != 4 {
		t.Errorf("named capture %q at %v", names, caps)
	}
}

// TestMapPrecedence: exact keys first, then "*.x"/".x" wildcards, then
// "x.*", then regexes in order, as ngx_stream_map_find and
// ngx_hash_find_combined (the golden files check the same against nginx).
func TestMapPrecedence(t *testing.T) {
	m, lm := newTestMap(t, `hostnames;
		~^www regex-first-written;
		www.example.* tail;
		*.example.com head;
		www.example.com exact;
		.example.org dot;
		*.www.example.org deeper;
		~*\.ORG$ regex-org;
		~^(\w+)\.(\w+)$ two:$2:$1;
		"" empty;`)
	for _, tt := range []struct{ key, want string }{
		{"www.example.com", "exact"},
		{"WWW.Example.COM", "exact"},  // ASCII case-insensitive
		{"www.example.com.", "exact"}, // hostnames: a trailing dot is dropped
		{"a.example.com", "head"},     // head wildcard before tail
		{"www.example.net", "tail"},   // tail before the regexes
		{"www.other.net", "regex-first-written"},
		{"example.com", "two:com:example"}, // "*.example.com" does not match example.com itself
		{"example.org", "dot"},             // ".example.org" does
		{"a.b.example.org", "dot"},
		{"a.www.example.org", "deeper"},    // the longest wildcard wins
		{"www.example.org", "dot"},         // "*.www.example.org" is for subdomains only
		{"www.ORG", "regex-first-written"}, // regexes in the order written
		{"foo.ORG", "regex-org"},
		{"foo.net", "two:net:foo"},
		{"", "empty"}, // exact keys only: no wildcard or regex for an empty key
		{".", "empty"},
		{"nothing", "DEFAULT"},
	} {
		if got := find(t, m, lm, tt.key); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.key, got, tt.want)
		}
	}
}

// Without "hostnames", wildcard-looking keys are exact, the trailing dot
// counts, and an empty key tries no regex.
func TestMapWithoutHostnames(t *testing.T) {
	m, lm := newTestMap(t, `*.example.com star; example.com. dotted; ~.* any;`)
	for _, tt := range []struct{ key, want string }{
		{"*.example.com", "star"},
		{"a.example.com", "any"},
		{"example.com.", "dotted"},
		{"EXAMPLE.com.", "dotted"},
		{"", "DEFAULT"},
	} {
		if got := find(t, m, lm, tt.key); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.key, got, tt.want)
		}
	}
}

// Keys of a "hostnames" map written before the word stay exact; the
// trailing dot is still dropped, the map being "hostnames".
func TestMapHostnamesLater(t *testing.T) {
	m, lm := newTestMap(t, `*.a.com early; hostnames; *.b.com late;`)
	for _, tt := range []struct{ key, want string }{
		{"x.a.com", "DEFAULT"},
		{"*.a.com.", "early"},
		{"x.b.com.", "late"},
	} {
		if got := find(t, m, lm, tt.key); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestMapCaptures(t *testing.T) {
	m, lm := newTestMap(t, `~^(?:(x)|(y))-(\d+)$ x=$1:y=$2:n=$3; ~^plain$ p;`)
	buf := make([]int, 0, 16)
	e, caps := lm.Find([]byte("y-42"), buf)
	want := []int{0, 4, -1, -1, 0, 1, 2, 4}
	if e != 0 || len(caps) != len(want) || &caps[0] != &buf[:1][0] {
		t.Fatalf("entry %d caps %v (caller buffer reused: %v)", e, caps, len(caps) > 0 && &caps[0] == &buf[:1][0])
	}
	for i := range want {
		if caps[i] != want[i] {
			t.Fatalf("caps %v, want %v", caps, want)
		}
	}
	if got := find(t, m, lm, "y-42"); got != "x=:y=y:n=42" {
		t.Errorf("got %q", got)
	}
	// a hit without groups, and a miss, leave caps empty
	for _, key := range []string{"plain", "none"} {
		if _, caps := lm.Find([]byte(key), buf[:3]); len(caps) != 0 {
			t.Errorf("%s: caps %v", key, caps)
		}
	}
}

// A key longer than the stack buffer is still lower-cased and found.
func TestMapLongKey(t *testing.T) {
	long := strings.Repeat("Ab", stackKey)
	_, lm := newTestMap(t, strings.ToLower(long)+" long;")
	if e, _ := lm.Find([]byte(long), nil); e != 0 {
		t.Errorf("entry %d", e)
	}
}

// Lower-casing is ASCII only, as ngx_tolower: "É" and "é" differ.
func TestMapASCIIFolding(t *testing.T) {
	m, lm := newTestMap(t, "é.example small;")
	if got := find(t, m, lm, "É.EXAMPLE"); got != "DEFAULT" {
		t.Errorf("got %q", got)
	}
	if got := find(t, m, lm, "é.EXAMPLE"); got != "small" {
		t.Errorf("got %q", got)
	}
}

func TestMapExactHitDoesNotAllocate(t *testing.T) {
	_, lm := newTestMap(t, "hostnames; www.example.com a; *.example.org b; www.* c; ~^x d;")
	caps := make([]int, 0, 8)
	for _, key := range []string{"WWW.Example.com", "a.example.org", "www.foo", "nothing", "x-no-groups"} {
		k := []byte(key)
		if n := testing.AllocsPerRun(100, func() { lm.Find(k, caps) }); n != 0 {
			t.Errorf("%s: %v allocations", key, n)
		}
	}
}

func BenchmarkMapFindExact(b *testing.B) {
	body := "hostnames;\n*.example.org wc;\n~^(\\w+)\\.re$ $1;\n"
	for i := 0; i < 1000; i++ {
		body += "host" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + itoa(i) + ".example.com v;\n"
	}
	lm := NewMap(parse(b, "map $k $x {\n"+body+"}").Stream.Maps[0])
	key := []byte("HOSTsXX44.Example.COM")
	if e, _ := lm.Find(key, nil); e < 0 {
		b.Fatal("key not found")
	}
	caps := make([]int, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		lm.Find(key, caps)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// headKey is ngx_hash_add_key's conversion of a head wildcard.
func TestHeadKey(t *testing.T) {
	for in, want := range map[string]string{
		"*.example.com": "com.example.",
		".example.com":  "com.example",
		".com":          "com",
		"*.com":         "com.",
		".*":            "*",
	} {
		if got := headKey(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestDNSStrcmp(t *testing.T) {
	// "." sorts below every character, and a shorter name first
	sorted := []string{"com", "com.a", "com.b", "com-a", "coma"}
	for i := 1; i < len(sorted); i++ {
		if dnsStrcmp(sorted[i-1], sorted[i]) >= 0 || dnsStrcmp(sorted[i], sorted[i-1]) <= 0 {
			t.Errorf("%q should sort before %q", sorted[i-1], sorted[i])
		}
	}
	if dnsStrcmp("COM.a", "com.A") != 0 {
		t.Error("not case-insensitive")
	}
}
