package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/fdpass"
)

// udpHandOver moves everything from old to nw as handOver does, then ends
// the handoff (HandoffDone, as the child's Done does). duringPause runs
// while both processes are paused: the old one stopped reading, the new one
// not reading yet.
func udpHandOver(t *testing.T, old, nw *Proxy, duringPause func()) (moved int) {
	t.Helper()
	startHandOver(t, old, nw)
	if duringPause != nil {
		duringPause()
	}
	for i := 0; i < 1000; i++ {
		conns, done, err := old.Quiesce(126)
		if err != nil {
			t.Fatal(err)
		}
		if len(conns) > 0 {
			accepted, rejected := nw.Sink().Import(conns)
			if len(rejected) > 0 {
				t.Fatalf("rejected: %v", rejected)
			}
			old.Release(accepted)
			nw.Sink().Start(accepted)
			moved += len(accepted)
		}
		if done {
			nw.HandoffDone()
			return moved
		}
	}
	t.Fatal("Quiesce never finished")
	return
}

func newProxyFor(t *testing.T, cfg *config.Config, gen int) (*Proxy, *logBuf) {
	t.Helper()
	return newProxyLoops(t, cfg, gen, 0)
}

// newProxyLoops is newProxyFor with loops event loops (0: the default).
func newProxyLoops(t *testing.T, cfg *config.Config, gen, loops int) (*Proxy, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	p, err := New(cfg, Options{Log: NewWriterLogger(lb, LevelInfo), Generation: gen, Loops: loops})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("proxy (generation %d) log:\n%s", gen, lb.String())
		}
	})
	return p, lb
}

// lockstep sends numbered datagrams one at a time, each answered before the
// next (so at most one in flight: the "low rate"), until stop; each reply
// must be the backend's tag for the same upstream port, and none may be
// missing.
func lockstep(c *udpClient, stop <-chan struct{}, rounds *int, mu *sync.Mutex) error {
	var tag string
	buf := make([]byte, 1<<16)
	for i := 0; i < 1_000_000; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		msg := fmt.Sprintf("seq-%d", i)
		if _, err := c.c.WriteToUDPAddrPort([]byte(msg), c.proxy); err != nil {
			return err
		}
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := c.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("datagram %q lost: %v", msg, err)
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) != 3 || f[2] != msg {
			return fmt.Errorf("sent %q, got %q", msg, buf[:n])
		}
		if tag == "" {
			tag = f[0] + " " + f[1]
		} else if f[0]+" "+f[1] != tag {
			return fmt.Errorf("datagram %d went through upstream socket %s, the session's is %s", i, f[0]+" "+f[1], tag)
		}
		mu.Lock()
		*rounds = i + 1
		mu.Unlock()
	}
	return nil
}

