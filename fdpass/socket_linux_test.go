package fdpass

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCheck(t *testing.T) {
	ln := localListener(t)
	_, server := tcpPair(t, ln)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpConn, err := net.Dial("udp", udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer udpConn.Close()
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err == nil {
		defer ln6.Close()
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	uln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	dup := func(sc syscall.Conn) *os.File {
		f, err := Dup(sc, "test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	lnAddr := ln.Addr().String()
	tests := []struct {
		name string
		f    *os.File
		kind Kind
		addr string
		want error
	}{
		{"tcp listener", dup(ln), TCPListener, lnAddr, nil},
		{"tcp listener, no addr", dup(ln), TCPListener, "", nil},
		{"tcp listener, other port", dup(ln), TCPListener, "127.0.0.1:1", ErrFDType},
		{"tcp listener, other host", dup(ln), TCPListener, "0.0.0.0" + lnAddr[len("127.0.0.1"):], ErrFDType},
		{"tcp listener as conn", dup(ln), TCPConn, "", ErrFDType},
		{"tcp conn", dup(server), TCPConn, server.LocalAddr().String(), nil},
		{"tcp conn as listener", dup(server), TCPListener, "", ErrFDType},
		{"udp listener", dup(udp.(*net.UDPConn)), UDPListener, udp.LocalAddr().String(), nil},
		{"udp as tcp", dup(udp.(*net.UDPConn)), TCPConn, "", ErrFDType},
		{"udp listener as session", dup(udp.(*net.UDPConn)), UDPConn, "", ErrFDType},
		{"udp session", dup(udpConn.(*net.UDPConn)), UDPConn, udpConn.LocalAddr().String(), nil},
		{"unix listener", dup(uln.(*net.UnixListener)), UnixListener, path, nil},
		{"unix listener as tcp", dup(uln.(*net.UnixListener)), TCPListener, "", ErrFDType},
		{"pipe", w, TCPConn, "", ErrFDType},
	}
	if ln6 != nil {
		tests = append(tests, struct {
			name string
			f    *os.File
			kind Kind
			addr string
			want error
		}{"tcp6 listener", dup(ln6.(*net.TCPListener)), TCPListener, ln6.Addr().String(), nil})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.f, tt.kind, tt.addr)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Check(%v, %q): %v, want %v", tt.kind, tt.addr, err, tt.want)
			}
		})
	}
}

func TestSameAddr(t *testing.T) {
	tests := []struct {
		got, claimed string
		want         bool
	}{
		{"127.0.0.1:80", "127.0.0.1:80", true},
		{"[::]:443", "[::]:443", true},
		{"[::ffff:1.2.3.4]:80", "[::ffff:1.2.3.4]:80", true},
		{"[fe80::1]:80", "[fe80::1%eth0]:80", true},
		{"0.0.0.0:80", "[::]:80", false},
		{"127.0.0.1:80", "127.0.0.1:81", false},
		{"/run/baton/control.sock", "/run/baton/control.sock", true},
		{"@abstract", "@other", false},
		{"", "127.0.0.1:80", false},
	}
	for _, tt := range tests {
		if got := sameAddr(tt.got, tt.claimed); got != tt.want {
			t.Errorf("sameAddr(%q, %q) = %v", tt.got, tt.claimed, got)
		}
	}
}
