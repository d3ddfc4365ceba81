package lb

import (
	"fmt"
	"strconv"
	"testing"
)

// counter is a State kept by a test: live connections per peer.
type counter []int

func (c counter) Active(i int) int { return c[i] }

func testPeers(n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = Peer{Name: "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250+1) + ":5432", Weight: 1 + i%3}
	}
	return peers
}

var benchMethods = []struct {
	name   string
	method Method
	factor int
}{
	{"rr", RoundRobin, 0},
	{"iphash", IPHash, 0},
	{"hash", Hash, 0},
	{"chash", ConsistentHash, 0},
	{"chash_bounded", ConsistentHash, 125},
	{"leastconn", LeastConn, 0},
	{"random", Random, 0},
	{"random_two", RandomTwo, 0},
	{"leasttime", LeastTimeLastByte, 0},
}

func all(int) bool { return true }

func BenchmarkPick(b *testing.B) {
	for _, bm := range benchMethods {
		for _, n := range []int{8, 64, 512} {
			b.Run(fmt.Sprintf("%s/%d", bm.name, n), func(b *testing.B) {
				state := make(counter, n)
				for i := range state {
					state[i] = i % 7
				}
				bal, err := New(bm.method, testPeers(n), Options{BalanceFactor: bm.factor, State: state})
				if err != nil {
					b.Fatal(err)
				}
				keys := make([][]byte, 256)
				for k := range keys {
					if bm.method == IPHash {
						keys[k] = []byte{10, byte(k), byte(k * 7), byte(k * 13)}
					} else {
						keys[k] = []byte("192.168." + strconv.Itoa(k) + "." + strconv.Itoa(k*7%256))
					}
				}
				b.ReportAllocs()
				k := 0
				for b.Loop() {
					if _, err := bal.Pick(keys[k&255], all); err != nil {
						b.Fatal(err)
					}
					k++
				}
			})
		}
	}
}

// TestPickDoesNotAllocate: Pick is on the accept path of every connection.
func TestPickDoesNotAllocate(t *testing.T) {
	for _, bm := range benchMethods {
		for _, n := range []int{1, 3, 64} {
			state := make(counter, n)
			bal, err := New(bm.method, testPeers(n), Options{BalanceFactor: bm.factor, State: state})
			if err != nil {
				t.Fatal(err)
			}
			key := []byte("203.0.113.9")
			if bm.method == IPHash {
				key = []byte{203, 0, 113, 9}
			}
			// Half the peers unusable, so the retry loops and fallbacks run too.
			usable := func(i int) bool { return i%2 == 1 || n == 1 }
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := bal.Pick(key, usable); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%s/%d: %v allocs per Pick, want 0", bm.name, n, allocs)
			}
		}
	}
}
