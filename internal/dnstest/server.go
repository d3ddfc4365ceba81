// Package dnstest is a DNS server for tests: it serves the records a test
// sets, over UDP and TCP on one port of 127.0.0.1, and counts the queries
// it receives. It is built on github.com/miekg/dns's server.
//
// Names are case-insensitive and may be given with or without the trailing
// dot. A name without records answers NOERROR with no records, or NXDOMAIN
// after SetNXDomain. A CNAME is chased in the server's own data, as a
// recursive resolver does, unless SetCNAMEOnly is on.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// maxChase bounds the CNAME chain the server follows in its own data.
const maxChase = 16

// Server is a DNS server for tests. It is safe for concurrent use.
type Server struct {
	t    testing.TB
	addr netip.AddrPort
	udp  *dns.Server
	tcp  *dns.Server
	errc chan error // one value from each of udp and tcp when they stop

	mu        sync.Mutex
	cond      *sync.Cond // signalled at each query and when a WaitQueries context ends
	names     map[string]*node
	drop      bool
	cnameOnly bool
	hold      chan struct{} // non-nil while Hold is in force; closed by its release
	queries   int64
	counts    map[qkey]int64
	stopped   bool
	quit      chan struct{} // closed at stop: dropped TCP queries end
}

// qkey counts queries by name and type.
type qkey struct {
	name  string
	qtype uint16
}

// node is what the server knows of one name.
type node struct {
	a, aaaa, srv []dns.RR
	cname        dns.RR
	soa          dns.RR
	rcode        int
	truncate     bool
	reverse      bool
	nx           bool
}

// SRV is one SRV record for SetSRV.
type SRV struct {
	Priority, Weight, Port uint16
	Target                 string
}

// Start starts a server on 127.0.0.1 (UDP and TCP on the same free port);
// it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	pc, ln := listenPair(t)
	s := &Server{
		t:      t,
		addr:   pc.LocalAddr().(*net.UDPAddr).AddrPort(),
		names:  make(map[string]*node),
		counts: make(map[qkey]int64),
		errc:   make(chan error, 2),
		quit:   make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}
	if err := s.serve(); err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

// listenPair opens a UDP socket on a free port of 127.0.0.1 and a TCP
// listener on the same port, trying another port when TCP's is taken.
func listenPair(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: %v", err)
		}
		ln, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("dnstest: no port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

// serve starts both servers and waits until they run.
func (s *Server) serve() error {
	started := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { s.errc <- srv.ActivateAndServe() }()
	}
	for range 2 {
		select {
		case <-started:
		case err := <-s.errc:
			return fmt.Errorf("serving DNS: %w", err)
		}
	}
	return nil
}

// stop releases held and dropped queries, stops both servers and waits
// for them.
func (s *Server) stop() {
	s.mu.Lock()
	s.stopped = true
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
	close(s.quit)
	s.mu.Unlock()
	s.udp.Shutdown()
	s.tcp.Shutdown()
	for range 2 {
		<-s.errc
	}
}

// Addr returns the address the server listens on (UDP and TCP).
func (s *Server) Addr() netip.AddrPort { return s.addr }

// canonical is name lowercased with the trailing dot.
func canonical(name string) string { return dns.CanonicalName(name) }

// nodeLocked returns the node of name, creating it.
func (s *Server) nodeLocked(name string) *node {
	n := s.names[name]
	if n == nil {
		n = &node{}
		s.names[name] = n
	}
	return n
}

// update runs f on name's node under the lock.
func (s *Server) update(name string, f func(n *node)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.nodeLocked(canonical(name)))
}

// SetA replaces the A records of name; none (or a single "") removes them.
func (s *Server) SetA(name string, ttl uint32, addrs ...string) {
	s.t.Helper()
	rrs := s.addrRecords(name, ttl, addrs, true)
	s.update(name, func(n *node) { n.a = rrs })
}

// SetAAAA replaces the AAAA records of name; none (or a single "") removes
// them.
func (s *Server) SetAAAA(name string, ttl uint32, addrs ...string) {
	s.t.Helper()
	rrs := s.addrRecords(name, ttl, addrs, false)
	s.update(name, func(n *node) { n.aaaa = rrs })
}

