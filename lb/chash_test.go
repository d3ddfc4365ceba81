package lb

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func ring(t testing.TB, peers []Peer) *consistentHash {
	t.Helper()
	return mustNew(t, ConsistentHash, peers, Options{}).(*consistentHash)
}

func namedPeers(n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = Peer{Name: "10.0.0." + strconv.Itoa(i+1) + ":11211"}
	}
	return peers
}

// owners maps each of nkeys keys to the name of the server it lands on.
func owners(t testing.TB, peers []Peer, nkeys int, usable func(int) bool) []string {
	b := mustNew(t, ConsistentHash, peers, Options{})
	out := make([]string, nkeys)
	for k := range out {
		i, err := b.Pick([]byte("key-"+strconv.Itoa(k)), usable)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = peers[i].Name
	}
	return out
}

func TestSplitServer(t *testing.T) {
	for _, tc := range []struct{ in, host, port string }{
		{"127.0.0.1:19001", "127.0.0.1", "19001"},
		{"localhost:19001", "localhost", "19001"},
		{"[::1]:80", "[::1]", "80"},
		{"backend.svc", "backend.svc", ""},
		{"10.0.0.1", "10.0.0.1", ""}, // no ':' before the digits
		{"host:http", "host:http", ""},
		{"unix:/run/app.sock", "/run/app.sock", ""},
		{"UNIX:/x:80", "/x:80", ""},
		{":80", "", "80"},
	} {
		if h, p := splitServer(tc.in); h != tc.host || p != tc.port {
			t.Errorf("splitServer(%q) = %q, %q; want %q, %q", tc.in, h, p, tc.host, tc.port)
		}
	}
}

// TestChashPoints checks the points by hand: crc32(HOST 0x00 PORT le32(prev)).
func TestChashPoints(t *testing.T) {
	c := ring(t, []Peer{{Name: "127.0.0.1:19001"}, {Name: "127.0.0.1:19002", Weight: 2}})
	if len(c.hashes) != 480 {
		t.Errorf("%d points, want 160 + 320", len(c.hashes))
	}
	if !slices.IsSorted(c.hashes) {
		t.Error("ring not sorted")
	}
	prev := make([]byte, 4)
	for j := range 160 {
		h := crc32.ChecksumIEEE(append([]byte("127.0.0.1\x0019001"), prev...))
		k, found := slices.BinarySearch(c.hashes, h)
		if !found || c.members[c.servers[k]][0] != 0 {
			t.Fatalf("point %d (%#x) of 127.0.0.1:19001 missing", j, h)
		}
		binary.LittleEndian.PutUint32(prev, h)
	}
	// A key at or below a point goes to that point; above the last, to the first.
	for _, k := range []int{0, 100, 479} {
		if got := c.find(c.hashes[k]); got != k {
			t.Errorf("find(point %d) = %d", k, got)
		}
	}
	if got := c.find(c.hashes[479] + 1); got != 480 {
		t.Errorf("find past the end = %d, want 480 (wraps)", got)
	}
}

// TestChashSpelling: the text is hashed, not the address.
func TestChashSpelling(t *testing.T) {
	a := owners(t, []Peer{{Name: "127.0.0.1:19001"}, {Name: "127.0.0.1:19002"}}, 2000, all)
	b := owners(t, []Peer{{Name: "localhost:19001"}, {Name: "127.0.0.1:19002"}}, 2000, all)
	same := 0
	for k := range a {
		if (a[k] == "127.0.0.1:19001") == (b[k] == "localhost:19001") {
			same++
		}
	}
	if same == len(a) {
		t.Error("localhost:19001 hashes like 127.0.0.1:19001")
	}
}

// TestChashOrderIndependent: the ring, and so every key, is the same however
// the servers are listed.
func TestChashOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	peers := namedPeers(12)
	peers[3].Weight, peers[7].Weight = 3, 2
	want := owners(t, peers, 5000, all)
	for range 5 {
		shuffled := slices.Clone(peers)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := owners(t, shuffled, 5000, all); !slices.Equal(got, want) {
			t.Fatal("reordering the servers moved keys")
		}
	}
	// Two servers whose points collide keep the same owner either way.
	x := ring(t, []Peer{{Name: "a:1"}, {Name: "b:1"}})
	y := ring(t, []Peer{{Name: "b:1"}, {Name: "a:1"}})
	if len(x.hashes) != len(y.hashes) {
		t.Error("ring size depends on order")
	}
}

// TestChashDown: a down server keeps its points; only its keys move, each to
// the server of the next point on the ring.
func TestChashDown(t *testing.T) {
	peers := namedPeers(5)
	c := ring(t, peers)
	up := owners(t, peers, 5000, all)
	down := owners(t, peers, 5000, func(i int) bool { return i != 2 })
	for k := range up {
		key := []byte("key-" + strconv.Itoa(k))
		switch {
		case up[k] != peers[2].Name && down[k] != up[k]:
			t.Fatalf("key %d moved from %s, which is up", k, up[k])
		case up[k] == peers[2].Name:
			// The next point not owned by server 2.
			p := c.find(crc32.ChecksumIEEE(key))
			for c.members[c.servers[p%len(c.hashes)]][0] == 2 {
				p++
			}
			if want := peers[c.members[c.servers[p%len(c.hashes)]][0]].Name; down[k] != want {
				t.Fatalf("key %d: went to %s, next point is %s", k, down[k], want)
			}
		}
	}
}

