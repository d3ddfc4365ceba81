package dnsres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Bounds of one attempt: one server asked once (over UDP, then TCP when
// the reply is truncated).
const (
	maxAttempt = 2 * time.Second
	minAttempt = 100 * time.Millisecond
)

// udpSize is the receive buffer for UDP replies, nginx's.
const udpSize = 4096

// longAgo is a deadline in the past, to interrupt a blocked read.
var longAgo = time.Unix(1, 0)

// errNotReply is a reply that is not an answer to our question.
var errNotReply = errors.New("malformed reply")

// attemptTimeout bounds one attempt: min(2s, Timeout/len(Servers)), at
// least 100ms.
func (r *Resolver) attemptTimeout() time.Duration {
	d := r.cfg.Timeout / time.Duration(max(len(r.cfg.Servers), 1))
	return max(min(d, maxAttempt), minAttempt)
}

// exchange asks the servers, in turn from the next one, for qname's
// records of qtype until one replies or ctx is done. name is the name the
// lookup reports in errors. A reply with any rcode is returned as is.
func (r *Resolver) exchange(ctx context.Context, name, qname string, qtype uint16) (*dns.Msg, error) {
	servers := r.cfg.Servers
	if len(servers) == 0 {
		return nil, &Error{Name: name, Err: errNoServers}
	}
	q := new(dns.Msg)
	q.SetQuestion(qname, qtype) // RD set, random ID
	start := int(r.next.Add(1) - 1)
	fast := 0 // consecutive failures that were not timeouts
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return nil, ctxError(ctx, name)
		}
		srv := servers[(start+i)%len(servers)]
		q.Id = dns.Id()
		reply, err := r.attempt(ctx, srv, q)
		if err == nil {
			return reply, nil
		}
		if isTimeout(err) {
			fast = 0
			continue
		}
		// Every server failed at once in a row: asking again would spin.
		if fast++; fast >= len(servers) {
			return nil, &Error{Name: name, Err: err}
		}
	}
}

// attempt asks srv once: over UDP, then over TCP when the reply is
// truncated, within one attempt timeout.
func (r *Resolver) attempt(ctx context.Context, srv netip.AddrPort, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.attemptTimeout())
	defer cancel()
	reply, err := roundTrip(ctx, "udp", srv, q)
	if err == nil && reply.Truncated {
		reply, err = roundTrip(ctx, "tcp", srv, q)
	}
	return reply, err
}

// roundTrip sends q to srv over network and reads its reply, until ctx is
// done. Over UDP, replies with another ID (late answers to earlier
// queries) are skipped.
func roundTrip(ctx context.Context, network string, srv netip.AddrPort, q *dns.Msg) (*dns.Msg, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, srv.String())
	if err != nil {
		return nil, err
	}
	conn := &dns.Conn{Conn: nc, UDPSize: udpSize}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(longAgo) })
	defer stop()
	if err := conn.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("sending to %s/%s: %w", srv, network, err)
	}
	for {
		reply, err := conn.ReadMsg()
		if err != nil {
			return nil, fmt.Errorf("reading from %s/%s: %w", srv, network, err)
		}
		if network == "udp" && reply.Id != q.Id {
			continue
		}
		if err := checkReply(q, reply); err != nil {
			return nil, fmt.Errorf("reply from %s/%s: %w", srv, network, err)
		}
		return reply, nil
	}
}

// checkReply reports why reply is not the answer to q.
func checkReply(q, reply *dns.Msg) error {
	if reply.Id != q.Id {
		return fmt.Errorf("%w: ID %d, query's %d", errNotReply, reply.Id, q.Id)
	}
	if !reply.Response {
		return fmt.Errorf("%w: not a response", errNotReply)
	}
	want := q.Question[0]
	if len(reply.Question) != 1 {
		return fmt.Errorf("%w: %d questions", errNotReply, len(reply.Question))
	}
	got := reply.Question[0]
	if !strings.EqualFold(got.Name, want.Name) || got.Qtype != want.Qtype || got.Qclass != want.Qclass {
		return fmt.Errorf("%w: question %s, not %s", errNotReply, got.String(), want.String())
	}
	return nil
}
