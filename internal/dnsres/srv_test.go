package dnsres

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/dnstest"
	"github.com/miekg/dns"
)

// lookupService runs LookupService and fails the test on an error.
func lookupService(t *testing.T, r *Resolver, service, name string) Answer {
	t.Helper()
	a, err := r.LookupService(t.Context(), service, name)
	if err != nil {
		t.Fatalf("LookupService(%q, %q): %v", service, name, err)
	}
	return a
}

func TestSRV(t *testing.T) {
	s := dnstest.Start(t)
	s.SetSRV("_http._tcp.example.net", 300,
		dnstest.SRV{Priority: 20, Weight: 5, Port: 8083, Target: "c.example.net"},
		dnstest.SRV{Priority: 10, Weight: 0, Port: 8081, Target: "a.example.net"},
		dnstest.SRV{Priority: 10, Weight: 3, Port: 8082, Target: "b.example.net."},
	)
	s.SetA("a.example.net", 300, "127.0.0.1", "127.0.0.11")
	s.SetA("b.example.net", 60, "127.0.0.2")
	s.SetA("c.example.net", 300, "127.0.0.3")
	r := newResolver(v4, s)
	want := []Addr{
		{Addr: ip("127.0.0.1"), Port: 8081, Name: "a.example.net", Weight: 1, Priority: 10},
		{Addr: ip("127.0.0.11"), Port: 8081, Name: "a.example.net", Weight: 1, Priority: 10},
		{Addr: ip("127.0.0.2"), Port: 8082, Name: "b.example.net", Weight: 3, Priority: 10},
		{Addr: ip("127.0.0.3"), Port: 8083, Name: "c.example.net", Weight: 5, Priority: 20},
	}
	for _, service := range []string{"http", "_http._tcp"} {
		a := lookupService(t, r, service, "Example.net.")
		if !slices.Equal(a.Addrs, want) {
			t.Errorf("%s: addresses\n%+v\nwant\n%+v", service, a.Addrs, want)
		}
		if a.TTL != time.Minute {
			t.Errorf("%s: TTL %v, want b's 1m", service, a.TTL)
		}
	}
}

func TestSRVCNAME(t *testing.T) {
	s := dnstest.Start(t)
	s.SetCNAMEOnly(true)
	s.SetCNAME("_http._tcp.example.net", "_http._tcp.alias.example.net", 300)
	s.SetSRV("_http._tcp.alias.example.net", 300, dnstest.SRV{Port: 80, Target: "host.example.net"})
	s.SetCNAME("host.example.net", "real.example.net", 300)
	s.SetA("real.example.net", 300, "127.0.0.5")
	a := lookupService(t, newResolver(v4, s), "http", "example.net")
	want := []Addr{{Addr: ip("127.0.0.5"), Port: 80, Name: "host.example.net", Weight: 1}}
	if !slices.Equal(a.Addrs, want) {
		t.Errorf("addresses %+v, want %+v", a.Addrs, want)
	}
}

func TestSRVTargetFails(t *testing.T) {
	s := dnstest.Start(t)
	s.SetSRV("_http._tcp.example.net", 300,
		dnstest.SRV{Port: 81, Target: "bad.example.net"},
		dnstest.SRV{Port: 82, Target: "good.example.net"},
		dnstest.SRV{Port: 83, Target: "."},
	)
	s.SetRcode("bad.example.net", dns.RcodeServerFailure)
	s.SetA("good.example.net", 300, "127.0.0.2")
	a := lookupService(t, newResolver(v4, s), "http", "example.net")
	if got := ips(a); !slices.Equal(got, []string{"127.0.0.2"}) || a.Addrs[0].Port != 82 {
		t.Errorf("answer %+v, want good.example.net's only", a)
	}
}

func TestSRVAllFail(t *testing.T) {
	s := dnstest.Start(t)
	s.SetSRV("_http._tcp.example.net", 300,
		dnstest.SRV{Port: 81, Target: "empty.example.net"},
		dnstest.SRV{Port: 82, Target: "bad.example.net"},
	)
	s.SetRcode("bad.example.net", dns.RcodeServerFailure)
	_, err := newResolver(v4, s).LookupService(t.Context(), "http", "example.net")
	var e *Error
	if !errors.As(err, &e) || e.Rcode != dns.RcodeServerFailure || e.Name != "bad.example.net" {
		t.Fatalf("error %v, want bad.example.net's SERVFAIL", err)
	}
	if want := "SRV _http._tcp.example.net: bad.example.net could not be resolved (2: Server failure)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestSRVEmpty(t *testing.T) {
	s := dnstest.Start(t)
	s.SetSRV("_http._tcp.example.net", 300,
		dnstest.SRV{Port: 81, Target: "empty.example.net"},
		dnstest.SRV{Port: 82, Target: "."},
	)
	s.SetNXDomain("empty.example.net", true)
	r := newResolver(Config{}, s)
	for _, name := range []string{"example.net", "nosrv.example.net"} {
		if a := lookupService(t, r, "http", name); len(a.Addrs) != 0 || a.TTL != 10*time.Second {
			t.Errorf("%s: %+v, want no addresses for 10s", name, a)
		}
	}
	if _, err := r.LookupService(t.Context(), "", "example.net"); err == nil {
		t.Error("empty service: no error")
	}
}

func TestSRVRcode(t *testing.T) {
	s := dnstest.Start(t)
	s.SetRcode("_http._tcp.example.net", dns.RcodeRefused)
	_, err := newResolver(v4, s).LookupService(t.Context(), "http", "example.net")
	if want := "_http._tcp.example.net could not be resolved (5: Operation refused)"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

// ip parses an address.
func ip(s string) netip.Addr { return netip.MustParseAddr(s) }
