package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// rbConn is a long-lived client connection of the rebalance test.
type rbConn struct {
	src    string // its source address: the key of hash $remote_addr
	c      net.Conn
	r      *bufio.Reader
	server string // the backend that greeted it
	closed chan time.Time
}

func (c *rbConn) roundTrip(msg string) error {
	if _, err := fmt.Fprintf(c.c, "%s\n", msg); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return fmt.Errorf("echoed %q, want %q", line, msg)
	}
	return nil
}

// A reload that adds a fourth server to a consistent hash with rebalance
// closes exactly the live sessions whose key moved to it (as the proxy's
// own Picker, which "baton hash --against" uses, says), paced over the
// window, each stream intact until then and every other one untouched; a
// client that reconnects lands on the new owner.
func TestRebalanceAfterReload(t *testing.T) {
	ips := []string{"127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64"}
	port := startIPBackends(t, ips...)
	listen := deadAddr(t)
	conf := func(n int) string {
		var servers string
		for _, ip := range ips[:n] {
			servers += fmt.Sprintf("server %s:%d; ", ip, port)
		}
		return fmt.Sprintf(`stream {
    upstream u { hash $remote_addr consistent; rebalance window=10s idle=200ms; %s}
    server { listen %s; proxy_pass u; }
}`, servers, listen)
	}
	p, _, _ := startConf(t, conf(3))
	const n = 300
	conns := make([]*rbConn, n)
	for k := range conns {
		src := fmt.Sprintf("127.0.%d.%d", 2+k/250, 1+k%250)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", listen.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		rc := &rbConn{src: src, c: c, r: bufio.NewReader(c), closed: make(chan time.Time, 1)}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		line, err := rc.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		rc.server = strings.TrimSpace(line)
		if err := rc.roundTrip("before"); err != nil {
			t.Fatalf("%s before the reload: %v", src, err)
		}
		conns[k] = rc
	}
	// Where each key belongs after the change, as baton hash --against.
	cfg4, err := config.Parse("b.conf", []byte(conf(4)))
	if err != nil {
		t.Fatal(err)
	}
	pk, err := NewPicker(cfg4.Stream.Upstreams[0])
	if err != nil {
		t.Fatal(err)
	}
	moved := map[string]bool{}
	for _, c := range conns {
		_, a, err := pk.Pick(c.src)
		if err != nil {
			t.Fatal(err)
		}
		if a.Addr().String() != c.server {
			moved[c.src] = true
		}
	}
	if len(moved) < 30 || len(moved) > 150 {
		t.Fatalf("%d of %d keys move to the fourth server: the test needs a quarter or so", len(moved), n)
	}
	// Watch every misplaced connection for its end.
	for _, c := range conns {
		if !moved[c.src] {
			continue
		}
		go func() {
			c.c.SetReadDeadline(time.Now().Add(40 * time.Second))
			var b [1]byte
			_, err := c.c.Read(b[:])
			if err != nil {
				c.closed <- time.Now()
			}
		}()
	}
	start := time.Now()
	if _, err := p.Reload(cfg4); err != nil {
		t.Fatal(err)
	}
	perSecond := map[int]int{}
	for _, c := range conns {
		if !moved[c.src] {
			continue
		}
		select {
		case at := <-c.closed:
			perSecond[int(at.Sub(start)/time.Second)]++
		case <-time.After(30 * time.Second):
			t.Fatalf("the misplaced session of %s on %s was not closed", c.src, c.server)
		}
	}
	took := time.Since(start)
	for sec, k := range perSecond {
		if k > len(moved)/5+1 {
			t.Errorf("%d of the %d misplaced sessions closed in second %d: more than a fifth (%v)", k, len(moved), sec, perSecond)
		}
	}
	if took < 5*time.Second {
		t.Errorf("the %d misplaced sessions were closed within %s of a 10s window", len(moved), took)
	}
	t.Logf("%d of %d sessions misplaced, closed over %s; per second: %v", len(moved), n, took.Round(time.Millisecond), perSecond)
	// Every other stream is intact: a round trip on each.
	touched := 0
	for _, c := range conns {
		if !moved[c.src] {
			if err := c.roundTrip("after"); err != nil {
				touched++
			}
		}
	}
	if touched > 0 {
		t.Fatalf("%d sessions that were not misplaced were cut", touched)
	}
	st := p.Status().Upstreams[0].Rebalance
	if st == nil || st.Misplaced != 0 || st.ClosedIdle+st.ClosedAtEnd != uint64(len(moved)) {
		t.Errorf("status says %+v, want %d closed and none misplaced", st, len(moved))
	}
	// A moved client reconnects to the new owner.
	for _, c := range conns {
		if !moved[c.src] {
			continue
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.src)}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", listen.String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(nc).ReadString('\n')
		if strings.TrimSpace(line) != "127.0.0.64" {
			t.Fatalf("%s reconnected to %q, want the new owner 127.0.0.64", c.src, line)
		}
		break
	}
}
