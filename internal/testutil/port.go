package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
)

// FreePort returns a loopback address whose port nothing listens on, for a
// process the test starts to listen on (or a dead address to dial). The
// port comes from below the kernel's ephemeral range: a port the kernel
// hands out for 127.0.0.1:0 may be taken, between this check and the
// process's bind, as the local port of an outgoing connection (other
// tests dial all the time), and the bind then fails with "Address already
// in use". Below that range only another listener can take it.
func FreePort() (netip.AddrPort, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo)
	}
	base := max(lo-12000, 1024)
	for range 100 {
		port := base + rand.IntN(max(lo-base-1, 1))
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		return ap, nil
	}
	return netip.AddrPort{}, fmt.Errorf("no free port below %d after 100 tries", lo)
}
