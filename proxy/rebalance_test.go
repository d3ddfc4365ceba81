package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/dnstest"
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
		rc := longFrom(t, src, listen.String())
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
	// The dry run says the same, and changes nothing.
	plan, err := p.PlanReload(cfg4)
	if err != nil {
		t.Fatal(err)
	}
	planned := 0
	for _, m := range plan.Upstreams[0].Moves {
		if m.To != fmt.Sprintf("127.0.0.64:%d", port) {
			t.Errorf("the plan moves %d from %s to %s", m.N, m.From, m.To)
		}
		planned += m.N
	}
	if plan.Upstreams[0].Live != n || planned != len(moved) {
		t.Fatalf("the plan says %d of %d live sessions misplaced, want %d of %d:\n%s", planned, plan.Upstreams[0].Live, len(moved), n, plan)
	}
	if !strings.Contains(plan.String(), fmt.Sprintf("%d would be misplaced", len(moved))) {
		t.Errorf("plan text:\n%s", plan)
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
		if nc := longFrom(t, c.src, listen.String()); nc.server != "127.0.0.64" {
			t.Fatalf("%s reconnected to %q, want the new owner 127.0.0.64", c.src, nc.server)
		}
		break
	}
}

// switchable is a backend that can be stopped (its listener and every
// connection closed) and started again on the same address.
type switchable struct {
	t     *testing.T
	addr  string
	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func (b *switchable) start() {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	ip, _, _ := net.SplitHostPort(b.addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = true
			b.mu.Unlock()
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", ip)
				io.Copy(c, c)
			}()
		}
	}()
}

func (b *switchable) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ln.Close()
	for c := range b.conns {
		c.Close()
	}
	clear(b.conns)
}

// longFrom opens a long-lived connection to addr from src and reads the
// greeting.
func longFrom(t *testing.T, src, addr string) *rbConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rbConn{src: src, c: c, r: bufio.NewReader(c), closed: make(chan time.Time, 1)}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	line, err := rc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: no greeting: %v", src, err)
	}
	rc.server = strings.TrimSpace(line)
	return rc
}

// A server that fails and comes back gets its keys' sessions back: once its
// fail_timeout has passed, the sessions that went elsewhere while it was
// out are closed, paced over the window, and reconnect to it.
func TestRebalanceServerComesBack(t *testing.T) {
	ips := []string{"127.0.0.71", "127.0.0.72", "127.0.0.73"}
	port := startIPBackends(t, ips...)
	back := &switchable{t: t, addr: fmt.Sprintf("127.0.0.74:%d", port), conns: map[net.Conn]bool{}}
	back.start()
	t.Cleanup(back.stop)
	listen := deadAddr(t).String()
	var servers string
	for _, ip := range append(ips, "127.0.0.74") {
		servers += fmt.Sprintf("server %s:%d fail_timeout=2s; ", ip, port)
	}
	p, _, _ := startConf(t, fmt.Sprintf(`stream {
    upstream u { hash $remote_addr consistent; rebalance window=5s idle=100ms; %s}
    server { listen %s; proxy_pass u; }
}`, servers, listen))
	var on74 []string
	for k := range 200 {
		src := fmt.Sprintf("127.0.4.%d", 1+k)
		if c := longFrom(t, src, listen); c.server == "127.0.0.74" {
			on74 = append(on74, src)
		}
	}
	if len(on74) < 10 {
		t.Fatalf("only %d of 200 keys on the fourth server", len(on74))
	}
	back.stop()
	// Its clients reconnect and land elsewhere (the first refused connect
	// takes the server out for fail_timeout).
	var moved []*rbConn
	for _, src := range on74 {
		c := longFrom(t, src, listen)
		if c.server == "127.0.0.74" {
			t.Fatalf("%s reached the stopped server", src)
		}
		moved = append(moved, c)
		go func() {
			var b [1]byte
			if _, err := c.c.Read(b[:]); err != nil {
				c.closed <- time.Now()
			}
		}()
	}
	back.start()
	cameBack := time.Now()
	perSecond := map[int]int{}
	for _, c := range moved {
		select {
		case at := <-c.closed:
			perSecond[int(at.Sub(cameBack)/time.Second)]++
		case <-time.After(20 * time.Second):
			t.Fatalf("the session of %s on %s did not go back to its server", c.src, c.server)
		}
	}
	took := time.Since(cameBack)
	t.Logf("%d sessions went back over %s; per second: %v", len(moved), took.Round(time.Millisecond), perSecond)
	if took < 4*time.Second { // 2s fail_timeout, then a 5s window
		t.Errorf("the sessions went back within %s", took)
	}
	for sec, k := range perSecond {
		if k > 2*len(moved)/5+1 {
			t.Errorf("%d of %d sessions closed in second %d: not paced (%v)", k, len(moved), sec, perSecond)
		}
	}
	if c := longFrom(t, on74[0], listen); c.server != "127.0.0.74" {
		t.Fatalf("%s reconnected to %s, want its server back", on74[0], c.server)
	}
	if st := p.Status().Upstreams[0].Rebalance; st == nil || st.ClosedIdle+st.ClosedAtEnd < uint64(len(moved)) {
		t.Errorf("status %+v, want %d closed", st, len(moved))
	}
}

