package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/dnstest"
	"github.com/miekg/dns"
)

// startIPBackends serves, on each of ips at one port common to all, a
// backend that says its own IP in a line and then echoes. It returns the
// port.
func startIPBackends(t *testing.T, ips ...string) uint16 {
	t.Helper()
	for range 50 {
		first, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) < len(ips) {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		for i, ln := range lns {
			serveIP(t, ln, ips[i])
		}
		return uint16(port)
	}
	t.Fatal("no port free on every address")
	return 0
}

func serveIP(t *testing.T, ln net.Listener, ip string) {
	serveBackend(t, ln, ip, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", ip)
		io.Copy(c, c)
	})
}

// whoAnswers connects to addr and returns the backend's first line ("" when
// the proxy closes the connection without one), keeping the connection
// open when keep is set.
func whoAnswers(t *testing.T, addr string, keep bool) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.SetReadDeadline(time.Time{})
	if !keep {
		c.Close()
		c = nil
	} else {
		t.Cleanup(func() { c.Close() })
	}
	return strings.TrimSpace(line), c
}

// resolvedAddrs returns what the status says upstream u's first resolved
// name resolves to, and the last lookup's error.
func resolvedAddrs(p *Proxy, u string) (addrs []string, answered bool, errText string) {
	for _, us := range p.Status().Upstreams {
		if us.Name == u && len(us.Resolved) > 0 {
			r := us.Resolved[0]
			return r.Addrs, r.Answered, r.Error
		}
	}
	return nil, false, ""
}

func startResolveProxy(t *testing.T, dnsAddr netip.AddrPort, upstream string) (*Proxy, string, *logBuf) {
	t.Helper()
	p, addrs, logs := startConf(t, fmt.Sprintf(`stream {
    resolver %s valid=1s;
    resolver_timeout 1s;
    upstream u {
        zone z 1m;
        %s
    }
    server { listen 127.0.0.1:0; proxy_pass u; proxy_connect_timeout 1s; }
}`, dnsAddr, upstream))
	return p, addrs[0], logs
}

