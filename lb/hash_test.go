package lb

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"testing"
)

// The reference models below transliterate nginx's loops (linear walks, no
// binary search, no shared code with the package) and return -1 where nginx
// would fall back to round robin.

func refWalk(peers []Peer, w int) int {
	p := 0
	for w >= max(peers[p].Weight, 1) {
		w -= max(peers[p].Weight, 1)
		p++
	}
	return p
}

func refTotal(peers []Peer) (t int) {
	for _, p := range peers {
		t += max(p.Weight, 1)
	}
	return t
}

// refHash is ngx_stream_upstream_get_hash_peer.
func refHash(peers []Peer, key []byte, usable func(int) bool) int {
	var hash uint32
	for rehash, tries := 0, 0; ; rehash++ {
		var buf []byte
		if rehash > 0 {
			buf = fmt.Appendf(nil, "%d", rehash)
		}
		h := (crc32.ChecksumIEEE(append(buf, key...)) >> 16) & 0x7fff
		hash += h
		p := refWalk(peers, int(hash%uint32(refTotal(peers))))
		if usable(p) {
			return p
		}
		if tries++; tries > 20 {
			return -1
		}
	}
}

// refIPHash is ngx_http_upstream_get_ip_hash_peer.
func refIPHash(peers []Peer, addr []byte, usable func(int) bool) int {
	hash := 89
	for tries := 0; ; {
		for _, b := range addr {
			hash = (hash*113 + int(b)) % 6271
		}
		p := refWalk(peers, hash%refTotal(peers))
		if usable(p) {
			return p
		}
		if tries++; tries > 20 {
			return -1
		}
	}
}

func randomUsable(r *rand.Rand, n int, pDown float64) (func(int) bool, []bool) {
	down := make([]bool, n)
	for i := range down {
		down[i] = r.Float64() < pDown
	}
	return func(i int) bool { return !down[i] }, down
}

// TestHashMatchesReference: weights, down peers and rehashes, against the
// literal transliteration, with the round robin fallback taken as -1.
func TestHashMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := 2 + r.IntN(9)
		peers := make([]Peer, n)
		for i := range peers {
			peers[i] = Peer{Name: "s" + strconv.Itoa(i), Weight: 1 + r.IntN(4)}
		}
		usable, _ := randomUsable(r, n, float64(round%5)/5)
		hb := mustNew(t, Hash, peers, Options{})
		ib := mustNew(t, IPHash, peers, Options{})
		for k := range 50 {
			key := []byte("10.1." + strconv.Itoa(round) + "." + strconv.Itoa(k))
			if want := refHash(peers, key, usable); want >= 0 {
				if got, _ := hb.Pick(key, usable); got != want {
					t.Fatalf("hash round %d key %s: got %d, want %d", round, key, got, want)
				}
			}
			addr := []byte{10, byte(round), byte(k), byte(k * 3)}
			if want := refIPHash(peers, addr[:3], usable); want >= 0 {
				if got, _ := ib.Pick(addr, usable); got != want {
					t.Fatalf("ip_hash round %d addr %v: got %d, want %d", round, addr, got, want)
				}
			}
		}
	}
}

