// Package lb picks the upstream peer for each new TCP connection or UDP
// session, with nginx's algorithms. A Balancer is built once per peer set, is
// safe for concurrent use, and knows nothing of health: callers say which
// peers are usable.
//
// Every method gives, for the same peer list and the same key, the peer
// nginx 1.22 gives: smooth weighted round robin (ngx_stream_upstream_get_peer),
// ip_hash's hash*113%6271 over the client address, hash's crc32 rehash loop,
// the 160-points-per-weight crc32 ring of "hash KEY consistent", least_conn
// and random. Like nginx, the hash and random methods fall back to round
// robin after 20 unusable tries, and an upstream with a single peer is always
// served by round robin.
//
// Pick does not allocate. Balancers that keep round robin state (all of
// them) implement Failer, through which the caller reports a failed
// connection as nginx's free_peer does.
package lb

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoPeer is returned by Pick when no peer is usable.
var ErrNoPeer = errors.New("lb: no usable peer")

// Method is a balancing method.
type Method int

// The balancing methods.
const (
	RoundRobin         Method = iota // nginx's smooth weighted round robin (the default)
	IPHash                           // "ip_hash"
	Hash                             // "hash KEY"
	ConsistentHash                   // "hash KEY consistent"
	LeastConn                        // "least_conn"
	Random                           // "random"
	RandomTwo                        // "random two"
	RandomTwoLeastConn               // "random two least_conn"
)

var methodNames = [...]string{
	RoundRobin:         "round_robin",
	IPHash:             "ip_hash",
	Hash:               "hash",
	ConsistentHash:     "hash consistent",
	LeastConn:          "least_conn",
	Random:             "random",
	RandomTwo:          "random two",
	RandomTwoLeastConn: "random two least_conn",
}

// String returns the method as nginx's directive spells it, without the hash
// key: "round_robin", "ip_hash", "hash", "hash consistent", "least_conn",
// "random", "random two", "random two least_conn".
func (m Method) String() string {
	if m >= 0 && int(m) < len(methodNames) {
		return methodNames[m]
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// ParseMethod returns the Method that String spells s as. Runs of spaces
// count as one, and "" is RoundRobin (an upstream without a balancing
// directive).
func ParseMethod(s string) (Method, error) {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return RoundRobin, nil
	}
	for m, name := range methodNames {
		if s == name {
			return Method(m), nil
		}
	}
	return 0, fmt.Errorf("lb: unknown balancing method %q", s)
}

// Peer is one upstream server as a balancer sees it. Name is the server as
// written in the config ("10.0.0.1:5432", "db.svc:5432"); the hash methods
// hash it exactly as nginx does. A server whose name resolves to several
// addresses is several Peers with the same Name, in order, as in nginx.
type Peer struct {
	Name string
	// Weight is "weight=N"; zero or negative means 1, nginx's default.
	Weight int
	// Backup peers are used by round robin and least_conn only when no
	// primary peer is usable. nginx refuses them with the other methods,
	// and so does New.
	Backup bool
}

// Options are the per-upstream settings beyond the peer list. The zero value
// is valid.
type Options struct {
	// BalanceFactor is "hash_balance_factor N" for ConsistentHash, with
	// HAProxy's meaning: no peer takes more than N% of the weighted average
	// of live connections, and a key whose peer is full moves on along the
	// ring. 0 disables bounded load; otherwise it must be over 100 and State
	// must be set.
	BalanceFactor int

	// State, if non-nil, is the live per-peer state kept by the caller
	// (active connections), read by least_conn, random two and bounded
	// load. A nil State reads as no connections anywhere.
	State State
}

// State is the live per-peer state that the proxy keeps in one place and the
// balancers that need it read.
type State interface {
	// Active returns the number of live connections to peer i, counted from
	// the moment it was picked, as nginx's peer->conns.
	Active(i int) int
}

// A Balancer picks the peer for a new flow.
type Balancer interface {
	// Pick returns the index, into the peers the Balancer was built from, of
	// the peer for a flow with key (the evaluated hash key; the client
	// address bytes, 4 or 16, for ip_hash; ignored by round robin), skipping
	// each i for which usable(i) is false (down, failing, at max_conns, or
	// already tried for this flow). It returns ErrNoPeer when none is left.
	Pick(key []byte, usable func(i int) bool) (int, error)
}

// Failer is implemented by every Balancer that New returns.
type Failer interface {
	// Failed reports that a connection to peer i failed, as nginx's
	// free_peer with NGX_PEER_FAILED: when maxFails > 0 the peer's
	// effective weight drops by weight/maxFails (not below 0) and then
	// climbs back by one on each pick that considers the peer. maxFails is
	// the server's "max_fails" (nginx's default is 1); 0 changes nothing,
	// and nor does a failure in an upstream with a single peer, as in
	// nginx. Counting failures and disabling the peer stays with the
	// caller, which then answers false from usable.
	Failed(i int, maxFails int)
}

// New returns the Balancer for method. New copies peers; later changes to the
// slice do not affect the Balancer.
func New(method Method, peers []Peer, opts Options) (Balancer, error) {
	if len(peers) == 0 {
		return nil, errors.New("lb: no peers")
	}
	switch method {
	case RoundRobin, LeastConn:
	case IPHash, Hash, ConsistentHash, Random, RandomTwo, RandomTwoLeastConn:
		for _, p := range peers {
			if p.Backup {
				return nil, fmt.Errorf("lb: backup server %q is not allowed with %v", p.Name, method)
			}
		}
	default:
		return nil, fmt.Errorf("lb: unknown method %v", method)
	}
	if opts.BalanceFactor != 0 {
		if method != ConsistentHash {
			return nil, fmt.Errorf("lb: balance factor needs hash consistent, not %v", method)
		}
		if opts.BalanceFactor <= 100 {
			return nil, fmt.Errorf("lb: balance factor %d must be 0 or greater than 100", opts.BalanceFactor)
		}
		if opts.State == nil {
			return nil, errors.New("lb: balance factor needs a State")
		}
	}
	rr := newRRState(peers)
	switch method {
	case IPHash:
		return newIPHash(rr), nil
	case Hash:
		return newHash(rr), nil
	case ConsistentHash:
		return newConsistentHash(rr, peers, opts), nil
	case LeastConn:
		return newLeastConn(rr, opts.State), nil
	case Random:
		return newRandom(rr, opts.State, false), nil
	case RandomTwo, RandomTwoLeastConn:
		return newRandom(rr, opts.State, true), nil
	}
	return &roundRobin{rr}, nil
}

// noState is the State used when Options.State is nil.
type noState struct{}

func (noState) Active(int) int { return 0 }

func stateOrNone(s State) State {
	if s == nil {
		return noState{}
	}
	return s
}