// TestChashRemoveAdd: removing one of N servers moves only its keys; adding
// one moves about 1/(N+1) of them, all to the new server.
func TestChashRemoveAdd(t *testing.T) {
	const n, nkeys = 10, 20000
	peers := namedPeers(n + 1)
	before := owners(t, peers[:n], nkeys, all)
	removed := owners(t, peers[1:n], nkeys, all)
	for k := range before {
		if before[k] != peers[0].Name && removed[k] != before[k] {
			t.Fatalf("removing %s moved key %d from %s", peers[0].Name, k, before[k])
		}
	}
	added := owners(t, peers, nkeys, all)
	moved := 0
	for k := range before {
		if added[k] != before[k] {
			moved++
			if added[k] != peers[n].Name {
				t.Fatalf("adding a server moved key %d to %s", k, added[k])
			}
		}
	}
	if frac := float64(moved) / nkeys; frac < 0.5/(n+1) || frac > 1.5/(n+1) {
		t.Errorf("adding 1 to %d servers moved %.3f of keys, want about %.3f", n, frac, 1.0/(n+1))
	}
}

func TestChashWeights(t *testing.T) {
	peers := namedPeers(3)
	peers[0].Weight = 4 // 640 points of 960
	got := owners(t, peers, 30000, all)
	n := 0
	for _, o := range got {
		if o == peers[0].Name {
			n++
		}
	}
	if frac := float64(n) / float64(len(got)); frac < 0.55 || frac > 0.78 {
		t.Errorf("weight 4 of 6 took %.2f of keys", frac)
	}
}

// TestChashSharedName: one name resolved to two addresses is two peers on
// the same points, splitting that server's keys by round robin.
func TestChashSharedName(t *testing.T) {
	peers := []Peer{{Name: "db:5432"}, {Name: "db:5432"}, {Name: "cache:5432"}}
	c := ring(t, peers)
	if len(c.hashes) != 320 {
		t.Errorf("%d points, want 320 (the shared points collapse)", len(c.hashes))
	}
	var key []byte
	for k := 0; ; k++ {
		key = []byte("k" + strconv.Itoa(k))
		if i := mustPick(t, c, key); i != 2 {
			break
		}
	}
	a, b := mustPick(t, c, key), mustPick(t, c, key)
	if a == b || a == 2 || b == 2 {
		t.Errorf("picks of a db key: %d, %d; want 0 and 1", a, b)
	}
	if i, _ := c.Pick(key, func(i int) bool { return i != 0 }); i != 1 {
		t.Errorf("db's first address down: got %d, want 1", i)
	}
}

func TestChashFallback(t *testing.T) {
	b := mustNew(t, ConsistentHash, namedPeers(3), Options{})
	if got := seq(t, b, 3, all); got != "abc" {
		t.Errorf("empty key: got %s, want round robin", got)
	}
	if _, err := b.Pick([]byte("x"), func(int) bool { return false }); err != ErrNoPeer {
		t.Errorf("all down: %v", err)
	}
	one := mustNew(t, ConsistentHash, namedPeers(1), Options{})
	if i := mustPick(t, one, []byte("x")); i != 0 {
		t.Errorf("single: %d", i)
	}
}

// TestChashBounded holds flows open on a skewed key set and checks that no
// server ever goes past its HAProxy bound.
func TestChashBounded(t *testing.T) {
	const n, factor = 8, 125
	peers := namedPeers(n)
	state := make(counter, n)
	b := mustNew(t, ConsistentHash, peers, Options{BalanceFactor: factor, State: state})
	plain := mustNew(t, ConsistentHash, peers, Options{})
	r := rand.New(rand.NewPCG(5, 6))
	hot := []byte("hot-key")
	hotHome := mustPick(t, plain, hot)
	kept := 0
	for flow := range 4000 {
		key := hot
		if r.IntN(2) == 0 {
			key = []byte("k" + strconv.Itoa(r.IntN(1000)))
		}
		served := 0
		for _, a := range state {
			served += a
		}
		i := mustPick(t, b, key)
		// Equal weights: every server has at most ceil(slots/n) slots.
		slots := ((served+1)*factor + 99) / 100
		if limit := (slots + n - 1) / n; state[i]+1 > limit {
			t.Fatalf("flow %d: server %d has %d flows, limit %d", flow, i, state[i]+1, limit)
		}
		state[i]++
		if string(key) == string(hot) && i == hotHome {
			kept++
		}
		if flow%3 == 0 { // a flow ends
			j := r.IntN(n)
			if state[j] > 0 {
				state[j]--
			}
		}
	}
	if kept == 0 {
		t.Error("the hot key never went home")
	}
	// Light load: a key goes where the plain ring sends it.
	clear(state)
	for k := range 200 {
		key := []byte("k" + strconv.Itoa(k))
		if got, want := mustPick(t, b, key), mustPick(t, plain, key); got != want {
			t.Fatalf("idle upstream: key %s went to %d, ring says %d", key, got, want)
		}
	}
}