func TestHashSmallCases(t *testing.T) {
	s3 := weighted(1, 1, 1)
	hb := mustNew(t, Hash, s3, Options{})
	// crc32("127.0.0.1") = 0xd7b7e7a8 (zlib); (>>16)&0x7fff = 0x57b7 = 22455;
	// 22455 % 3 = 0: the first server, as nginx (hash_s3 maps it to b1).
	if got := crc32.ChecksumIEEE([]byte("127.0.0.1")); got != 0xd7b7e7a8 {
		t.Fatalf("crc32 = %#x", got)
	}
	if i, _ := hb.Pick([]byte("127.0.0.1"), all); i != 0 {
		t.Errorf("127.0.0.1: got %d, want 0", i)
	}
	// First server down: rehash with "1" prepended: crc32("1127.0.0.1").
	h2 := 22455 + int(crc32.ChecksumIEEE([]byte("1127.0.0.1"))>>16&0x7fff)
	want := h2 % 3
	if want == 0 { // down: one more rehash
		want = (h2 + int(crc32.ChecksumIEEE([]byte("2127.0.0.1"))>>16&0x7fff)) % 3
	}
	if i, _ := hb.Pick([]byte("127.0.0.1"), func(i int) bool { return i != 0 }); i != want {
		t.Errorf("127.0.0.1 with b1 down: got %d, want %d", i, want)
	}
	// Empty key: round robin, as nginx.
	if got := seq(t, hb, 6, all); got != "abcabc" {
		t.Errorf("empty key: got %s", got)
	}
	// All down: 20 tries, then round robin, which finds nothing.
	if _, err := hb.Pick([]byte("x"), func(int) bool { return false }); err != ErrNoPeer {
		t.Errorf("all down: %v", err)
	}
	if got := crcSmall(crc32.ChecksumIEEE([]byte("ab")), []byte("123")); got != crc32.ChecksumIEEE([]byte("ab123")) {
		t.Errorf("crcSmall disagrees with crc32")
	}
}

// TestHashDependsOnOrder: unlike the ring, hash and ip_hash deal slots in
// config order, so listing the servers differently moves keys, as in nginx.
func TestHashDependsOnOrder(t *testing.T) {
	a := []Peer{{Name: "x:1"}, {Name: "y:1"}, {Name: "z:1"}}
	b := []Peer{{Name: "z:1"}, {Name: "y:1"}, {Name: "x:1"}}
	for _, m := range []Method{Hash, IPHash} {
		ba, bb := mustNew(t, m, a, Options{}), mustNew(t, m, b, Options{})
		moved := 0
		for k := range 250 {
			key := clientKey(t, m, "10.0."+strconv.Itoa(k)+".1")
			ia, _ := ba.Pick(key, all)
			ib, _ := bb.Pick(key, all)
			if a[ia].Name != b[ib].Name {
				moved++
			}
		}
		if moved == 0 {
			t.Errorf("%v: reordering moved no key", m)
		}
	}
}

func TestIPHashSmallCases(t *testing.T) {
	b := mustNew(t, IPHash, weighted(1, 1, 1), Options{})
	// 89 → (89·113+127)%6271 = 3913 → 3913·113%6271 = 3199 → 3199·113%6271
	// = 4040; 4040 % 3 = 2 (iphash_s3_stream maps 127.0.0.1 to b3).
	if i, _ := b.Pick([]byte{127, 0, 0, 1}, all); i != 2 {
		t.Errorf("127.0.0.1: got %d, want 2", i)
	}
	// Only the first three octets count.
	for last := range 256 {
		if i, _ := b.Pick([]byte{127, 0, 0, byte(last)}, all); i != 2 {
			t.Fatalf("127.0.0.%d: got %d, want 2", last, i)
		}
	}
	// IPv6: all 16 bytes count; a mapped IPv4 is not its 4-byte self.
	v6 := []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	if got, want := mustPick(t, b, v6), refIPHash(weighted(1, 1, 1), v6, all); got != want {
		t.Errorf("2001:db8::1: got %d, want %d", got, want)
	}
	mapped := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1}
	if got, want := mustPick(t, b, mapped), refIPHash(weighted(1, 1, 1), mapped, all); got != want {
		t.Errorf("::ffff:127.0.0.1: got %d, want %d", got, want)
	}
	// Anything else hashes as nginx's pseudo address 0.0.0.
	if got, want := mustPick(t, b, nil), refIPHash(weighted(1, 1, 1), []byte{0, 0, 0}, all); got != want {
		t.Errorf("no address: got %d, want %d", got, want)
	}
	// A single server is round robin.
	one := mustNew(t, IPHash, weighted(1), Options{})
	if i := mustPick(t, one, []byte{1, 2, 3, 4}); i != 0 {
		t.Errorf("single: %d", i)
	}
}

func mustPick(t testing.TB, b Balancer, key []byte) int {
	t.Helper()
	i, err := b.Pick(key, all)
	if err != nil {
		t.Fatal(err)
	}
	return i
}
