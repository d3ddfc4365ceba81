package proxy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/prometheus/client_golang/prometheus"
)

// shardedUDP is a proxy with two loops serving "listen ... udp reuseport"
// on addr (port 0: any).
func shardedUDP(t *testing.T, b *udpBackend, addr string) *config.Config {
	return udpConfig([]upstreamSpec{{addr: b.addr}}, func(s *config.Server) {
		s.Listen[0].ReusePort = true
		if addr != "" {
			s.Listen[0].Addr = netip.MustParseAddrPort(addr)
		}
	})
}

// askAll has every client ask rounds times, concurrently, and checks that
// each keeps one upstream socket; it returns each client's (the same as
// want's, if given).
func askAll(t *testing.T, cs []*udpClient, rounds int, want []string) []string {
	t.Helper()
	tags := make([]string, len(cs))
	errs := make(chan error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				c.send(fmt.Appendf(nil, "c%d-r%d", i, r))
				got, err := c.recv(10 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("client %d round %d: %v", i, r, err)
					return
				}
				f := strings.Fields(string(got))
				if len(f) != 3 || f[2] != fmt.Sprintf("c%d-r%d", i, r) {
					errs <- fmt.Errorf("client %d: reply %q", i, got)
					return
				}
				tag := f[0] + " " + f[1]
				if r == 0 && want == nil {
					tags[i] = tag
				} else if r == 0 {
					tags[i] = want[i]
				}
				if tag != tags[i] {
					errs <- fmt.Errorf("client %d moved from %s to %s", i, tags[i], tag)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return tags
}

// With reuseport and two loops an address has two sockets, one per loop;
// the kernel spreads clients over them, each client stays on one, and
// status, metrics and Addrs show the address once.
func TestUDPReusePortShards(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	p, _ := startProxyWith(t, shardedUDP(t, b, ""), Options{Loops: 2}, nil)
	if len(p.udp) != 2 || p.udp[0].l == p.udp[1].l || p.udp[0].bound != p.udp[1].bound {
		t.Fatalf("%d UDP listeners; want 2 shards of one address on different loops", len(p.udp))
	}
	if a := p.Addrs(); len(a) != 1 {
		t.Fatalf("Addrs %v, want one", a)
	}
	addr := p.Addrs()[0].String()
	const clients = 64
	cs := make([]*udpClient, clients)
	for i := range cs {
		cs[i] = newUDPClient(t, addr)
	}
	tags := askAll(t, cs, 4, nil)
	seen := map[string]bool{}
	for _, tag := range tags {
		seen[tag] = true
	}
	if len(seen) != clients {
		t.Fatalf("%d upstream sockets for %d clients", len(seen), clients)
	}
	for i, u := range p.udp {
		if u.total.Load() == 0 {
			t.Fatalf("shard %d served no session (%d and %d)", i, p.udp[0].total.Load(), p.udp[1].total.Load())
		}
	}
	var udp []ListenerStatus
	for _, ls := range p.Status().Listeners {
		if ls.Protocol == "udp" {
			udp = append(udp, ls)
		}
	}
	if len(udp) != 1 || udp[0].Addr != addr || udp[0].Total != clients || udp[0].Active != clients {
		t.Fatalf("status %+v, want one line for %s with %d sessions", udp, addr, clients)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{p})
	mfs, err := reg.Gather() // fails on a repeated series
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "baton_udp_datagrams_dropped_total" && len(mf.GetMetric()) != 6 {
			t.Fatalf("%d dropped-datagram series, want one per cause", len(mf.GetMetric()))
		}
	}
	// A reload keeps both shards, and the sessions on them.
	ch, err := p.Reload(shardedUDP(t, b, addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.ListenersKept) != 1 || len(ch.ListenersAdded)+len(ch.ListenersRemoved) != 0 {
		t.Fatalf("reload changes %+v", ch)
	}
	if got := p.udpListeners(); len(got) != 2 {
		t.Fatalf("%d listeners after the reload, want 2", len(got))
	}
	askAll(t, cs, 2, tags)
}

// Without reuseport, or with one loop, an address has one socket.
func TestUDPNoShards(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	plain := udpConfig([]upstreamSpec{{addr: b.addr}}, nil)
	for _, tc := range []struct {
		name  string
		cfg   *config.Config
		loops int
	}{
		{"no reuseport", plain, 2},
		{"one loop", shardedUDP(t, b, ""), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := startProxyWith(t, tc.cfg, Options{Loops: tc.loops}, nil)
			if len(p.udp) != 1 || p.udp[0].key() != "udp/"+p.Addrs()[0].String() {
				t.Fatalf("%d UDP listeners, want 1", len(p.udp))
			}
		})
	}
}

// An upgrade hands every shard over by name, each session to the shard it
// was on, so that the new process has the same SO_REUSEPORT group and each
// client keeps its upstream socket.
func TestUDPHandoffKeepsShards(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	start := func(cfg *config.Config, gen int) *Proxy {
		p, _ := newProxyLoops(t, cfg, gen, 2)
		return p
	}
	old := start(shardedUDP(t, b, ""), 0)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	addr := old.Addrs()[0].String()
	const clients = 64
	cs := make([]*udpClient, clients)
	for i := range cs {
		cs[i] = newUDPClient(t, addr)
	}
	tags := askAll(t, cs, 2, nil)
	per := []int64{old.udp[0].active.Load(), old.udp[1].active.Load()}
	if per[0] == 0 || per[1] == 0 {
		t.Fatalf("sessions per shard %v, want some on each", per)
	}
	files, err := old.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, nf := range files {
		names = append(names, nf.Name)
	}
	for _, nf := range files {
		nf.File.Close()
	}
	if len(names) != 2 || names[0] != "udp/"+addr || names[1] != "udp/"+addr+"#1" {
		t.Fatalf("listeners %v", names)
	}

	nw := start(shardedUDP(t, b, addr), 1)
	if moved := udpHandOver(t, old, nw, nil); moved != clients {
		t.Fatalf("moved %d sessions, want %d", moved, clients)
	}
	if len(nw.udp) != 2 {
		t.Fatalf("%d UDP listeners in the new process", len(nw.udp))
	}
	for i, u := range nw.udp {
		if u.key() != old.udp[i].key() || u.active.Load() != per[i] {
			t.Fatalf("new shard %s holds %d sessions; old shard %s held %d", u.key(), u.active.Load(), old.udp[i].key(), per[i])
		}
	}
	old.Close()
	askAll(t, cs, 2, tags)
	if st := nw.Stats(); st.Active != clients || st.Total != 0 {
		t.Fatalf("new process stats %+v, want %d active, none new", st, clients)
	}
}

// TestUDPHandoffFromOneShardKeepsOne: a process serving a reuseport address
// with one socket (one loop, or a baton from before shards) hands it to one
// with two loops: the new process keeps one socket, so that every client
// still reaches the socket its session moved with; a second shard would
// take some clients to a shard where they have no session.
func TestUDPHandoffFromOneShardKeepsOne(t *testing.T) {
	b := startUDPBackend(t, udpTag("b"))
	start := func(cfg *config.Config, gen, loops int) *Proxy {
		p, _ := newProxyLoops(t, cfg, gen, loops)
		return p
	}
	old := start(shardedUDP(t, b, ""), 0, 1)
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	if len(old.udp) != 1 {
		t.Fatalf("%d UDP listeners with one loop", len(old.udp))
	}
	addr := old.Addrs()[0].String()
	const clients = 32
	cs := make([]*udpClient, clients)
	for i := range cs {
		cs[i] = newUDPClient(t, addr)
	}
	tags := askAll(t, cs, 2, nil)
	nw := start(shardedUDP(t, b, addr), 1, 2)
	if moved := udpHandOver(t, old, nw, nil); moved != clients {
		t.Fatalf("moved %d sessions, want %d", moved, clients)
	}
	if len(nw.udp) != 1 {
		t.Fatalf("%d UDP listeners in the new process, want the one inherited", len(nw.udp))
	}
	old.Close()
	askAll(t, cs, 2, tags)
	if st := nw.Stats(); st.Active != clients || st.Total != 0 {
		t.Fatalf("new process stats %+v, want %d active, none new", st, clients)
	}
}
