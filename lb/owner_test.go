package lb

import (
	"fmt"
	"testing"
)

// Owner answers what Pick picks, for every key method, without moving any
// state: with one peer unusable, for 2,000 keys.
func TestOwnerMatchesPick(t *testing.T) {
	peers := []Peer{{Name: "10.0.0.1:80", Weight: 2}, {Name: "10.0.0.2:80"}, {Name: "10.0.0.3:80", Weight: 3}, {Name: "10.0.0.4:80"}}
	usable := func(i int) bool { return i != 2 }
	for _, m := range []Method{Hash, ConsistentHash, IPHash} {
		b, err := New(m, peers, Options{})
		if err != nil {
			t.Fatal(err)
		}
		o := b.(Owner)
		for k := range 2000 {
			key := []byte(fmt.Sprintf("client-%d", k))
			if m == IPHash {
				key = []byte{10, byte(k >> 8), byte(k), 1}
			}
			want, err := b.Pick(key, usable)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := o.Owner(key, usable)
			if !ok || got != want {
				t.Fatalf("%v: key %q: Owner %d (%v), Pick %d", m, key, got, ok, want)
			}
		}
	}
}