// addrRecords makes A (v4) or AAAA records of addrs, failing the test on a
// bad address.
func (s *Server) addrRecords(name string, ttl uint32, addrs []string, v4 bool) []dns.RR {
	s.t.Helper()
	var rrs []dns.RR
	for _, a := range addrs {
		if a == "" {
			continue
		}
		ip, err := netip.ParseAddr(a)
		if err != nil || ip.Is4() != v4 {
			s.t.Fatalf("dnstest: %q is not an address for an %s record of %s", a, dns.TypeToString[rrtype(v4)], name)
		}
		if v4 {
			rrs = append(rrs, &dns.A{Hdr: header(name, dns.TypeA, ttl), A: ip.AsSlice()})
		} else {
			rrs = append(rrs, &dns.AAAA{Hdr: header(name, dns.TypeAAAA, ttl), AAAA: ip.AsSlice()})
		}
	}
	return rrs
}

// rrtype is A for v4, else AAAA.
func rrtype(v4 bool) uint16 {
	if v4 {
		return dns.TypeA
	}
	return dns.TypeAAAA
}

// header is the header of a record of name.
func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: canonical(name), Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// SetCNAME makes name an alias of target; an empty target removes it.
func (s *Server) SetCNAME(name, target string, ttl uint32) {
	var rr dns.RR
	if target != "" {
		rr = &dns.CNAME{Hdr: header(name, dns.TypeCNAME, ttl), Target: canonical(target)}
	}
	s.update(name, func(n *node) { n.cname = rr })
}

// SetSRV replaces the SRV records of name (e.g. "_http._tcp.example.net");
// none removes them. A Target "." means the service is not available.
func (s *Server) SetSRV(name string, ttl uint32, recs ...SRV) {
	var rrs []dns.RR
	for _, r := range recs {
		rrs = append(rrs, &dns.SRV{
			Hdr:      header(name, dns.TypeSRV, ttl),
			Priority: r.Priority, Weight: r.Weight, Port: r.Port,
			Target: canonical(r.Target),
		})
	}
	s.update(name, func(n *node) { n.srv = rrs })
}

// SetSOA makes the empty answers for name (NOERROR without records, or
// NXDOMAIN) carry an SOA record with this TTL and minimum in the authority
// section; ttl and minttl both 0 remove it.
func (s *Server) SetSOA(name string, ttl, minttl uint32) {
	var rr dns.RR
	if ttl != 0 || minttl != 0 {
		rr = &dns.SOA{
			Hdr: header(name, dns.TypeSOA, ttl),
			Ns:  "ns." + canonical(name), Mbox: "hostmaster." + canonical(name),
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: minttl,
		}
	}
	s.update(name, func(n *node) { n.soa = rr })
}

// SetRcode answers every query for name (all types) with rcode, e.g.
// dns.RcodeServerFailure, and no records; 0 clears it.
func (s *Server) SetRcode(name string, rcode int) {
	s.update(name, func(n *node) { n.rcode = rcode })
}

// SetNXDomain makes name answer NXDOMAIN when it has no records of the
// type asked (on), or NOERROR with no records (off, the default).
func (s *Server) SetNXDomain(name string, on bool) {
	s.update(name, func(n *node) { n.nx = on })
}

// SetTruncate makes UDP replies for name carry the TC bit and no records;
// TCP replies stay complete.
func (s *Server) SetTruncate(name string, on bool) {
	s.update(name, func(n *node) { n.truncate = on })
}

// SetOrder makes name's records of each type go out in the reverse of the
// order they were set (reverse), or in that order (the default), so that
// two servers can give the same records in different orders.
func (s *Server) SetOrder(name string, reverse bool) {
	s.update(name, func(n *node) { n.reverse = reverse })
}

// SetDrop makes the server ignore every query (on): UDP queries get no
// reply, TCP connections stay open without one, so clients time out.
func (s *Server) SetDrop(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = on
}

