package dnsres

import (
	"cmp"
	"context"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Defaults and limits, nginx's.
const (
	defaultTimeout = 30 * time.Second // resolver_timeout
	emptyTTL       = 10               // seconds an empty answer without SOA is valid
	maxCNAME       = 10               // links of a CNAME chain followed
)

// Config is a resolver's configuration: nginx's "resolver" and
// "resolver_timeout" directives.
type Config struct {
	Servers []netip.AddrPort // "resolver" addresses, port 53 when the config gave none (caller fills it)
	Valid   time.Duration    // "valid=": overrides the answer's TTL when non-zero
	IPv4    bool             // "ipv4=on" (default on): query A
	IPv6    bool             // "ipv6=on" (default on): query AAAA
	Timeout time.Duration    // "resolver_timeout": bound for one whole resolution (default 30s when 0)
}

// Resolver resolves names with nginx's semantics. It is safe for
// concurrent use and keeps no answers (see Cache).
type Resolver struct {
	cfg  Config
	next atomic.Uint32 // round robin over cfg.Servers
}

// New returns a resolver for cfg. IPv4 and IPv6 both false (which nginx
// refuses) means both on, so that a zero Config queries A and AAAA.
func New(cfg Config) *Resolver {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if !cfg.IPv4 && !cfg.IPv6 {
		cfg.IPv4, cfg.IPv6 = true, true
	}
	cfg.Servers = slices.Clone(cfg.Servers)
	return &Resolver{cfg: cfg}
}

// Addr is one resolved address.
type Addr struct {
	Addr     netip.Addr
	Port     uint16 // SRV only: the record's port (0 for host lookups)
	Name     string // SRV only: the target name the address came from, without trailing dot (e.g. "example.net"); "" for host lookups
	Weight   uint16 // SRV only; 0 in the record is 1 here, as nginx
	Priority uint16 // SRV only
}

// Answer is the result of a lookup.
type Answer struct {
	Addrs []Addr
	// TTL is how long the answer is valid: Config.Valid if set, else the
	// minimum TTL of the records used. For an empty answer it is the SOA's
	// negative TTL (min of its TTL and minimum, RFC 2308) when the reply
	// has one, else 10s as nginx.
	TTL time.Duration
}

// part is the outcome of one question (one type) with its CNAMEs followed.
type part struct {
	rrs []dns.RR // records of the type asked, owned by names on the chain
	ttl uint32   // minimum TTL of rrs and the CNAMEs, or the negative TTL
	err error
}

// LookupHost resolves name to its A (if IPv4) then AAAA (if IPv6)
// addresses, A first then AAAA, each in the order the server sent them.
// Both questions go out at once; when one fails and the other gives
// addresses, the addresses are the answer.
func (r *Resolver) LookupHost(ctx context.Context, name string) (Answer, error) {
	fqdn, err := canonical(name)
	if err != nil {
		return Answer{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	addrs, ttl, err := r.host(ctx, fqdn)
	if err != nil {
		return Answer{}, err
	}
	return r.answer(addrs, ttl), nil
}

// answer is the Answer of addrs valid for ttl seconds, or for Valid.
func (r *Resolver) answer(addrs []Addr, ttl uint32) Answer {
	d := time.Duration(ttl) * time.Second
	if r.cfg.Valid > 0 {
		d = r.cfg.Valid
	}
	return Answer{Addrs: addrs, TTL: d}
}

// qtypes are the types LookupHost asks for.
func (r *Resolver) qtypes() []uint16 {
	var t []uint16
	if r.cfg.IPv4 {
		t = append(t, dns.TypeA)
	}
	if r.cfg.IPv6 {
		t = append(t, dns.TypeAAAA)
	}
	return t
}

// host resolves fqdn's addresses, asking for each type at once.
func (r *Resolver) host(ctx context.Context, fqdn string) ([]Addr, uint32, error) {
	types := r.qtypes()
	parts := make([]part, len(types))
	var wg sync.WaitGroup
	for i, t := range types {
		wg.Go(func() { parts[i] = r.resolve(ctx, display(fqdn), fqdn, t) })
	}
	wg.Wait()
	return mergeHost(parts)
}

// mergeHost joins the parts of a host lookup: their addresses in order,
// valid as long as the shortest-lived part that gave some; without any,
// the first failure, or else an empty answer valid as long as the
// shortest negative TTL.
func mergeHost(parts []part) ([]Addr, uint32, error) {
	var addrs []Addr
	ttl, negTTL := uint32(math.MaxUint32), uint32(math.MaxUint32)
	var err error
	for _, p := range parts {
		switch {
		case len(p.rrs) > 0:
			addrs = append(addrs, hostAddrs(p.rrs)...)
			ttl = min(ttl, p.ttl)
		case p.err != nil:
			err = cmp.Or(err, p.err)
		default:
			negTTL = min(negTTL, p.ttl)
		}
	}
	if len(addrs) > 0 {
		return addrs, ttl, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return nil, negTTL, nil
}

// hostAddrs are the addresses of A and AAAA records.
func hostAddrs(rrs []dns.RR) []Addr {
	var addrs []Addr
	for _, rr := range rrs {
		var ip netip.Addr
		var ok bool
		switch rr := rr.(type) {
		case *dns.A:
			ip, ok = netip.AddrFromSlice(rr.A)
			ip = ip.Unmap()
		case *dns.AAAA:
			ip, ok = netip.AddrFromSlice(rr.AAAA)
		}
		if ok {
			addrs = append(addrs, Addr{Addr: ip})
		}
	}
	return addrs
}

// resolve asks for qname's records of qtype, following CNAMEs: the records
// of a reply whose owners are on the chain count, and a reply whose chain
// ends without any has its last target asked in turn. name is the name
// errors report.
func (r *Resolver) resolve(ctx context.Context, name, qname string, qtype uint16) part {
	ttl := uint32(math.MaxUint32)
	hops := 0
	for {
		reply, err := r.exchange(ctx, name, qname, qtype)
		if err != nil {
			return part{err: err}
		}
		switch reply.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			return part{ttl: min(ttl, negativeTTL(reply))}
		default:
			return part{err: &Error{Name: name, Rcode: reply.Rcode}}
		}
		c := followChain(reply.Answer, qname, qtype)
		ttl = min(ttl, c.ttl)
		if len(c.rrs) > 0 {
			return part{rrs: c.rrs, ttl: ttl}
		}
		if c.last == qname {
			return part{ttl: min(ttl, negativeTTL(reply))}
		}
		if hops += c.hops; hops > maxCNAME {
			return part{err: &Error{Name: name, Err: errCNAMEChain}}
		}
		qname = c.last
	}
}

// chain is what one reply's answer section says of a name.
type chain struct {
	rrs  []dns.RR // records of the type asked owned by names on the chain
	last string   // the chain's last name (the name asked when no CNAME)
	hops int      // CNAME links followed
	ttl  uint32   // minimum TTL of the links and of rrs
}

// followChain follows the CNAMEs of answer from qname and collects the
// records of qtype owned by the names on the chain.
func followChain(answer []dns.RR, qname string, qtype uint16) chain {
	c := chain{last: qname, ttl: math.MaxUint32}
	on := map[string]bool{qname: true}
	for c.hops < len(answer) {
		cn := findCNAME(answer, c.last)
		if cn == nil || on[dns.CanonicalName(cn.Target)] {
			break
		}
		c.last = dns.CanonicalName(cn.Target)
		on[c.last] = true
		c.ttl = min(c.ttl, cn.Hdr.Ttl)
		c.hops++
	}
	for _, rr := range answer {
		h := rr.Header()
		if h.Rrtype == qtype && h.Class == dns.ClassINET && on[dns.CanonicalName(h.Name)] {
			c.rrs = append(c.rrs, rr)
			c.ttl = min(c.ttl, h.Ttl)
		}
	}
	return c
}

// findCNAME is the CNAME record owned by name in answer, or nil.
func findCNAME(answer []dns.RR, name string) *dns.CNAME {
	for _, rr := range answer {
		if cn, ok := rr.(*dns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, name) {
			return cn
		}
	}
	return nil
}

// negativeTTL is how long an empty reply is valid: the SOA's TTL capped
// by its minimum (RFC 2308), or nginx's 10s without SOA.
func negativeTTL(reply *dns.Msg) uint32 {
	for _, rr := range reply.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return emptyTTL
}
