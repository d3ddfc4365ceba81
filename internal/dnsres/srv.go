package dnsres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/miekg/dns"
)

// target is the outcome of resolving one SRV target.
type target struct {
	addrs []Addr
	ttl   uint32
	err   error
}

// LookupService resolves the SRV records of service for name, then each
// target's addresses as LookupHost does. Service "http" asks for
// "_http._tcp.NAME"; a service starting with "_" is used as is
// ("_http._tcp" asks for "_http._tcp.NAME").
//
// The addresses come by priority, ascending, and within one priority in
// the order the records came (not shuffled: the caller picks). Each
// carries its target's name, the record's port, weight and priority. A
// target "." gives nothing. Targets that fail are skipped when another
// gives addresses; when none does, the first failure is the error, and
// without failures the answer is empty.
func (r *Resolver) LookupService(ctx context.Context, service, name string) (Answer, error) {
	qname, err := serviceName(service, name)
	if err != nil {
		return Answer{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	p := r.resolve(ctx, display(qname), qname, dns.TypeSRV)
	if p.err != nil {
		return Answer{}, p.err
	}
	srvs := sortSRV(p.rrs)
	targets := r.targets(ctx, srvs)
	addrs, ttl, err := mergeSRV(display(qname), srvs, targets, p.ttl)
	if err != nil {
		return Answer{}, err
	}
	return r.answer(addrs, ttl), nil
}

// sortSRV are the SRV records of rrs sorted by priority, stably.
func sortSRV(rrs []dns.RR) []*dns.SRV {
	var srvs []*dns.SRV
	for _, rr := range rrs {
		if s, ok := rr.(*dns.SRV); ok {
			srvs = append(srvs, s)
		}
	}
	slices.SortStableFunc(srvs, func(a, b *dns.SRV) int { return int(a.Priority) - int(b.Priority) })
	return srvs
}

// targets resolves the distinct targets of srvs at once, "." excepted.
func (r *Resolver) targets(ctx context.Context, srvs []*dns.SRV) map[string]*target {
	out := make(map[string]*target)
	var wg sync.WaitGroup
	for _, s := range srvs {
		fqdn := dns.CanonicalName(s.Target)
		if fqdn == "." || out[fqdn] != nil {
			continue
		}
		t := &target{}
		out[fqdn] = t
		wg.Go(func() { t.addrs, t.ttl, t.err = r.host(ctx, fqdn) })
	}
	wg.Wait()
	return out
}

// mergeSRV builds the addresses of srvs from their targets, valid as long
// as the SRV records and the targets that gave addresses. Without any, it
// returns the first target's failure (wrapped with name, the SRV name),
// or an empty answer.
func mergeSRV(name string, srvs []*dns.SRV, targets map[string]*target, srvTTL uint32) ([]Addr, uint32, error) {
	var addrs []Addr
	ttl, negTTL := srvTTL, srvTTL
	var err error
	for _, s := range srvs {
		fqdn := dns.CanonicalName(s.Target)
		t := targets[fqdn]
		switch {
		case t == nil: // "."
		case len(t.addrs) > 0:
			addrs = append(addrs, srvAddrs(s, display(fqdn), t.addrs)...)
			ttl = min(ttl, t.ttl)
		case t.err != nil:
			err = cmp.Or(err, t.err)
		default:
			negTTL = min(negTTL, t.ttl)
		}
	}
	if len(addrs) > 0 {
		return addrs, ttl, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("SRV %s: %w", name, err)
	}
	return nil, negTTL, nil
}

// srvAddrs are the addresses of target (named name) for the record s.
func srvAddrs(s *dns.SRV, name string, target []Addr) []Addr {
	weight := max(s.Weight, 1) // nginx: weight 0 counts as 1
	out := make([]Addr, len(target))
	for i, a := range target {
		out[i] = Addr{Addr: a.Addr, Port: s.Port, Name: name, Weight: weight, Priority: s.Priority}
	}
	return out
}
