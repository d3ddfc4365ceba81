package health_test

import (
	"fmt"
	"time"

	"github.com/batonproxy/baton/health"
)

// A peer with max_fails=2 fail_timeout=10s, driven by the proxy's calls.
func ExampleGroup() {
	t0 := time.Date(2025, 1, 2, 15, 4, 0, 0, time.UTC)
	sec := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	p := health.Params{Weight: 1, MaxFails: 2, FailTimeout: 10 * time.Second}
	g := health.NewGroup([]health.Params{p, p})
	db := g.Peer(0)

	db.Failed(sec(0))
	fmt.Println(db.Usable(sec(1)), db.State(sec(1)))
	db.Failed(sec(1)) // second failure within fail_timeout: disabled
	fmt.Println(db.Usable(sec(2)), db.State(sec(2)))
	fmt.Println(db.Usable(sec(12))) // fail_timeout has passed: tried again
	db.Picked(sec(12))
	db.Succeeded(sec(13)) // and a success clears it
	fmt.Println(db.Usable(sec(13)), db.State(sec(13)))
	// Output:
	// true failing since 2025/01/02 15:04:00 (1 of 2 fails)
	// false unavailable until 2025/01/02 15:04:12 (2 fails)
	// true
	// true up
}
