package dnsres

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/dnstest"
	"github.com/miekg/dns"
)

// newResolver is a resolver of cfg asking servers.
func newResolver(cfg Config, servers ...*dnstest.Server) *Resolver {
	for _, s := range servers {
		cfg.Servers = append(cfg.Servers, s.Addr())
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return New(cfg)
}

// v4 is a Config asking for A only.
var v4 = Config{IPv4: true}

// ips are the addresses of a, as strings.
func ips(a Answer) []string {
	var out []string
	for _, x := range a.Addrs {
		out = append(out, x.Addr.String())
	}
	return out
}

// lookupHost runs LookupHost and fails the test on an error.
func lookupHost(t *testing.T, r *Resolver, name string) Answer {
	t.Helper()
	a, err := r.LookupHost(t.Context(), name)
	if err != nil {
		t.Fatalf("LookupHost(%q): %v", name, err)
	}
	return a
}

// wantIPs checks the addresses of a.
func wantIPs(t *testing.T, a Answer, want ...string) {
	t.Helper()
	if got := ips(a); !slices.Equal(got, want) {
		t.Fatalf("addresses %q, want %q", got, want)
	}
}

func TestA(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1", "127.0.0.2")
	a := lookupHost(t, newResolver(v4, s), "example.net")
	wantIPs(t, a, "127.0.0.1", "127.0.0.2")
	if a.TTL != 300*time.Second {
		t.Errorf("TTL %v, want 5m", a.TTL)
	}
	if a.Addrs[0].Port != 0 || a.Addrs[0].Name != "" {
		t.Errorf("host address %+v has SRV fields", a.Addrs[0])
	}
}

func TestAAAA(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetAAAA("example.net", 300, "::1", "2001:db8::1")
	a := lookupHost(t, newResolver(Config{IPv6: true}, s), "example.net")
	wantIPs(t, a, "::1", "2001:db8::1")
	if n := s.QueriesFor("example.net", dns.TypeA); n != 0 {
		t.Errorf("%d A queries with ipv4=off", n)
	}
}

func TestHostOrder(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1", "127.0.0.2")
	s.SetAAAA("example.net", 300, "::1", "::2")
	r := newResolver(Config{}, s) // zero: both families
	wantIPs(t, lookupHost(t, r, "example.net"), "127.0.0.1", "127.0.0.2", "::1", "::2")
	s.SetOrder("example.net", true)
	wantIPs(t, lookupHost(t, r, "example.net"), "127.0.0.2", "127.0.0.1", "::2", "::1")
}

func TestIPv6Off(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetAAAA("example.net", 300, "::1")
	wantIPs(t, lookupHost(t, newResolver(Config{IPv4: true, IPv6: false}, s), "example.net"), "127.0.0.1")
	if n := s.QueriesFor("example.net", dns.TypeAAAA); n != 0 {
		t.Errorf("%d AAAA queries with ipv6=off", n)
	}
}

func TestOneFamilyEmpty(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 60, "127.0.0.1")
	a := lookupHost(t, newResolver(Config{}, s), "example.net")
	wantIPs(t, a, "127.0.0.1")
	if a.TTL != time.Minute {
		t.Errorf("TTL %v, want the A records' 1m", a.TTL)
	}
}

func TestEmptyAnswer(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("other.example.net", 300, "127.0.0.1")
	s.SetSOA("soa.example.net", 600, 30)
	r := newResolver(Config{}, s)
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"example.net", 10 * time.Second},     // unknown: nginx's 10s
		{"soa.example.net", 30 * time.Second}, // the SOA's minimum
	} {
		a := lookupHost(t, r, tc.name)
		if len(a.Addrs) != 0 || a.TTL != tc.ttl {
			t.Errorf("%s: %+v, want no addresses for %v", tc.name, a, tc.ttl)
		}
	}
}

func TestNXDomain(t *testing.T) {
	s := dnstest.Start(t)
	s.SetNXDomain("example.net", true)
	s.SetSOA("example.net", 5, 60)
	a := lookupHost(t, newResolver(Config{}, s), "example.net")
	if len(a.Addrs) != 0 || a.TTL != 5*time.Second {
		t.Errorf("NXDOMAIN: %+v, want no addresses for 5s (SOA TTL under its minimum)", a)
	}
}

