package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// FreePort returns a loopback address whose port nothing listens on, for a
// process the test starts to listen on (or a dead address to dial). The
// port comes from below the kernel's ephemeral range: a port the kernel
// hands out for 127.0.0.1:0 may be taken, between this check and the
// process's bind, as the local port of an outgoing connection (other
// tests dial all the time), and the bind then fails with "Address already
// in use". Below that range only another listener can take it, and the
// only listeners there are other callers of FreePort, in this test binary
// or in another package's, which go test runs at the same time. So a port
// is handed out once per binary, and reserved across binaries for
// portHold by a file in the temporary directory: two tests never get the
// same port while either may still be starting the process that binds it.
func FreePort() (netip.AddrPort, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo)
	}
	base := max(lo-12000, 1024)
	for range 200 {
		port := base + rand.IntN(max(lo-base-1, 1))
		if !reservePort(port) {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		return ap, nil
	}
	return netip.AddrPort{}, fmt.Errorf("no free port below %d after 200 tries", lo)
}

// portHold is how long a port FreePort handed out stays reserved for
// other test binaries: longer than any test takes to bind it.
const portHold = 5 * time.Minute

var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// reservePort reports whether port is free to hand out, and reserves it:
// not handed out before by this binary, and no other binary's reservation
// younger than portHold. The reservations are files in one directory,
// checked and written under an flock of that directory's lock file.
func reservePort(port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	dir := filepath.Join(os.TempDir(), "baton-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true // no reservations to share: this binary's own still hold
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return true
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	name := filepath.Join(dir, strconv.Itoa(port))
	if fi, err := os.Stat(name); err == nil && time.Since(fi.ModTime()) < portHold {
		return false
	}
	os.WriteFile(name, nil, 0o666)
	now := time.Now()
	os.Chtimes(name, now, now)
	return true
}
