package proxy

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// startHandOver gives old's listeners to nw and makes old stop accepting,
// as the protocol's first steps do: sessions can be quiesced then.
func startHandOver(t *testing.T, old, nw *Proxy) {
	t.Helper()
	files, err := old.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Sink().AdoptListeners(files); err != nil {
		t.Fatal(err)
	}
	old.PauseAccepting()
}

// handOver moves everything from old to new in this process, as the
// protocol does across processes: listeners, then batches of sessions.
func handOver(t *testing.T, old, new *Proxy) (moved int) {
	t.Helper()
	startHandOver(t, old, new)
	return moveSessions(t, old, new)
}

// moveSessions is handOver's part after startHandOver: batches of
// sessions until Quiesce is done.
func moveSessions(t *testing.T, old, new *Proxy) (moved int) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		conns, done, err := old.Quiesce(126)
		if err != nil {
			t.Fatal(err)
		}
		if len(conns) > 0 {
			accepted, rejected := new.Sink().Import(conns)
			if len(rejected) > 0 {
				t.Fatalf("rejected: %v", rejected)
			}
			old.Release(accepted) // after ACCEPTED
			new.Sink().Start(accepted)
			moved += len(accepted)
		}
		if done {
			return moved
		}
	}
	t.Fatal("Quiesce never finished")
	return
}

// importOne hands old's listeners to nw and quiesces old's one session
// into nw, which accepts it but is never told to Start it: the old process
// dies here, in the tests that call it.
func importOne(t *testing.T, old, nw *Proxy) {
	t.Helper()
	startHandOver(t, old, nw)
	conns, _, err := old.Quiesce(126)
	if err != nil || len(conns) != 1 {
		t.Fatalf("quiesce: %d, %v", len(conns), err)
	}
	if acc, rej := nw.Sink().Import(conns); len(acc) != 1 || len(rej) != 0 {
		t.Fatalf("import: %v %v", acc, rej)
	}
}

// gate is an upstream that reads nothing until released, so bytes from the
// client pile up in baton (c2u pending); and a client that reads nothing
// until released makes u2c pending.
type gate struct {
	release chan struct{}
	got     chan []byte
}

func TestHandoffMovesLiveSessionsByteExact(t *testing.T) {
	const toClient = 8 << 20 // more than every buffer on the way: baton holds some
	const toUpstream = 8 << 20
	down := make([]byte, toClient)
	up := make([]byte, toUpstream)
	rand.Read(down)
	rand.Read(up)
	g := &gate{release: make(chan struct{}), got: make(chan []byte, 1)}
	b := startBackend(t, "gate", func(c net.Conn) {
		go c.Write(down) // blocks until the client reads
		<-g.release
		got, _ := io.ReadAll(io.LimitReader(c, toUpstream))
		g.got <- got
	})
	cfg := testConfig([]upstreamSpec{{addr: b.addr()}}, nil)
	old, addr, _ := startProxy(t, cfg)

	c := dial(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // blocks until the upstream reads
		defer wg.Done()
		c.Write(up)
	}()
	// Let both directions fill up: baton must be holding pending bytes
	// both ways when it is quiesced, or this test proves nothing.
	waitFor(t, func() bool {
		var mu sync.Mutex // eachLoop runs on every loop at once
		var pendC2U, pendU2C int
		old.eachLoop(func(l *loop) {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range l.sessions {
				pendC2U += len(s.c2u.pend) + s.c2u.inPipe
				pendU2C += len(s.u2c.pend) + s.u2c.inPipe
			}
		})
		return pendC2U > 0 && pendU2C > 0
	})

	cfg2 := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	})
	nw, err := New(cfg2, Options{Log: old.log, Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if moved := handOver(t, old, nw); moved != 1 {
		t.Fatalf("moved %d sessions, want 1", moved)
	}
	old.Close() // the old process goes away: the session must not notice

	close(g.release)
	got, err := io.ReadAll(io.LimitReader(c, toClient))
	if err != nil || !bytes.Equal(got, down) {
		t.Fatalf("client got %d bytes (err %v), want the %d sent, in order", len(got), err, toClient)
	}
	wg.Wait()
	if got := <-g.got; !bytes.Equal(got, up) {
		t.Fatalf("upstream got %d bytes, want the %d sent, in order", len(got), toUpstream)
	}
	// New connections land in the new process.
	before := nw.Stats().Total
	c2 := dial(t, addr)
	c2.Write([]byte{0})
	c2.Close()
	waitFor(t, func() bool { return nw.Stats().Total == before+1 })
}

// waitFor polls cond (at most 10s).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("condition not met after 10s")
		}
	}
}

