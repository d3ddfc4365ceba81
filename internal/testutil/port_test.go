package testutil

import "testing"

// FreePort never hands out a port twice: not in this binary, and not to
// another binary (a fresh handedOut map stands for one) while the port's
// reservation holds.
func TestFreePortHandsOutEachPortOnce(t *testing.T) {
	seen := map[uint16]bool{}
	for range 100 {
		ap, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[ap.Port()] {
			t.Fatalf("port %d handed out twice", ap.Port())
		}
		seen[ap.Port()] = true
	}
	handedOut.Lock()
	handedOut.ports = map[int]bool{}
	handedOut.Unlock()
	for p := range seen {
		if reservePort(int(p)) {
			t.Fatalf("port %d reserved by this binary was handed out again to another", p)
		}
	}
}
