package lookup

import (
	"math"
	"strconv"
	"testing"

	"github.com/batonproxy/baton/config"
)

// TestMurmur2 checks vectors computed by nginx's own ngx_murmurhash.c,
// compiled with gcc 12 against two stub headers (u_char and the prototype)
// and called on each string.
func TestMurmur2(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint32
	}{
		{"", 0x00000000},
		{"a", 0x92685f5e},
		{"ab", 0x1aa14063},
		{"abc", 0x13577c9b},
		{"abcd", 0x26873021},
		{"abcdefgh", 0x042287e6},
		{"abcdefghi", 0xf0319aa7},
		{"127.0.0.1", 0xb6131d91},
		{"127.0.0.1AAA", 0xb5fc5e4b},
		{"hello, world", 0x4b4c9d80},
		{"\x00\xff\x80\x7f\x01", 0xf348b505},
	} {
		if got := Murmur2([]byte(tt.in)); got != tt.want {
			t.Errorf("Murmur2(%q) = %#08x, want %#08x", tt.in, got, tt.want)
		}
	}
}

// TestSplitBounds checks the bounds against the loop of
// ngx_conf_split_clients_block run in C on the same percentages.
func TestSplitBounds(t *testing.T) {
	for _, tt := range []struct {
		parts []config.SplitPart
		want  []uint32
	}{
		{[]config.SplitPart{{Percent: 50}, {Percent: 200}, {Percent: 1000}, {Percent: 3755}, {Star: true}},
			[]uint32{21474836, 107374181, 536870910, 2149631129, 0}},
		{[]config.SplitPart{{Percent: 3333}, {Percent: 3333}, {Percent: 3334}},
			[]uint32{1431512599, 2863025198, 0}},
	} {
		s := NewSplit(&config.SplitClients{Parts: tt.parts})
		for i, p := range s.parts {
			if p.bound != tt.want[i] {
				t.Errorf("part %d: bound %d, want %d", i, p.bound, tt.want[i])
			}
		}
	}
}

// TestSplitShares hashes many keys and expects each part's share within
// 1% of its percentage, and "" for what the parts leave.
func TestSplitShares(t *testing.T) {
	sc := parse(t, `split_clients "${remote_addr}AAA" $variant {
		0.5% a; 2.0% b; 10% c; 37.5% d; 25% e; }`).Stream.SplitClients[0]
	s := NewSplit(sc)
	want := map[string]float64{"a": 0.5, "b": 2, "c": 10, "d": 37.5, "e": 25, "": 25}
	counts := map[string]int{}
	const n = 200000
	for i := 0; i < n; i++ {
		key := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + "AAA"
		counts[s.Find([]byte(key))]++
	}
	for v, pc := range want {
		got := float64(counts[v]) * 100 / n
		if math.Abs(got-pc) > 1 {
			t.Errorf("%q: %.2f%% of keys, want %.1f%%", v, got, pc)
		}
	}
}

// The same key always lands in the same part, and the first "*" takes the
// rest.
func TestSplitStar(t *testing.T) {
	s := NewSplit(parse(t, "split_clients $k $s { 50% half; * rest; * never; }").Stream.SplitClients[0])
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		key := []byte(strconv.Itoa(i))
		v := s.Find(key)
		if v != s.Find(key) {
			t.Fatal("not stable")
		}
		seen[v] = true
	}
	if !seen["half"] || !seen["rest"] || seen["never"] || seen[""] {
		t.Errorf("values seen %v", seen)
	}
}