func TestUDPHandoffKeepsSessionsAndUpstreamSockets(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	path := filepath.Join(t.TempDir(), "old-access.log")
	cfg := udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.AccessLogs = []*config.AccessLog{{Path: path, Format: &config.LogFormat{Name: "t", Format: "$status"}}}
	})
	old, _ := newProxyFor(t, cfg, 0)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	addr := old.Addrs()[0].String()

	// Idle sessions, each with its own upstream socket.
	const idle = 20
	clients := make([]*udpClient, idle)
	tags := make([]string, idle)
	for i := range clients {
		clients[i] = newUDPClient(t, addr)
		tags[i] = tagPort(t, clients[i].ask(fmt.Sprintf("before-%d", i)))
	}
	// One session in lockstep through the whole handoff.
	lc := newUDPClient(t, addr)
	stop := make(chan struct{})
	errc := make(chan error, 1)
	var mu sync.Mutex
	rounds := 0
	go func() { errc <- lockstep(lc, stop, &rounds, &mu) }()
	at := func() int { mu.Lock(); defer mu.Unlock(); return rounds }
	waitFor(t, func() bool { return at() >= 20 })

	cfg2 := udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	})
	nw, _ := newProxyFor(t, cfg2, 1)
	// A datagram sent while neither process reads queues in the shared
	// socket and is answered by the moved session, through its own
	// upstream socket (P19).
	moved := udpHandOver(t, old, nw, func() { clients[0].send([]byte("during")) })
	if moved != idle+1 {
		t.Fatalf("moved %d sessions, want %d", moved, idle+1)
	}
	if got, err := clients[0].recv(5 * time.Second); err != nil || tagPort(t, string(got)) != tags[0] || !strings.HasSuffix(string(got), " during") {
		t.Fatalf("the datagram sent during the handoff: %q, %v (want it via %s)", got, err, tags[0])
	}
	if st := old.Stats(); st.Active != 0 {
		t.Fatalf("the old process still counts %d sessions", st.Active)
	}
	if st := nw.Stats(); st.Active != idle+1 {
		t.Fatalf("the new process counts %d sessions, want %d", st.Active, idle+1)
	}
	old.Close() // the old process goes away: no session may notice

	n := at()
	waitFor(t, func() bool { return at() >= n+20 })
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if got := tagPort(t, c.ask(fmt.Sprintf("after-%d", i))); got != tags[i] {
			t.Fatalf("client %d: upstream socket %s after the handoff, %s before", i, got, tags[i])
		}
	}
	if st := nw.Stats(); st.Active != idle+1 || st.Total != 0 {
		t.Fatalf("new process stats %+v, want %d active, none new", st, idle+1)
	}
	// Released sessions leave no access-log line in the old process.
	if data, _ := os.ReadFile(path); len(data) != 0 {
		t.Fatalf("old access log %q, want nothing", data)
	}
	// A new client gets a session in the new process.
	c := newUDPClient(t, addr)
	if got := c.ask("new"); !strings.HasSuffix(got, " new") {
		t.Fatalf("new client got %q", got)
	}
	if st := nw.Stats(); st.Total != 1 || st.Active != idle+2 {
		t.Fatalf("new process stats %+v after a new client", st)
	}
	// The moved sessions still end normally there.
	ends := watchEnds(t, nw)
	nw.Close()
	for i := 0; i < idle+2; i++ {
		if e := waitEnd(t, ends); e.status != 200 || e.reason != endClosed {
			t.Fatalf("end %+v", e)
		}
	}
}