// A rebalance under way goes on in the new process after an upgrade, with
// the old process's plan: the misplaced sessions are all closed by the end
// of the window that began before the handover, not over a new one.
func TestRebalanceSurvivesHandoff(t *testing.T) {
	ips := []string{"127.0.0.81", "127.0.0.82", "127.0.0.83"}
	port := startIPBackends(t, ips...)
	listen := deadAddr(t)
	conf := func(n int) *config.Config {
		var servers string
		for _, ip := range ips[:n] {
			servers += fmt.Sprintf("server %s:%d; ", ip, port)
		}
		cfg, err := config.Parse("r.conf", []byte(fmt.Sprintf(`stream {
    upstream u { ip_hash; rebalance window=4s idle=100ms; %s}
    server { listen %s; proxy_pass u; }
}`, servers, listen)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	old, _, _ := startProxy(t, conf(2))
	var conns []*rbConn
	for k := range 120 {
		conns = append(conns, longFrom(t, fmt.Sprintf("127.%d.5.1", 10+k), listen.String()))
	}
	pk, err := NewPicker(conf(3).Stream.Upstreams[0])
	if err != nil {
		t.Fatal(err)
	}
	var moved []*rbConn
	for _, c := range conns {
		if _, a, _ := pk.Pick(c.src); a.Addr().String() != c.server {
			moved = append(moved, c)
			go func() {
				var b [1]byte
				if _, err := c.c.Read(b[:]); err != nil {
					c.closed <- time.Now()
				}
			}()
		}
	}
	if len(moved) < 10 {
		t.Fatalf("only %d keys move", len(moved))
	}
	start := time.Now()
	if _, err := old.Reload(conf(3)); err != nil {
		t.Fatal(err)
	}
	// Half way through the window, the sessions move to a new process.
	waitFor(t, func() bool {
		st := old.Status().Upstreams[0].Rebalance
		return st.ClosedIdle+st.ClosedAtEnd >= uint64(len(moved)/3)
	})
	nw, _ := newProxyFor(t, conf(3), 1)
	handOver(t, old, nw)
	old.Close()
	for _, c := range moved {
		select {
		case <-c.closed:
		case <-time.After(15 * time.Second):
			t.Fatalf("the misplaced session of %s was not closed after the handover", c.src)
		}
	}
	if took := time.Since(start); took > 4*time.Second+600*time.Millisecond {
		t.Fatalf("the rebalance took %s: the new process began a window of its own", took)
	}
	st := nw.Status().Upstreams[0].Rebalance
	if st == nil || st.ClosedIdle+st.ClosedAtEnd == 0 {
		t.Fatalf("the new process closed none of them: %+v", st)
	}
}

// A DNS change is a trigger too: when a resolved name gains an address, the
// sessions whose keys it now owns (hash_ring address) are moved to it, and
// only those.
func TestRebalanceOnDNSChange(t *testing.T) {
	port := startIPBackends(t, "127.0.0.91", "127.0.0.92", "127.0.0.93")
	d := dnstest.Start(t)
	d.SetA("pods.test", 1, "127.0.0.91", "127.0.0.92")
	listen := deadAddr(t).String()
	p, _, _ := startConf(t, fmt.Sprintf(`stream {
    resolver %s;
    upstream u { zone z 1m; hash $remote_addr consistent; hash_ring address; rebalance window=2s idle=100ms;
                 server pods.test:%d resolve; }
    server { listen %s; proxy_pass u; }
}`, d.Addr(), port, listen))
	var conns []*rbConn
	var ended atomic.Int64
	for k := range 90 {
		c := longFrom(t, fmt.Sprintf("127.0.6.%d", 1+k), listen)
		conns = append(conns, c)
		go func() {
			var b [1]byte
			if _, err := c.c.Read(b[:]); err != nil {
				c.closed <- time.Now()
				ended.Add(1)
			}
		}()
	}
	d.SetA("pods.test", 1, "127.0.0.91", "127.0.0.92", "127.0.0.93")
	waitFor(t, func() bool { return len(p.Status().Upstreams[0].Resolved[0].Addrs) == 3 })
	// Past the window (2s, and a look of every loop), every misplaced
	// session is closed and its client has seen the end.
	windowEnd := time.Now().Add(2*time.Second + 2*rebalanceTick)
	var closes uint64
	waitFor(t, func() bool {
		rb := p.Status().Upstreams[0].Rebalance
		closes = rb.ClosedIdle + rb.ClosedAtEnd
		return time.Now().After(windowEnd) && rb.Misplaced == 0 && closes > 0 && ended.Load() == int64(closes)
	})
	var moved int
	for _, c := range conns {
		select {
		case <-c.closed:
			moved++
			if nc := longFrom(t, c.src, listen); nc.server != "127.0.0.93" {
				t.Fatalf("%s was closed but belongs to %s, not the new address", c.src, nc.server)
			}
		default:
			// Not moved: it must not belong to the new address.
			if pk := longFrom(t, c.src, listen); pk.server == "127.0.0.93" {
				t.Fatalf("%s belongs to the new address but its session on %s was left", c.src, c.server)
			}
		}
	}
	if uint64(moved) != closes {
		t.Errorf("%d sessions ended, the status counts %d closes", moved, closes)
	}
	t.Logf("%d of %d sessions moved to the new address", moved, len(conns))
}
