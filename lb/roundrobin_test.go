package lb

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// seq picks n times and spells the picks as letters, peer 0 = 'a'.
func seq(t *testing.T, b Balancer, n int, usable func(int) bool) string {
	t.Helper()
	var sb strings.Builder
	for range n {
		i, err := b.Pick(nil, usable)
		if err != nil {
			sb.WriteByte('-')
			continue
		}
		sb.WriteByte(byte('a' + i))
	}
	return sb.String()
}

func weighted(ws ...int) []Peer {
	peers := make([]Peer, len(ws))
	for i, w := range ws {
		peers[i] = Peer{Name: string(rune('a'+i)) + ":1", Weight: w}
	}
	return peers
}

func mustNew(t testing.TB, m Method, peers []Peer, opts Options) Balancer {
	t.Helper()
	b, err := New(m, peers, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundRobinSmooth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		want    string
	}{
		{"5,1,1", []int{5, 1, 1}, "aabacaa" + "aabacaa"},
		{"equal", []int{1, 1, 1}, "abcabcabc"},
		{"zero weight is 1", []int{0, 1}, "abab"},
		{"4,2,1", []int{4, 2, 1}, "abacaba" + "abacaba"},
		{"single", []int{3}, "aaa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustNew(t, RoundRobin, weighted(tc.weights...), Options{})
			if got := seq(t, b, len(tc.want), all); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRoundRobinSkipsUnusable(t *testing.T) {
	b := mustNew(t, RoundRobin, weighted(5, 1, 1), Options{})
	if got, want := seq(t, b, 6, func(i int) bool { return i != 0 }), "bcbcbc"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	_, err := b.Pick(nil, func(int) bool { return false })
	if !errors.Is(err, ErrNoPeer) {
		t.Errorf("nothing usable: got %v, want ErrNoPeer", err)
	}
}

func TestRoundRobinBackup(t *testing.T) {
	peers := []Peer{{Name: "a:1"}, {Name: "b:1"}, {Name: "c:1", Backup: true}, {Name: "d:1", Backup: true, Weight: 2}}
	b := mustNew(t, RoundRobin, peers, Options{})
	if got, want := seq(t, b, 4, all), "abab"; got != want {
		t.Errorf("primaries up: got %s, want %s", got, want)
	}
	if got, want := seq(t, b, 3, func(i int) bool { return i != 0 }), "bbb"; got != want {
		t.Errorf("one primary up: got %s, want %s", got, want)
	}
	if got, want := seq(t, b, 6, func(i int) bool { return i >= 2 }), "dcddcd"; got != want {
		t.Errorf("primaries down: got %s, want %s", got, want)
	}
}

// TestRoundRobinFailed: with max_fails=1 a failure takes the whole weight
// away, which then climbs back one per pick (nginx's free_peer).
func TestRoundRobinFailed(t *testing.T) {
	b := mustNew(t, RoundRobin, weighted(2, 2), Options{})
	if got, want := seq(t, b, 4, all), "abab"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	b.(Failer).Failed(0, 1)
	// a: effective 0, then 1, 2; currents worked by hand.
	if got, want := seq(t, b, 5, all), "bbaba"; got != want {
		t.Errorf("after failure: got %s, want %s", got, want)
	}
	b.(Failer).Failed(1, 0) // max_fails=0: no accounting
	b.(Failer).Failed(9, 1) // out of range: ignored
	single := mustNew(t, RoundRobin, weighted(1), Options{})
	single.(Failer).Failed(0, 1)
	if got := seq(t, single, 2, all); got != "aa" {
		t.Errorf("single: got %s", got)
	}
}

func TestNewErrors(t *testing.T) {
	backup := []Peer{{Name: "a:1"}, {Name: "b:1", Backup: true}}
	for _, tc := range []struct {
		name   string
		method Method
		peers  []Peer
		opts   Options
	}{
		{"no peers", RoundRobin, nil, Options{}},
		{"unknown method", Method(99), weighted(1), Options{}},
		{"backup with hash", Hash, backup, Options{}},
		{"backup with ip_hash", IPHash, backup, Options{}},
		{"backup with chash", ConsistentHash, backup, Options{}},
		{"backup with random", Random, backup, Options{}},
		{"factor 100", ConsistentHash, weighted(1, 1), Options{BalanceFactor: 100, State: counter{0, 0}}},
		{"factor without state", ConsistentHash, weighted(1, 1), Options{BalanceFactor: 150}},
		{"factor with hash", Hash, weighted(1, 1), Options{BalanceFactor: 150, State: counter{0, 0}}},
	} {
		if _, err := New(tc.method, tc.peers, tc.opts); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	for _, m := range []Method{RoundRobin, LeastConn} {
		if _, err := New(m, backup, Options{}); err != nil {
			t.Errorf("%v with backup: %v", m, err)
		}
	}
}

func TestParseMethod(t *testing.T) {
	for m := RoundRobin; m <= RandomTwoLeastConn; m++ {
		got, err := ParseMethod(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMethod(%q) = %v, %v", m.String(), got, err)
		}
	}
	if m, err := ParseMethod("  random   two "); err != nil || m != RandomTwo {
		t.Errorf("spaces: %v, %v", m, err)
	}
	if m, err := ParseMethod(""); err != nil || m != RoundRobin {
		t.Errorf("empty: %v, %v", m, err)
	}
	if _, err := ParseMethod("fair"); err == nil {
		t.Error("fair: no error")
	}
	if s := Method(42).String(); s != "Method(42)" {
		t.Errorf("unknown String = %q", s)
	}
}

// TestConcurrentPick runs every method from many goroutines, with failures
// reported meanwhile; run with -race.
func TestConcurrentPick(t *testing.T) {
	for _, bm := range benchMethods {
		state := make(counter, 16)
		b := mustNew(t, bm.method, testPeers(16), Options{BalanceFactor: bm.factor, State: state})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				key := []byte{10, 0, byte(g), 1}
				for n := range 500 {
					i, err := b.Pick(key, func(i int) bool { return (i+n)%5 != 0 })
					if err != nil || i < 0 || i >= 16 {
						t.Errorf("%s: Pick = %d, %v", bm.name, i, err)
						return
					}
					if n%50 == 0 {
						b.(Failer).Failed(i, 2)
					}
				}
			})
		}
		wg.Wait()
	}
}

// A balancer built for a new peer list goes on, for the peers that stayed,
// where the old one was: with every peer kept, its picks continue the old
// sequence exactly, where a fresh balancer's would start over.
func TestInheritKeepsPosition(t *testing.T) {
	all := func(int) bool { return true }
	peers := []Peer{{Name: "a", Weight: 5}, {Name: "b", Weight: 1}, {Name: "c", Weight: 1}}
	old, err := New(RoundRobin, peers, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := old.Pick(nil, all); err != nil {
			t.Fatal(err)
		}
	}
	fresh, _ := New(RoundRobin, peers, Options{})
	next, _ := New(RoundRobin, peers, Options{})
	next.(Inheritor).Inherit(old, []int{0, 1, 2})
	var o, f, n []int
	for range 7 {
		i, _ := old.Pick(nil, all)
		j, _ := fresh.Pick(nil, all)
		k, _ := next.Pick(nil, all)
		o, f, n = append(o, i), append(f, j), append(n, k)
	}
	if !slices.Equal(n, o) {
		t.Fatalf("inherited balancer picks %v, the old one %v", n, o)
	}
	if slices.Equal(f, o) {
		t.Fatalf("a fresh balancer picks %v too: the test shows nothing", f)
	}
}
