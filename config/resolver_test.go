package config

import (
	"net/netip"
	"testing"
	"time"
)

// The resolver an upstream and a server use: its own, else the stream's
// (written before or after it), with the nearest resolver_timeout, else 30s.
func TestResolverMerge(t *testing.T) {
	src := `stream {
    upstream u {
        zone z 1m;
        server db.example:5432 resolve weight=2;
        server 10.0.0.9:5432 resolve;
        server _pg resolve service=postgresql;
    }
    upstream own {
        zone z;
        server db.example:5432 resolve;
        resolver 10.0.0.2:5353 valid=5s ipv6=off;
        resolver_timeout 2s;
    }
    server { listen 1; proxy_pass u; }
    server { listen 2; proxy_pass own; resolver_timeout 7s; }
    resolver 10.0.0.1 [::1]:53;
    resolver_timeout 3s;
}`
	c, err := testLoader().Parse("a.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	u, own := c.Stream.Upstreams[0], c.Stream.Upstreams[1]
	r := u.Resolver
	if r == nil || len(r.Addrs) != 2 || r.Addrs[0] != netip.MustParseAddrPort("10.0.0.1:53") ||
		r.Addrs[1] != netip.MustParseAddrPort("[::1]:53") || r.Timeout != 3*time.Second || !r.IPv4 || !r.IPv6 || r.Valid != 0 {
		t.Fatalf("upstream u's resolver = %+v, want the stream's with timeout 3s", r)
	}
	s0, s1, s2 := u.Servers[0], u.Servers[1], u.Servers[2]
	if !s0.Resolve || s0.Host != "db.example" || s0.Port != 5432 || len(s0.Addrs) != 0 || s0.Weight != 2 {
		t.Errorf("server 0 = %+v, want resolved at run time", s0)
	}
	if s1.Resolve || len(s1.Addrs) != 1 {
		t.Errorf("server 1 = %+v: an address with resolve is a plain address, as nginx", s1)
	}
	if !s2.Resolve || s2.Service != "postgresql" || s2.Host != "_pg" || s2.Port != 0 {
		t.Errorf("server 2 = %+v, want an SRV server", s2)
	}
	r = own.Resolver
	if r == nil || len(r.Addrs) != 1 || r.Addrs[0] != netip.MustParseAddrPort("10.0.0.2:5353") ||
		r.Timeout != 2*time.Second || r.Valid != 5*time.Second || r.IPv6 {
		t.Fatalf("upstream own's resolver = %+v, want its own", r)
	}
	if r := c.Stream.Servers[0].Resolver; r == nil || r.Timeout != 3*time.Second {
		t.Errorf("server 1's resolver = %+v, want the stream's", r)
	}
	if r := c.Stream.Servers[1].Resolver; r == nil || r.Timeout != 7*time.Second || r.Addrs[0] != netip.MustParseAddrPort("10.0.0.1:53") {
		t.Errorf("server 2's resolver = %+v, want the stream's with its own timeout 7s", r)
	}
}