func TestRcodeErrors(t *testing.T) {
	s := dnstest.Start(t)
	r := newResolver(Config{}, s)
	for rcode, text := range map[int]string{
		dns.RcodeServerFailure:  "example.net could not be resolved (2: Server failure)",
		dns.RcodeRefused:        "example.net could not be resolved (5: Operation refused)",
		dns.RcodeFormatError:    "example.net could not be resolved (1: Format error)",
		dns.RcodeNotImplemented: "example.net could not be resolved (4: Unimplemented)",
	} {
		s.SetRcode("example.net", rcode)
		_, err := r.LookupHost(t.Context(), "Example.NET.")
		if err == nil || err.Error() != text {
			t.Errorf("rcode %d: error %v, want %q", rcode, err, text)
		}
		var e *Error
		if !errors.As(err, &e) || e.Rcode != rcode || e.Timeout() {
			t.Errorf("rcode %d: error %#v", rcode, err)
		}
	}
}

func TestOneFamilyFails(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetAAAA("example.net", 300, "::1")
	s.SetRcode("example.net", dns.RcodeServerFailure)
	s.SetA("v4.example.net", 300, "127.0.0.1")
	r := newResolver(Config{}, s)
	if _, err := r.LookupHost(t.Context(), "example.net"); err == nil {
		t.Error("SERVFAIL for A and AAAA: no error")
	}
	// The A answer alone is the answer when AAAA fails: the name has A
	// records and (against the rules, for the test) a CNAME that only AAAA
	// questions follow, to a name that fails.
	s.SetCNAMEOnly(true)
	s.SetCNAME("v4.example.net", "example.net", 300)
	wantIPs(t, lookupHost(t, r, "v4.example.net"), "127.0.0.1")
	if n := s.QueriesFor("example.net", dns.TypeAAAA); n != 2 {
		t.Errorf("%d AAAA queries for the failing name, want 2", n)
	}
}

func TestTimeout(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetDrop(true)
	r := newResolver(Config{Timeout: 300 * time.Millisecond}, s)
	start := time.Now()
	_, err := r.LookupHost(t.Context(), "example.net")
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("error %v, want a timeout", err)
	}
	if want := "example.net could not be resolved (110: Operation timed out)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timed out after %v for a 300ms timeout", d)
	}
}

func TestFailover(t *testing.T) {
	dead, live := dnstest.Start(t), dnstest.Start(t)
	dead.SetDrop(true)
	live.SetA("example.net", 300, "127.0.0.1")
	r := newResolver(Config{IPv4: true, Timeout: 1 * time.Second}, dead, live)
	for range 2 { // one lookup starts at each server
		wantIPs(t, lookupHost(t, r, "example.net"), "127.0.0.1")
	}
	if dead.Queries() != 1 || live.Queries() != 2 {
		t.Errorf("queries: %d to the dead server, %d to the live one; want 1 and 2", dead.Queries(), live.Queries())
	}
}

func TestRoundRobin(t *testing.T) {
	s1, s2 := dnstest.Start(t), dnstest.Start(t)
	for _, s := range []*dnstest.Server{s1, s2} {
		s.SetA("example.net", 300, "127.0.0.1", "127.0.0.2")
	}
	s2.SetOrder("example.net", true)
	r := newResolver(v4, s1, s2)
	var orders []string
	for range 4 {
		orders = append(orders, strings.Join(ips(lookupHost(t, r, "example.net")), ","))
	}
	if s1.Queries() != 2 || s2.Queries() != 2 {
		t.Errorf("queries %d and %d, want 2 each", s1.Queries(), s2.Queries())
	}
	if orders[0] == orders[1] || orders[0] != orders[2] {
		t.Errorf("orders %q: not alternating between the servers", orders)
	}
}

func TestUnreachable(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	r := New(Config{Servers: []netip.AddrPort{closed}, IPv4: true, Timeout: 5 * time.Second})
	start := time.Now()
	_, err = r.LookupHost(t.Context(), "example.net")
	var e *Error
	if !errors.As(err, &e) || e.Timeout() || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %v, want connection refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

func TestWrongQuestion(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go answerWrong(pc)
	r := New(Config{Servers: []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}, IPv4: true})
	_, err = r.LookupHost(t.Context(), "example.net")
	if !errors.Is(err, errNotReply) {
		t.Errorf("error %v, want a malformed reply", err)
	}
}

