package lb

import (
	"errors"
	"testing"
)

func TestLeastConn(t *testing.T) {
	state := counter{3, 1, 2}
	b := mustNew(t, LeastConn, weighted(1, 1, 1), Options{State: state})
	if i := mustPick(t, b, nil); i != 1 {
		t.Errorf("fewest connections: got %d, want 1", i)
	}
	// Per unit of weight, cross-multiplied: 4/4 = 1 beats 2/1 and 3/2.
	state = counter{2, 3, 4}
	b = mustNew(t, LeastConn, weighted(1, 2, 4), Options{State: state})
	if i := mustPick(t, b, nil); i != 2 {
		t.Errorf("weighted: got %d, want 2", i)
	}
	if i, _ := b.Pick(nil, func(i int) bool { return i != 2 }); i != 1 {
		t.Errorf("weighted, 2 unusable: got %d, want 1", i)
	}
}

// TestLeastConnTies: peers tied on load share by smooth weighted round
// robin, starting from the first tied peer.
func TestLeastConnTies(t *testing.T) {
	state := counter{5, 0, 0, 0}
	b := mustNew(t, LeastConn, weighted(1, 2, 1, 1), Options{State: state})
	if got, want := seq(t, b, 10, all), "bcdbbcdbbc"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	// No State: every peer is idle, so it is weighted round robin.
	b = mustNew(t, LeastConn, weighted(5, 1, 1), Options{})
	if got, want := seq(t, b, 7, all), "aabacaa"; got != want {
		t.Errorf("no state: got %s, want %s", got, want)
	}
}

func TestLeastConnBackup(t *testing.T) {
	peers := []Peer{{Name: "a:1"}, {Name: "b:1"}, {Name: "c:1", Backup: true}, {Name: "d:1", Backup: true}}
	state := counter{9, 9, 4, 1}
	b := mustNew(t, LeastConn, peers, Options{State: state})
	if i := mustPick(t, b, nil); i != 0 {
		t.Errorf("primaries up: got %d, want 0 (backups are not compared)", i)
	}
	if i, _ := b.Pick(nil, func(i int) bool { return i >= 2 }); i != 3 {
		t.Errorf("primaries down: got %d, want 3", i)
	}
	if _, err := b.Pick(nil, func(int) bool { return false }); !errors.Is(err, ErrNoPeer) {
		t.Errorf("none usable: %v", err)
	}
}