func TestHandoffManyIdleSessions(t *testing.T) {
	b := startBackend(t, "echo", echo)
	old, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, nil))
	const n = 300
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dial(t, addr)
		defer conns[i].Close()
		fmt.Fprintf(conns[i], "before %d\n", i)
		if got := readLine(t, conns[i]); got != fmt.Sprintf("before %d", i) {
			t.Fatal(got)
		}
	}
	cfg2 := testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	})
	nw, err := New(cfg2, Options{Log: old.log, Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if moved := handOver(t, old, nw); moved != n {
		t.Fatalf("moved %d, want %d", moved, n)
	}
	if old.Stats().Active != 0 {
		t.Fatalf("old process still counts %d sessions", old.Stats().Active)
	}
	old.Close()
	for i, c := range conns {
		fmt.Fprintf(c, "after %d\n", i)
		if got := readLine(t, c); got != fmt.Sprintf("after %d", i) {
			t.Fatalf("session %d after the handoff: %q", i, got)
		}
	}
	if nw.Stats().Active != n {
		t.Fatalf("new process counts %d sessions, want %d", nw.Stats().Active, n)
	}
}

// Sessions move in whatever phase they are in: one whose connect is still
// under way, and one whose PROXY header is half read.
func TestHandoffMovesConnectingAndHeaderSessions(t *testing.T) {
	hang := fullListener(t)
	live := startBackend(t, "live", greet("live"))
	cfg := testConfig([]upstreamSpec{{addr: netip.MustParseAddrPort(hang)}, {addr: live.addr()}}, func(s *config.Server) {
		s.ProxyConnectTimeout = 300 * time.Millisecond
		s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "pp", Backlog: 511, ProxyProtocol: true})
		s.SetRealIPFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		s.ProxyProtocolTimeout = 5 * time.Second
	})
	old, addr, _ := startProxy(t, cfg)
	ppAddr := old.Addrs()[1].String()

	// Connecting: round robin sends the first client to the hanging server.
	connecting := dial(t, addr)
	defer connecting.Close()
	// Header: half a PROXY header.
	header := dial(t, ppAddr)
	defer header.Close()
	h := append(v1Header("192.0.2.5:4000"), "payload"...)
	header.Write(h[:10])
	waitFor(t, func() bool {
		var mu sync.Mutex // eachLoop runs on every loop at once
		var phases []sessState
		old.eachLoop(func(l *loop) {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range l.sessions {
				phases = append(phases, s.state)
			}
		})
		hasC, hasH := false, false
		for _, st := range phases {
			hasC = hasC || st == stateConnecting
			hasH = hasH || st == stateHeader
		}
		return hasC && hasH
	})

	cfg2 := testConfig([]upstreamSpec{{addr: netip.MustParseAddrPort(hang)}, {addr: live.addr()}}, func(s *config.Server) {
		s.ProxyConnectTimeout = 300 * time.Millisecond
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
		s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort(ppAddr), Text: "pp", Backlog: 511, ProxyProtocol: true})
		s.SetRealIPFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		s.ProxyProtocolTimeout = 5 * time.Second
	})
	nw, err := New(cfg2, Options{Log: old.log, Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if moved := handOver(t, old, nw); moved != 2 {
		t.Fatalf("moved %d sessions, want 2", moved)
	}
	old.Close()
	// The moved connect times out in the new process, which then tries the
	// next server, as the old one would have.
	if got := readLine(t, connecting); got != "live" {
		t.Fatalf("the session moved while connecting: %q", got)
	}
	// The rest of the header reaches the new process, which parses it.
	header.Write(h[10:])
	if got := readLine(t, header); got != "live" {
		t.Fatalf("the session moved mid-header: %q", got)
	}
}

// TestHandoffNeverStarted: connections imported by a new process whose old
// process died before Start are closed by HandoffDone, their descriptors
// given back, not held for good.
func TestHandoffNeverStarted(t *testing.T) {
	b := startBackend(t, "b", func(c net.Conn) {
		io.WriteString(c, "b\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure does not hang the cleanup
		io.Copy(io.Discard, c)
	})
	old, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: b.addr()}}, nil))
	c := dial(t, addr)
	defer c.Close()
	if got := readLine(t, c); got != "b" {
		t.Fatalf("greeting %q", got)
	}
	nw, log := newProxyFor(t, testConfig([]upstreamSpec{{addr: b.addr()}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	}), 1)
	importOne(t, old, nw)
	held := nw.fds.held.Load()
	// The old process dies here: no Start, no DONE.
	old.Close()
	nw.HandoffDone()
	nw.HandoffDone() // idempotent
	if now := nw.fds.held.Load(); now != held-tcpSessionFDs {
		t.Errorf("descriptors held: %d after HandoffDone, %d before; want the import's given back", now, held)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the client read %d bytes from a connection nobody serves", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the client's connection is still open: the unstarted import was not closed")
	}
	if !strings.Contains(log.String(), "1 TCP connections were imported but never started") {
		t.Errorf("log:\n%s", log.String())
	}
	// The new process serves.
	c2 := dial(t, addr)
	defer c2.Close()
	if got := readLine(t, c2); got != "b" {
		t.Fatalf("after HandoffDone: %q", got)
	}
}