// An upstream server written "NAME resolve" follows its DNS records without
// a reload: a new address takes new sessions, an address that left takes
// none while its live sessions go on, one that stays keeps its live count,
// a failed lookup keeps the last good answer, and an empty answer leaves
// the upstream with no live server.
func TestResolveFollowsDNS(t *testing.T) {
	port := startIPBackends(t, "127.0.0.21", "127.0.0.22", "127.0.0.23")
	d := dnstest.Start(t)
	d.SetA("backend.test", 1, "127.0.0.21")
	p, addr, logs := startResolveProxy(t, d.Addr(), fmt.Sprintf("server backend.test:%d resolve;", port))

	// Start waits for the first answer: the very first session is served.
	who, old := whoAnswers(t, addr, true)
	if who != "127.0.0.21" {
		t.Fatalf("first session reached %q, want 127.0.0.21", who)
	}

	d.SetA("backend.test", 1, "127.0.0.22", "127.0.0.21")
	waitFor(t, func() bool { a, _, _ := resolvedAddrs(p, "u"); return len(a) == 2 })
	seen := map[string]bool{}
	var kept net.Conn
	for range 4 {
		w, c := whoAnswers(t, addr, true)
		seen[w] = true
		if w == "127.0.0.22" {
			kept = c
		}
	}
	if !seen["127.0.0.21"] || !seen["127.0.0.22"] || len(seen) != 2 {
		t.Fatalf("with two addresses, sessions reached %v", seen)
	}

	// 21 leaves, 23 arrives: 22 stays with its live sessions counted.
	active22 := func() int {
		for _, us := range p.Status().Upstreams {
			for _, s := range us.Servers {
				if strings.HasPrefix(s.Addr, "127.0.0.22:") {
					return s.Active
				}
			}
		}
		return -1
	}
	before := active22()
	if before < 1 {
		t.Fatalf("127.0.0.22 has %d live sessions, want at least 1", before)
	}
	d.SetA("backend.test", 1, "127.0.0.23", "127.0.0.22")
	waitFor(t, func() bool {
		a, _, _ := resolvedAddrs(p, "u")
		return slices.Equal(a, []string{"127.0.0.22", "127.0.0.23"})
	})
	if got := active22(); got != before {
		t.Errorf("127.0.0.22's live count went from %d to %d across the change: the peer was not kept", before, got)
	}
	seen = map[string]bool{}
	for range 4 {
		w, _ := whoAnswers(t, addr, false)
		seen[w] = true
	}
	if seen["127.0.0.21"] || !seen["127.0.0.22"] || !seen["127.0.0.23"] {
		t.Fatalf("after 21 left and 23 came, sessions reached %v", seen)
	}
	// The sessions on the address that left go on.
	for _, c := range []net.Conn{old, kept} {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || l != "ping\n" {
			t.Fatalf("a live session lost its upstream: %q, %v", l, err)
		}
	}

	// A failing lookup changes nothing, and says so.
	d.SetRcode("backend.test", dns.RcodeServerFailure)
	waitFor(t, func() bool { _, _, e := resolvedAddrs(p, "u"); return e != "" })
	if w, _ := whoAnswers(t, addr, false); w != "127.0.0.22" && w != "127.0.0.23" {
		t.Fatalf("after SERVFAIL a session reached %q", w)
	}
	if !strings.Contains(logs.String(), "Server failure") {
		t.Errorf("the failed lookup is not logged:\n%s", logs)
	}

	// An empty answer empties the upstream.
	d.SetRcode("backend.test", 0)
	d.SetA("backend.test", 1)
	waitFor(t, func() bool { a, ok, e := resolvedAddrs(p, "u"); return ok && len(a) == 0 && e == "" })
	if w, _ := whoAnswers(t, addr, false); w != "" {
		t.Fatalf("with no address a session reached %q", w)
	}
	if !strings.Contains(logs.String(), "no live upstreams") {
		t.Errorf("no \"no live upstreams\" in the log:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "now resolves to") {
		t.Errorf("changes are not logged:\n%s", logs)
	}
	// The metrics count what happened to the name.
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`baton_upstream_resolved_addresses{name="backend.test",service="",upstream="u"} 0`,
		`baton_upstream_resolve_failing{name="backend.test",service="",upstream="u"} 0`,
		`baton_upstream_resolve_changes_total{name="backend.test",service="",upstream="u"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	if !strings.Contains(body, `baton_upstream_resolve_failures_total{name="backend.test",service="",upstream="u"}`) ||
		strings.Contains(body, `baton_upstream_resolve_failures_total{name="backend.test",service="",upstream="u"} 0`) {
		t.Errorf("metrics do not count the failed lookups")
	}
}

// A reload that changes a resolved upstream starts it from the answers the
// old one had, as nginx's preresolve: with DNS failing at that moment,
// sessions still reach the last good addresses.
func TestResolveReloadKeepsAnswers(t *testing.T) {
	port := startIPBackends(t, "127.0.0.24")
	d := dnstest.Start(t)
	d.SetA("backend.test", 1, "127.0.0.24")
	p, addr, _ := startResolveProxy(t, d.Addr(), fmt.Sprintf("server backend.test:%d resolve;", port))
	if w, _ := whoAnswers(t, addr, false); w != "127.0.0.24" {
		t.Fatalf("before the reload a session reached %q", w)
	}
	d.SetDrop(true)
	cfg, err := config.Parse("route.conf", []byte(fmt.Sprintf(`stream {
    resolver %s valid=1s;
    resolver_timeout 1s;
    upstream u {
        zone z 1m;
        server backend.test:%d resolve max_fails=0;
    }
    server { listen %s; proxy_pass u; proxy_connect_timeout 1s; }
}`, d.Addr(), port, addr)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if w, _ := whoAnswers(t, addr, false); w != "127.0.0.24" {
		t.Fatalf("after the reload, with DNS silent, a session reached %q", w)
	}
}

// Two instances with the same config, whose DNS servers give the same
// records in other orders, send every key to the same address with hash,
// hash consistent with "hash_ring address", and ip_hash; with nginx's ring
// ("hash_ring name", the default) they agree on the server name, and round
// robin among its addresses. 10,000 keys are asked of each instance's
// balancers, and 100 clients from distinct addresses connect through both.
func TestInstancesAgree(t *testing.T) {
	ips := []string{"127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34", "127.0.0.35"}
	port := startIPBackends(t, ips...)
	conf := func(d *dnstest.Server) string {
		servers := fmt.Sprintf("server pods.test:%d resolve; server more.test:%d resolve;", port, port)
		return fmt.Sprintf(`stream {
    resolver %s;
    upstream h { zone z 1m; hash $remote_addr; %[2]s }
    upstream c { zone z 1m; hash $remote_addr consistent; %[2]s }
    upstream a { zone z 1m; hash $remote_addr consistent; hash_ring address; %[2]s }
    upstream i { zone z 1m; ip_hash; %[2]s }
    server { listen 127.0.0.1:0; proxy_pass a; }
}`, d.Addr(), servers)
	}
	var dns [2]*dnstest.Server
	for k := range dns {
		d := dnstest.Start(t)
		d.SetA("pods.test", 60, ips[:3]...)
		d.SetA("more.test", 60, ips[3:]...)
		d.SetOrder("pods.test", k == 1)
		d.SetOrder("more.test", k == 1)
		dns[k] = d
	}
	p1, a1, _ := startConf(t, conf(dns[0]))
	p2, a2, _ := startConf(t, conf(dns[1]))
	for _, p := range []*Proxy{p1, p2} {
		waitFor(t, func() bool {
			for _, us := range p.Status().Upstreams {
				for _, r := range us.Resolved {
					if !r.Answered {
						return false
					}
				}
			}
			return true
		})
	}
	// The answers did come in other orders.
	order := func(p *Proxy) []string {
		g := groupNamed(p, "h").current()
		var s []string
		for _, pr := range g.peers {
			s = append(s, pr.addr.String())
		}
		return s
	}
	if o1, o2 := order(p1), order(p2); !slices.Equal(o1, o2) {
		t.Fatalf("the peer lists differ: %v and %v", o1, o2)
	}
	now := time.Now()
	for _, tc := range []struct {
		upstream string
		byName   bool // nginx's ring: agreement on the name only
	}{{"h", false}, {"c", true}, {"a", false}, {"i", false}} {
		g1, g2 := groupNamed(p1, tc.upstream).current(), groupNamed(p2, tc.upstream).current()
		spread := map[string]int{}
		for k := range 10000 {
			client := netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
			var key []byte
			if g1.method.String() == "ip_hash" {
				key = appendAddrKey(nil, client)
			} else {
				key = []byte(client.String())
			}
			i, ok1 := g1.pick(key, func(i int) bool { return g1.usable(i, now) })
			j, ok2 := g2.pick(key, func(i int) bool { return g2.usable(i, now) })
			if !ok1 || !ok2 {
				t.Fatalf("%s: no pick for %s", tc.upstream, client)
			}
			x, y := g1.peers[i].addr.String(), g2.peers[j].addr.String()
			if tc.byName {
				x, y = g1.peers[i].name, g2.peers[j].name
			}
			if x != y {
				t.Fatalf("upstream %s: key %s goes to %s in one instance and %s in the other", tc.upstream, client, x, y)
			}
			spread[x]++
		}
		if want := map[bool]int{false: 5, true: 2}[tc.byName]; len(spread) != want {
			t.Errorf("upstream %s: keys went to %d places, want %d: %v", tc.upstream, len(spread), want, spread)
		}
	}
	// And through real connections, from 100 client addresses.
	for k := range 100 {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(k+1))}
		var got [2]string
		for n, addr := range []string{a1[0], a2[0]} {
			d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			got[n] = strings.TrimSpace(line)
		}
		if got[0] == "" || got[0] != got[1] {
			t.Fatalf("client %s reached %q through one instance and %q through the other", src.IP, got[0], got[1])
		}
	}
}

// groupNamed returns p's upstream called name.
func groupNamed(p *Proxy, name string) *group {
	for _, g := range p.groups {
		if g.name == name {
			return g
		}
	}
	return nil
}

// SRV records (service=): the highest priority is primary, the others
// backup, each with its record's port; a primary that refuses sends the
// session on to the backup.
func TestResolveServiceBackup(t *testing.T) {
	port := startIPBackends(t, "127.0.0.52")
	dead := deadAddr(t).Port()
	d := dnstest.Start(t)
	d.SetSRV("_pg._tcp.db.test", 30,
		dnstest.SRV{Priority: 1, Weight: 5, Port: dead, Target: "a.test"},
		dnstest.SRV{Priority: 2, Weight: 5, Port: port, Target: "b.test"})
	d.SetA("a.test", 30, "127.0.0.1")
	d.SetA("b.test", 30, "127.0.0.52")
	p, addr, _ := startResolveProxy(t, d.Addr(), "server db.test service=pg resolve;")
	if w, _ := whoAnswers(t, addr, false); w != "127.0.0.52" {
		t.Fatalf("with the primary refusing, a session reached %q, want the backup", w)
	}
	var servers []string
	for _, us := range p.Status().Upstreams {
		for _, s := range us.Servers {
			servers = append(servers, fmt.Sprintf("%s %s backup=%v", s.Name, s.Addr, s.Backup))
		}
	}
	want := []string{
		fmt.Sprintf("a.test 127.0.0.1:%d backup=false", dead),
		fmt.Sprintf("b.test 127.0.0.52:%d backup=true", port),
	}
	if !slices.Equal(servers, want) {
		t.Fatalf("servers %q, want %q", servers, want)
	}
}

// With an active health check, an address that appears in DNS is checked
// before it takes a session (mandatory), while the addresses that stay keep
// their verdict rather than being checked anew.
func TestResolveHealthCheckNewAddress(t *testing.T) {
	port := startIPBackends(t, "127.0.0.53")
	d := dnstest.Start(t)
	d.SetA("hc.test", 1, "127.0.0.53")
	p, addrs, _ := startConf(t, fmt.Sprintf(`stream {
    resolver %s valid=1s;
    upstream u { zone z 1m; server hc.test:%d resolve; }
    server { listen 127.0.0.1:0; proxy_pass u; health_check interval=100ms mandatory; }
}`, d.Addr(), port))
	up := func(ip string) (bool, bool) {
		for _, us := range p.Status().Upstreams {
			for _, s := range us.Servers {
				if strings.HasPrefix(s.Addr, ip+":") {
					return s.Up, true
				}
			}
		}
		return false, false
	}
	waitFor(t, func() bool { ok, _ := up("127.0.0.53"); return ok })
	if w, _ := whoAnswers(t, addrs[0], false); w != "127.0.0.53" {
		t.Fatalf("a session reached %q", w)
	}
	// 127.0.0.54 has nothing listening: its checks fail.
	d.SetA("hc.test", 1, "127.0.0.53", "127.0.0.54")
	waitFor(t, func() bool { _, listed := up("127.0.0.54"); return listed })
	if ok, _ := up("127.0.0.53"); !ok {
		t.Fatal("the address that stayed was made to wait for a new check")
	}
	if ok, _ := up("127.0.0.54"); ok {
		t.Fatal("a new address took sessions before its first check")
	}
	for range 6 {
		if w, _ := whoAnswers(t, addrs[0], false); w != "127.0.0.53" {
			t.Fatalf("a session reached %q, want only the checked address", w)
		}
	}
}

// A reload that changes how a name is resolved (its service, the resolver,
// hash_ring) rebuilds the upstream; one that changes nothing keeps it, with
// the lookups it runs.
func TestResolveSignature(t *testing.T) {
	parse := func(extra, server, resolver string) *config.Upstream {
		cfg, err := config.Parse("a.conf", []byte(fmt.Sprintf(`stream {
    resolver %s;
    upstream u { zone z 1m; hash $remote_addr consistent; %s %s }
    server { listen 127.0.0.1:1; proxy_pass u; }
}`, resolver, extra, server)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Stream.Upstreams[0]
	}
	base := upstreamSig(parse("", "server db.test resolve service=http;", "127.0.0.1"))
	if upstreamSig(parse("", "server db.test resolve service=http;", "127.0.0.1")) != base {
		t.Fatal("the same upstream has another signature")
	}
	for name, u := range map[string]*config.Upstream{
		"service":   parse("", "server db.test resolve service=ldap;", "127.0.0.1"),
		"resolver":  parse("", "server db.test resolve service=http;", "127.0.0.2"),
		"hash_ring": parse("hash_ring address;", "server db.test resolve service=http;", "127.0.0.1"),
	} {
		if upstreamSig(u) == base {
			t.Errorf("a change of %s keeps the signature", name)
		}
	}
}
