// Package lb picks the upstream peer for each new TCP connection or UDP
// session, with nginx's algorithms. A Balancer is built once per peer set, is
// safe for concurrent use, and knows nothing of health: callers say which
// peers are usable.
package lb

import (
	"errors"
	"fmt"
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

// Peer is one upstream server as a balancer sees it. Name is the server as
// written in the config ("10.0.0.1:5432", "db.svc:5432"); the hash methods
// hash it exactly as nginx does.
type Peer struct {
	Name   string
	Weight int
	// Backup peers are used by round robin and least_conn only when no
	// primary peer is usable.
	Backup bool
}

// Options are the per-upstream settings beyond the peer list. The zero value
// is valid.
type Options struct {
	// BalanceFactor is "hash_balance_factor N" for ConsistentHash: no peer
	// takes more than N% of the average load. 0 disables bounded load.
	BalanceFactor int

	// State, if non-nil, is the live per-peer state kept by the caller
	// (active connections), read by least_conn and bounded load.
	State State
}

// State is the live per-peer state that the proxy keeps in one place and the
// balancers that need it read.
type State interface {
	// Active returns the number of live connections to peer i.
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

// New returns the Balancer for method. New copies peers; later changes to the
// slice do not affect the Balancer.
func New(method Method, peers []Peer, opts Options) (Balancer, error) {
	if len(peers) == 0 {
		return nil, errors.New("lb: no peers")
	}
	switch method {
	case RoundRobin:
		return newRoundRobin(peers), nil
	}
	return nil, fmt.Errorf("lb: unknown method %v", method)
}