func TestUDPHandoffRestoreAndResume(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	old, _ := newProxyFor(t, udpConfig([]upstreamSpec{{addr: b.addr}}, nil), 0)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	addr := old.Addrs()[0].String()
	c := newUDPClient(t, addr)
	tag := tagPort(t, c.ask("one"))

	files, err := old.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Name != "udp/"+addr {
		t.Fatalf("listeners %v", files)
	}
	for _, nf := range files {
		nf.File.Close()
	}
	old.PauseAccepting()
	c.send([]byte("paused")) // queued in the socket, read after the resume
	conns, _, err := old.Quiesce(126)
	if err != nil || len(conns) != 1 || len(conns[0].Files) != 1 {
		t.Fatalf("quiesce: %d conns, err %v", len(conns), err)
	}
	m, err := decodeUDPState(conns[0].State)
	if err != nil || m.client != c.c.LocalAddr().(*net.UDPAddr).AddrPort() || m.upstream != b.addr || m.requests != 1 || m.responses != 1 {
		t.Fatalf("state %+v, %v", m, err)
	}
	if _, err := decodeState(conns[0].State); err == nil {
		t.Fatal("a UDP state decodes as a TCP one")
	}
	// The new process refused it (or died before ACCEPTED): it goes on here.
	for _, f := range conns[0].Files {
		f.Close()
	}
	old.Restore([]uint64{conns[0].ID})
	if more, done, err := old.Quiesce(126); len(more) != 0 || !done || err != nil {
		t.Fatalf("a restored session was offered again: %d, %v, %v", len(more), done, err)
	}
	old.ResumeAccepting()
	got, err := c.recv(5 * time.Second)
	if err != nil || tagPort(t, string(got)) != tag || !strings.HasSuffix(string(got), " paused") {
		t.Fatalf("after the resume: %q, %v", got, err)
	}
	if got := tagPort(t, c.ask("two")); got != tag {
		t.Fatalf("upstream socket %s after restore, %s before", got, tag)
	}
	// A second pause and resume without any Quiesce.
	old.PauseAccepting()
	old.ResumeAccepting()
	if got := tagPort(t, c.ask("three")); got != tag {
		t.Fatalf("upstream socket %s after a pause, %s before", got, tag)
	}
	if st := old.Stats(); st.Active != 1 || st.Total != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestUDPHandoffNeverDone: a child that never gets DONE still serves its
// UDP listeners once HandoffDone is called (the lead calls it when Takeover
// fails too), and closes sessions imported but never started.
func TestUDPHandoffNeverDone(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	old, _ := newProxyFor(t, udpConfig([]upstreamSpec{{addr: b.addr}}, nil), 0)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	addr := old.Addrs()[0].String()
	c := newUDPClient(t, addr)
	c.ask("x")
	nw, _ := newProxyFor(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	}), 1)
	importOne(t, old, nw)
	// The old process dies here: no Start, no DONE.
	old.Close()
	nw.HandoffDone()
	nw.HandoffDone() // idempotent
	c2 := newUDPClient(t, addr)
	if got := c2.ask("y"); !strings.HasSuffix(got, " y") {
		t.Fatalf("got %q", got)
	}
	if st := nw.Stats(); st.Active != 1 || st.Total != 1 {
		t.Fatalf("stats %+v: the unstarted import must be gone", st)
	}
}

func TestUDPStateRoundTrip(t *testing.T) {
	m := &udpMovedState{
		id: 1<<48 | 7, listener: "udp/0.0.0.0:53", client: netip.MustParseAddrPort("10.0.0.1:5000"),
		local: netip.MustParseAddrPort("10.0.0.2:53"), dst: netip.MustParseAddr("10.0.0.2"), ifidx: 3,
		upstream: netip.MustParseAddrPort("10.0.0.9:53"), upstreamAddrs: "10.0.0.9:53",
		requests: 4, responses: 3, received: 100, sent: 90, upSent: 100, age: 5e9, idle: 1e9, connectTime: 1000,
		detached: true, pend: [][]byte{[]byte("a"), {}},
	}
	b := m.encode()
	got, err := decodeUDPState(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", *m) {
		t.Fatalf("got %+v\nwant %+v", *got, *m)
	}
	for i := 0; i < len(b); i++ {
		if _, err := decodeUDPState(b[:i]); err == nil {
			t.Fatalf("a state cut at %d decoded", i)
		}
	}
	if !bytes.Equal(m.encode(), b) {
		t.Fatal("encode is not deterministic")
	}
}

// holdBackend answers "hold" with nothing but remembers who asked, so that
// the test can send a late reply through the same upstream socket.
type holdBackend struct {
	*udpBackend
	held chan netip.AddrPort
}

func startHoldBackend(t *testing.T, name string) *holdBackend {
	h := &holdBackend{held: make(chan netip.AddrPort, 16)}
	tag := udpTag(name)
	h.udpBackend = startUDPBackend(t, func(b []byte, from netip.AddrPort) [][]byte {
		if string(b) == "hold" {
			h.held <- from
			return nil
		}
		return tag(b, from)
	})
	return h
}