// SetCNAMEOnly makes the answer for an alias carry only its CNAME (on),
// so the client must query the target itself; off (the default), the
// server follows the chain in its own data and answers with all of it.
func (s *Server) SetCNAMEOnly(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cnameOnly = on
}

// Hold makes every query received from now on wait (counted, not answered)
// until release is called or the server stops. release may be called more
// than once.
func (s *Server) Hold() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil && !s.stopped {
		s.hold = make(chan struct{})
	}
	h := s.hold
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.hold == h && h != nil {
			close(h)
			s.hold = nil
		}
	}
}

// Queries returns the number of queries received (UDP and TCP, answered or
// not).
func (s *Server) Queries() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// QueriesFor returns the number of queries received for name and qtype
// (e.g. dns.TypeA).
func (s *Server) QueriesFor(name string, qtype uint16) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[qkey{canonical(name), qtype}]
}

// WaitQueries blocks until the server has received at least n queries, or
// until ctx is done (then it returns ctx's error).
func (s *Server) WaitQueries(ctx context.Context, n int64) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cond.Broadcast()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queries < n {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dnstest: %d queries of %d: %w", s.queries, n, err)
		}
		s.cond.Wait()
	}
	return nil
}

// ServeDNS answers one query: it implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcodeFormatError(req)
		w.WriteMsg(m)
		return
	}
	tcp := w.LocalAddr().Network() == "tcp"
	reply, drop, hold := s.receive(req, tcp)
	if hold != nil {
		<-hold
	}
	if drop {
		if tcp { // keep the connection open without a reply
			<-s.quit
		}
		return
	}
	w.WriteMsg(reply)
}

// receive counts the query and builds its reply, under the lock; it also
// returns whether to drop it and what to wait for before answering.
func (s *Server) receive(req *dns.Msg, tcp bool) (reply *dns.Msg, drop bool, hold chan struct{}) {
	q := req.Question[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	s.counts[qkey{canonical(q.Name), q.Qtype}]++
	s.cond.Broadcast()
	return s.replyLocked(req, tcp), s.drop, s.hold
}

// replyLocked builds the reply to req.
func (s *Server) replyLocked(req *dns.Msg, tcp bool) *dns.Msg {
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	name := canonical(q.Name)
	n := s.names[name]
	switch {
	case n != nil && n.rcode != 0:
		m.Rcode = n.rcode
		return m
	case n != nil && n.truncate && !tcp:
		m.Truncated = true
		return m
	}
	m.Answer = s.answerLocked(name, q.Qtype)
	if len(m.Answer) == 0 && n != nil {
		if n.nx {
			m.Rcode = dns.RcodeNameError
		}
		if n.soa != nil {
			m.Ns = []dns.RR{dns.Copy(n.soa)}
		}
	}
	if !tcp {
		m.Truncate(udpSize(req))
	}
	return m
}

// udpSize is the largest UDP reply the client of req accepts.
func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}

// answerLocked is the answer section for name and qtype: name's records of
// qtype, or its CNAME followed (unless cnameOnly) by the target's answer.
func (s *Server) answerLocked(name string, qtype uint16) []dns.RR {
	var out []dns.RR
	for range maxChase {
		n := s.names[name]
		if n == nil {
			return out
		}
		if rrs := n.records(qtype); len(rrs) > 0 {
			return append(out, rrs...)
		}
		if n.cname == nil {
			return out
		}
		out = append(out, dns.Copy(n.cname))
		if s.cnameOnly {
			return out
		}
		name = n.cname.(*dns.CNAME).Target
	}
	return out
}

// records returns copies of n's records of qtype in the order to send them.
func (n *node) records(qtype uint16) []dns.RR {
	var rrs []dns.RR
	switch qtype {
	case dns.TypeA:
		rrs = n.a
	case dns.TypeAAAA:
		rrs = n.aaaa
	case dns.TypeSRV:
		rrs = n.srv
	case dns.TypeCNAME:
		if n.cname != nil {
			rrs = []dns.RR{n.cname}
		}
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		j := i
		if n.reverse {
			j = len(rrs) - 1 - i
		}
		out[j] = dns.Copy(rr)
	}
	return out
}
