package dnstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ask sends one question for name to s over network and returns the reply.
func ask(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(q, s.Addr().String())
	if err != nil {
		t.Fatalf("%s query for %s: %v", network, name, err)
	}
	return r
}

func TestRecords(t *testing.T) {
	s := Start(t)
	s.SetA("Example.NET.", 60, "127.0.0.1", "127.0.0.2")
	s.SetCNAME("alias.example.net", "example.net", 30)
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, s, network, "ALIAS.example.net", dns.TypeA)
		if len(r.Answer) != 3 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || r.Answer[2].(*dns.A).A.String() != "127.0.0.2" {
			t.Errorf("%s: answer %v", network, r.Answer)
		}
	}
	if n := s.QueriesFor("alias.EXAMPLE.net.", dns.TypeA); n != 2 || s.Queries() != 2 {
		t.Errorf("counted %d (%d in all), want 2", n, s.Queries())
	}
	s.SetA("example.net", 60)
	if r := ask(t, s, "udp", "example.net", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("removed records: %v", r)
	}
	s.SetNXDomain("example.net", true)
	if r := ask(t, s, "udp", "example.net", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("NXDOMAIN: %v", r)
	}
}

func TestTruncate(t *testing.T) {
	s := Start(t)
	s.SetA("example.net", 60, "127.0.0.1")
	s.SetTruncate("example.net", true)
	if r := ask(t, s, "udp", "example.net", dns.TypeA); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("UDP: %v", r)
	}
	if r := ask(t, s, "tcp", "example.net", dns.TypeA); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("TCP: %v", r)
	}
}

func TestHoldAndWait(t *testing.T) {
	s := Start(t)
	s.SetA("example.net", 60, "127.0.0.1")
	release := s.Hold()
	got := make(chan *dns.Msg, 1)
	go func() { got <- ask(t, s, "udp", "example.net", dns.TypeA) }()
	if err := s.WaitQueries(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		t.Fatalf("answered while held: %v", r)
	default:
	}
	release()
	release()
	if r := <-got; len(r.Answer) != 1 {
		t.Errorf("answer %v", r)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.WaitQueries(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitQueries on a canceled context: %v", err)
	}
}

func TestDropTCP(t *testing.T) {
	s := Start(t)
	s.SetDrop(true)
	q := new(dns.Msg)
	q.SetQuestion("example.net.", dns.TypeA)
	c := &dns.Client{Net: "tcp", Timeout: 200 * time.Millisecond}
	_, _, err := c.Exchange(q, s.Addr().String())
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("dropped TCP query: %v, want a timeout", err)
	}
}