func TestUDPReloadUnderTraffic(t *testing.T) {
	b1 := startUDPBackend(t, udpTag("b1"))
	b2 := startUDPBackend(t, udpTag("b2"))
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b1.addr}}, nil))
	ap := netip.MustParseAddrPort(addr)

	// Sessions in lockstep through the reload: each keeps its upstream
	// socket (and so b1), none loses a datagram.
	const live = 8
	stop := make(chan struct{})
	errc := make(chan error, live)
	var mu sync.Mutex
	rounds := make([]int, live)
	for i := 0; i < live; i++ {
		c := newUDPClient(t, addr)
		go func() { errc <- lockstep(c, stop, &rounds[i], &mu) }()
	}
	min := func() int {
		mu.Lock()
		defer mu.Unlock()
		m := rounds[0]
		for _, r := range rounds {
			m = intMin(m, r)
		}
		return m
	}
	waitFor(t, func() bool { return min() >= 10 })
	old := newUDPClient(t, addr)
	oldTag := tagPort(t, old.ask("x"))

	cfg2 := udpConfig([]upstreamSpec{{addr: b2.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = ap
		s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "127.0.0.1:0 udp", UDP: true})
	})
	ch, err := p.Reload(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.ListenersKept) != 1 || len(ch.ListenersAdded) != 1 || len(ch.ListenersRemoved) != 0 || len(ch.UpstreamsChanged) != 1 {
		t.Fatalf("changes %+v", ch)
	}
	n := min()
	waitFor(t, func() bool { return min() >= n+10 })
	close(stop)
	for i := 0; i < live; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if got := tagPort(t, old.ask("y")); got != oldTag {
		t.Fatalf("a live session moved from %s to %s", oldTag, got)
	}
	// New sessions follow the new config, on both listeners.
	if got := newUDPClient(t, addr).ask("new"); !strings.HasPrefix(got, "b2 ") {
		t.Fatalf("a new session on the kept listener got %q", got)
	}
	added := p.Addrs()[1].String()
	if got := newUDPClient(t, added).ask("new"); !strings.HasPrefix(got, "b2 ") {
		t.Fatalf("a new session on the added listener got %q", got)
	}
	st := p.Status()
	if len(st.Listeners) != 2 || st.Listeners[0].Upstream != "backend" {
		t.Fatalf("status %+v", st.Listeners)
	}
}

func TestUDPReloadRemovedListenerDrains(t *testing.T) {
	b := startHoldBackend(t, "b")
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen = append(s.Listen, &config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "127.0.0.1:0 udp", UDP: true})
	}))
	gone := p.Addrs()[1].String()
	ends := watchEnds(t, p)
	c := newUDPClient(t, gone)
	c.send([]byte("hold"))
	var up netip.AddrPort
	select {
	case up = <-b.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend got nothing")
	}
	retiring := p.udp[1]

	ch, err := p.Reload(udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.ListenersKept) != 1 || len(ch.ListenersRemoved) != 1 || len(ch.ListenersAdded) != 0 {
		t.Fatalf("changes %+v", ch)
	}
	// The live session still delivers its upstream's reply.
	if _, err := b.conn.WriteToUDPAddrPort([]byte("late"), up); err != nil {
		t.Fatal(err)
	}
	if got, err := c.recv(5 * time.Second); err != nil || string(got) != "late" {
		t.Fatalf("drained reply %q, %v", got, err)
	}
	if st := p.Stats(); st.Active != 1 {
		t.Fatalf("stats %+v: the draining session must still count", st)
	}
	// The session ends on its own (here: the proxy closes it) and the
	// retired listener finishes; the next reload forgets it.
	retiring.l.call(func() {
		for s := range retiring.live {
			retiring.end(s, 200, endClosed)
		}
	})
	if e := waitEnd(t, ends); e.u != retiring {
		t.Fatalf("end %+v", e)
	}
	select {
	case <-retiring.finished:
	case <-time.After(5 * time.Second):
		t.Fatal("the retired listener never finished")
	}
	if _, err := p.Reload(udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	})); err != nil {
		t.Fatal(err)
	}
	p.reloadMu.Lock()
	n := len(p.udp)
	p.reloadMu.Unlock()
	if n != 1 {
		t.Fatalf("%d UDP listeners after the retired one finished, want 1", n)
	}
	if got := newUDPClient(t, addr).ask("kept"); !strings.HasSuffix(got, " kept") {
		t.Fatalf("got %q", got)
	}
}

