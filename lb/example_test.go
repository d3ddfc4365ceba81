package lb_test

import (
	"fmt"

	"github.com/batonproxy/baton/lb"
)

func ExampleNew() {
	up := func(i int) bool { return true } // the proxy's health and max_conns check

	// Smooth weighted round robin; the key is ignored.
	rr, _ := lb.New(lb.RoundRobin, []lb.Peer{
		{Name: "127.0.0.1:19001", Weight: 5},
		{Name: "127.0.0.1:19002"},
		{Name: "127.0.0.1:19003"},
	}, lb.Options{})
	for range 7 {
		i, _ := rr.Pick(nil, up)
		fmt.Print(i)
	}
	fmt.Println()

	peers := []lb.Peer{{Name: "127.0.0.1:19001"}, {Name: "127.0.0.1:19002"}, {Name: "127.0.0.1:19003"}}

	// "hash $remote_addr consistent": the key is the text of the address.
	ch, _ := lb.New(lb.ConsistentHash, peers, lb.Options{})
	i, _ := ch.Pick([]byte("127.89.143.90"), up)
	fmt.Println(peers[i].Name)

	// ip_hash: the key is the address bytes, 4 for IPv4.
	ip, _ := lb.New(lb.IPHash, peers, lb.Options{})
	i, _ = ip.Pick([]byte{127, 0, 0, 1}, up)
	fmt.Println(peers[i].Name)
	// Output:
	// 0010200
	// 127.0.0.1:19002
	// 127.0.0.1:19003
}
