package proxy

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// startUnixBackend serves handle on a Unix-domain socket at path.
func startUnixBackend(t *testing.T, path string, handle func(net.Conn)) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close() })
}

func dialUnix(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// Unix-domain sockets, as nginx: listen unix:PATH (its clients are
// "unix:"), proxy_pass unix:PATH, server unix:PATH, proxy_pass $var to a
// unix: value, allow/deny unix:.
func TestUnixSockets(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up.sock")
	startUnixBackend(t, up, greet("unix-backend"))
	in := filepath.Join(dir, "in.sock")
	denied := filepath.Join(dir, "denied.sock")
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		upstream u { server unix:%s; }
		server { listen 127.0.0.1:0; proxy_pass unix:%s; }
		server { listen 127.0.0.1:0; proxy_pass u; }
		server { listen 127.0.0.1:0; set $to unix:%s; proxy_pass $to; }
		server { listen unix:%s; return "$remote_addr|$remote_port|$server_addr|$server_port|$binary_remote_addr"; }
		server { listen unix:%s; deny unix:; return "in"; }
		server { listen 127.0.0.1:0; allow unix:; deny all; return "tcp"; }
		log_format f "$upstream_addr";
	}`, up, up, up, in, denied))
	for i := 0; i < 3; i++ {
		if got := readAll(t, addrs[i]); got != "unix-backend\n" {
			t.Errorf("server %d: %q", i, got)
		}
	}
	c := dialUnix(t, in)
	b, _ := io.ReadAll(c)
	c.Close()
	if want := "unix:||unix:" + in + "||unix:"; string(b) != want {
		t.Errorf("unix client variables: %q, want %q", b, want)
	}
	c = dialUnix(t, denied)
	b, _ = io.ReadAll(c)
	c.Close()
	if len(b) != 0 {
		t.Errorf("deny unix: let a unix client through: %q", b)
	}
	// A TCP client is no unix: client.
	if got := readAll(t, addrs[len(addrs)-1]); got != "" {
		t.Errorf("allow unix: let a TCP client through: %q", got)
	}
}

// A session of a unix: listener moves in an upgrade, its listener with it.
func TestUnixHandoff(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up.sock")
	startUnixBackend(t, up, echo)
	in := filepath.Join(dir, "in.sock")
	conf := fmt.Sprintf(`stream { server { listen unix:%s; proxy_pass unix:%s; } }`, in, up)
	cfg, err := config.Parse("u.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := startProxyWith(t, cfg, Options{}, nil)
	c := dialUnix(t, in)
	defer c.Close()
	io.WriteString(c, "one\n")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "one\n" {
		t.Fatalf("before: %q %v", buf, err)
	}
	cfg2, _ := config.Parse("u.conf", []byte(conf))
	nw, _ := newProxyFor(t, cfg2, 1)
	if moved := handOver(t, old, nw); moved != 1 {
		t.Fatalf("moved %d, want 1", moved)
	}
	old.Close()
	io.WriteString(c, "two\n")
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "two\n" {
		t.Fatalf("after: %q %v", buf, err)
	}
	// New clients reach the new process through the same socket.
	c2 := dialUnix(t, in)
	defer c2.Close()
	io.WriteString(c2, "new\n")
	if _, err := io.ReadFull(c2, buf); err != nil || !strings.HasPrefix(string(buf), "new") {
		t.Fatalf("new client: %q %v", buf, err)
	}
}

// health_check works on unix: servers: a socket that goes away is marked
// down, and clients go to the one left.
func TestUnixHealthCheck(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	startUnixBackend(t, a, greet("a"))
	lnB, err := net.Listen("unix", b)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := lnB.Accept()
			if err != nil {
				return
			}
			greet("b")(c)
			c.Close()
		}
	}()
	p, addrs, _ := startConf(t, fmt.Sprintf(`stream {
		upstream u { server unix:%s; server unix:%s; }
		server { listen 127.0.0.1:0; proxy_pass u; health_check interval=100ms; }
	}`, a, b))
	_ = p
	lnB.Close()
	waitFor(t, func() bool {
		for _, u := range p.Status().Upstreams {
			for _, s := range u.Servers {
				if s.Addr == "unix:"+b && s.State != "up" {
					return true
				}
			}
		}
		return false
	})
	for i := 0; i < 4; i++ {
		if got := readAll(t, addrs[0]); got != "a\n" {
			t.Fatalf("client %d: %q, want the healthy socket", i, got)
		}
	}
}

// Servers sharing a unix: listener are virtual servers of it, as of a TCP
// address.
func TestUnixVirtualServers(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.sock")
	startConf(t, fmt.Sprintf(`stream {
		server { listen unix:%s; ssl_preread on; return "default"; }
		server { listen unix:%s; server_name db.example.com; return "db"; }
	}`, in, in))
	for name, want := range map[string]string{"db.example.com": "db", "other.example.com": "default"} {
		c := dialUnix(t, in)
		c.Write(clientHello(t, name))
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != want {
			t.Errorf("%s: %q, want %q", name, b, want)
		}
	}
}