func TestUDPReloadBindErrorChangesNothing(t *testing.T) {
	b1 := startUDPBackend(t, udpTag("b1"))
	b2 := startUDPBackend(t, udpTag("b2"))
	p, addr, _ := startProxy(t, udpConfig([]upstreamSpec{{addr: b1.addr}}, nil))
	c := newUDPClient(t, addr)
	tag := tagPort(t, c.ask("x"))
	// An address held by a socket without SO_REUSEADDR cannot be bound.
	taken, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenAddr := taken.LocalAddr().(*net.UDPAddr).AddrPort()
	p.reloadMu.Lock()
	before := append([]*udpListener(nil), p.udp...)
	p.reloadMu.Unlock()
	_, err = p.Reload(udpConfig([]upstreamSpec{{addr: b2.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
		s.Listen = append(s.Listen,
			&config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Text: "127.0.0.1:0 udp", UDP: true},
			&config.Listen{Addr: takenAddr, Text: takenAddr.String() + " udp", UDP: true, Pos: config.Pos{File: "test.conf", Line: 9}})
	}))
	if err == nil || !strings.Contains(err.Error(), "test.conf:9") {
		t.Fatalf("reload error %v, want the bind error of test.conf:9", err)
	}
	p.reloadMu.Lock()
	after := append([]*udpListener(nil), p.udp...)
	p.reloadMu.Unlock()
	if len(after) != len(before) || after[0] != before[0] || after[0].retired.Load() {
		t.Fatalf("UDP listeners changed: %v -> %v", before, after)
	}
	if got := newUDPClient(t, addr).ask("new"); !strings.HasPrefix(got, "b1 ") {
		t.Fatalf("a new session after a failed reload got %q, want b1", got)
	}
	if got := tagPort(t, c.ask("y")); got != tag {
		t.Fatalf("the live session moved: %s -> %s", tag, got)
	}
}

func intMin(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// TestUDPHandoffOverProtocol runs the real protocol (fdpass.Upgrade and
// Takeover over a socketpair) between two proxies in this process, with
// HandoffDone in Takeover's Done as cmd/baton does.
func TestUDPHandoffOverProtocol(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	old, _ := newProxyFor(t, udpConfig([]upstreamSpec{{addr: b.addr}}, nil), 0)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	addr := old.Addrs()[0].String()
	const n = 300 // more than one batch
	clients := make([]*udpClient, n)
	tags := make([]string, n)
	for i := range clients {
		clients[i] = newUDPClient(t, addr)
		tags[i] = tagPort(t, clients[i].ask("before"))
	}
	nw, _ := newProxyFor(t, udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].Addr = netip.MustParseAddrPort(addr)
	}), 1)
	parent, childEnd, err := fdpass.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	fc, err := net.FileConn(childEnd)
	childEnd.Close()
	if err != nil {
		t.Fatal(err)
	}
	child := fc.(*net.UnixConn)
	defer child.Close()
	taken := make(chan error, 1)
	go func() {
		err := fdpass.Takeover(child, nw.Sink(), fdpass.TakeoverOptions{Build: "test", Done: func() error {
			nw.HandoffDone()
			return nil
		}})
		nw.HandoffDone() // also after a failure; idempotent
		taken <- err
	}()
	rep, err := fdpass.Upgrade(parent, old, fdpass.UpgradeOptions{
		ChildExited: make(chan struct{}), Kill: func() {}, Generation: 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-taken; err != nil {
		t.Fatal(err)
	}
	if rep.Moved != n || rep.Lost != 0 || rep.Resumed != 0 {
		t.Fatalf("report %+v", rep)
	}
	old.Close()
	for i, c := range clients {
		if got := tagPort(t, c.ask("after")); got != tags[i] {
			t.Fatalf("client %d: upstream socket %s after the upgrade, %s before", i, got, tags[i])
		}
	}
	if st := nw.Stats(); st.Active != n {
		t.Fatalf("new process stats %+v", st)
	}
}