// answerWrong answers each query on pc, until it is closed, for another
// name.
func answerWrong(pc net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(buf[:n]) != nil {
			continue
		}
		m := new(dns.Msg)
		m.SetReply(q)
		m.Question[0].Name = "other.example."
		out, _ := m.Pack()
		pc.WriteTo(out, from)
	}
}

func TestTruncated(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetTruncate("example.net", true)
	wantIPs(t, lookupHost(t, newResolver(v4, s), "example.net"), "127.0.0.1")
	if n := s.QueriesFor("example.net", dns.TypeA); n != 2 {
		t.Errorf("%d queries, want 2 (UDP then TCP)", n)
	}
}

func TestTruncatedBySize(t *testing.T) {
	s := dnstest.Start(t)
	var want []string
	for i := range 60 {
		want = append(want, netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}).String())
	}
	s.SetA("big.example.net", 300, want...)
	wantIPs(t, lookupHost(t, newResolver(v4, s), "big.example.net"), want...)
	if n := s.Queries(); n != 2 {
		t.Errorf("%d queries, want 2 (UDP then TCP)", n)
	}
}

func TestCNAME(t *testing.T) {
	for _, only := range []bool{false, true} {
		s := dnstest.Start(t)
		s.SetCNAMEOnly(only)
		s.SetCNAME("example.net", "alias.example.net", 60)
		s.SetA("alias.example.net", 300, "127.0.0.203")
		a := lookupHost(t, newResolver(v4, s), "example.net")
		wantIPs(t, a, "127.0.0.203")
		if a.TTL != time.Minute {
			t.Errorf("TTL %v, want the CNAME's 1m", a.TTL)
		}
		want := int64(0)
		if only {
			want = 1
		}
		if n := s.QueriesFor("alias.example.net", dns.TypeA); n != want {
			t.Errorf("cname only %v: %d queries for the target, want %d", only, n, want)
		}
	}
}

func TestCNAMEChain(t *testing.T) {
	s := dnstest.Start(t)
	s.SetCNAMEOnly(true)
	for i := range maxCNAME {
		s.SetCNAME(chainName(i), chainName(i+1), 300)
	}
	s.SetA(chainName(maxCNAME), 300, "127.0.0.1")
	r := newResolver(v4, s)
	wantIPs(t, lookupHost(t, r, chainName(0)), "127.0.0.1")
	s.SetA(chainName(maxCNAME), 300)
	s.SetCNAME(chainName(maxCNAME), chainName(0), 300) // a loop
	if _, err := r.LookupHost(t.Context(), chainName(0)); !errors.Is(err, errCNAMEChain) {
		t.Errorf("CNAME loop: error %v", err)
	}
}

// chainName is the i-th name of a CNAME chain.
func chainName(i int) string { return string(rune('a'+i)) + ".example.net" }

func TestInvalidName(t *testing.T) {
	s := dnstest.Start(t)
	r := newResolver(Config{}, s)
	for _, name := range []string{"", ".", "a..b", strings.Repeat("x", 64) + ".net", strings.Repeat("abc.", 64) + "net"} {
		if _, err := r.LookupHost(t.Context(), name); err == nil || !strings.Contains(err.Error(), "invalid name") {
			t.Errorf("%q: error %v", name, err)
		}
	}
	if n := s.Queries(); n != 0 {
		t.Errorf("%d queries for invalid names", n)
	}
}

func TestValid(t *testing.T) {
	s := dnstest.Start(t)
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetA("example.net", 300, "127.0.0.1")
	s.SetAAAA("example.net", 100, "::1")
	a := lookupHost(t, newResolver(Config{}, s), "example.net")
	if a.TTL != 100*time.Second {
		t.Errorf("TTL %v, want the shortest record's 100s", a.TTL)
	}
	r := newResolver(Config{Valid: 7 * time.Second}, s)
	for _, name := range []string{"example.net", "empty.example.net"} {
		if a := lookupHost(t, r, name); a.TTL != 7*time.Second {
			t.Errorf("%s: TTL %v with valid=7s", name, a.TTL)
		}
	}
}

func TestCanceled(t *testing.T) {
	s := dnstest.Start(t)
	s.SetDrop(true)
	r := newResolver(Config{Timeout: time.Minute}, s)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		s.WaitQueries(ctx, 1)
		cancel()
	}()
	_, err := r.LookupHost(ctx, "example.net")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want canceled", err)
	}
}
