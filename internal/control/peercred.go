package control

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerAllowed reports whether the peer runs as root or as our own user.
func peerAllowed(conn *net.UnixConn) (uint32, bool) {
	uid, err := peerUID(conn)
	if err != nil {
		return 0, false
	}
	return uid, uidAllowed(uid)
}

// uidAllowed is the rule both ends apply to each other: root, or our euid.
func uidAllowed(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// peerUID returns the effective uid of conn's peer (SO_PEERCRED): for a
// server, the process that called listen; for a client, the one that
// connected.
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}
