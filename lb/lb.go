// Package lb picks the upstream peer for each new TCP connection or UDP
// session, with nginx's algorithms. A Balancer is built once per peer set, is
// safe for concurrent use, and knows nothing of health: callers say which
// peers are usable.
//
// Every method gives, for the same peer list and the same key, the peer
// nginx 1.22 gives: smooth weighted round robin (ngx_stream_upstream_get_peer),
// ip_hash's hash*113%6271 over the client address, hash's crc32 rehash loop,
// the 160-points-per-weight crc32 ring of "hash KEY consistent", least_conn,
// random, and least_time (nginx 1.31). Like nginx, the hash and random methods fall back to round
// robin after 20 unusable tries, and an upstream with a single peer is always
// served by round robin.
//
// Pick does not allocate. Balancers that keep round robin state (all of
// them) implement Failer, through which the caller reports a failed
// connection as nginx's free_peer does; the least_time ones also implement
// Timer, through which the caller reports how long each attempt took.
package lb

import (
	"errors"
	"fmt"
	"strings"
	"time"
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
	LeastTimeConnect                 // "least_time connect"
	LeastTimeFirstByte               // "least_time first_byte"
	LeastTimeLastByte                // "least_time last_byte"
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
	LeastTimeConnect:   "least_time connect",
	LeastTimeFirstByte: "least_time first_byte",
	LeastTimeLastByte:  "least_time last_byte",
}

// String returns the method as nginx's directive spells it, without the hash
// key: "round_robin", "ip_hash", "hash", "hash consistent", "least_conn",
// "random", "random two", "random two least_conn", "least_time connect",
// "least_time first_byte", "least_time last_byte".
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
	// Backup peers are used by round robin, least_conn and least_time only
	// when no primary peer is usable. nginx refuses them with the other methods,
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
	// (active connections), read by least_conn, random two, least_time and
	// bounded load. A nil State reads as no connections anywhere.
	// least_time also reads CheckedState if State implements it.
	State State

	// Inflight is least_time's "inflight" parameter: a flow counts as in
	// flight from its pick until the time the method balances on is known
	// (for last_byte, until it ends), and a peer whose flows in flight are
	// older on average than its average time is judged by their age. Only
	// the least_time methods take it.
	Inflight bool

	// Now is the clock least_time reads (the inflight ages in milliseconds,
	// the decay in Unix seconds against CheckedState); nil means time.Now.
	Now func() time.Time
}

// State is the live per-peer state that the proxy keeps in one place and the
// balancers that need it read.
type State interface {
	// Active returns the number of live connections to peer i, counted from
	// the moment it was picked, as nginx's peer->conns.
	Active(i int) int
}

// CheckedState is a State that also knows each peer's passive-health clock.
// least_time halves a peer's average time for each fail_timeout (plus one
// second) that passed since the peer was last checked, so that a slow peer
// not chosen for a while is tried again; without a CheckedState no average
// decays.
type CheckedState interface {
	State
	// Checked returns nginx's peer->checked for peer i, in Unix seconds
	// (0: never), and its fail_timeout in whole seconds. checked is set when
	// the peer is picked more than fail_timeout after the last setting, and
	// when a connection to it fails.
	Checked(i int) (checked, failTimeout int64)
}

// Timer is implemented by the least_time Balancers. The caller reports each
// attempt on a peer it picked, as nginx's peer.notify and peer.free: when
// it connected, when the upstream's first byte came, and when it ended.
// Every attempt that Pick started must end with one Done.
type Timer interface {
	// Connected reports that the attempt on peer i connected d after it
	// began (NGX_STREAM_UPSTREAM_NOTIFY_CONNECT).
	Connected(i int, d time.Duration)
	// FirstByte reports that the first byte from peer i came d after the
	// attempt began (NGX_STREAM_UPSTREAM_NOTIFY_FIRST_BYTE).
	FirstByte(i int, d time.Duration)
	// Done reports the end of the attempt on peer i (free_peer). failed is
	// NGX_PEER_FAILED: a connect that failed or timed out, or a UDP socket
	// error; the times of a failed attempt are not averaged.
	Done(i int, failed bool, t Times)
}

// Times are one attempt's times from its start, as $upstream_connect_time,
// $upstream_first_byte_time and $upstream_session_time; negative for what
// did not happen.
type Times struct {
	Connect, FirstByte, Total time.Duration
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
	case RoundRobin, LeastConn, LeastTimeConnect, LeastTimeFirstByte, LeastTimeLastByte:
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
	if opts.Inflight && (method < LeastTimeConnect || method > LeastTimeLastByte) {
		return nil, fmt.Errorf("lb: inflight needs least_time, not %v", method)
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
	case LeastTimeConnect, LeastTimeFirstByte, LeastTimeLastByte:
		return newLeastTime(rr, method, opts), nil
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
