package proxy

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/lb"
)

// Picker answers "which server would this key go to" for one upstream,
// built exactly as the running proxy builds it. It is what "baton hash" uses
// to plan a change of the server list. It is not safe for concurrent use.
type Picker struct {
	g      *group
	buf    []byte
	usable func(int) bool
}

// NewPicker returns a Picker for u. Only key-based methods (ip_hash, hash,
// hash consistent) map a key to a server; others are refused.
func NewPicker(u *config.Upstream) (*Picker, error) {
	// Pick takes the evaluated key: the variables of the key (map's, say)
	// are never read, only named.
	vt := newVarTable()
	for _, name := range varNames(u.HashKey) {
		if vt.defs[name] == nil {
			vt.define(name, nil)
		}
	}
	g, err := newGroup(u, vt)
	if err != nil {
		return nil, err
	}
	switch g.method {
	case lb.IPHash, lb.Hash, lb.ConsistentHash:
	default:
		return nil, fmt.Errorf("upstream %q balances with %s: its picks do not depend on a key", u.Name, g.method)
	}
	if g.res != nil {
		return nil, fmt.Errorf("upstream %q has servers resolved at run time (resolve): write the addresses they resolve to now as \"server IP:PORT\" lines to see where keys land", u.Name)
	}
	return &Picker{g: g, usable: func(i int) bool { return g.usable(i, time.Now()) }}, nil
}

// Pick returns the server (its name as written, and the address) that key
// lands on. For ip_hash, key is a client address; for hash and hash
// consistent it is the evaluated key text (e.g. the client address for
// "hash $remote_addr"). Down servers are skipped, as the proxy skips them.
func (pk *Picker) Pick(key string) (name string, addr netip.AddrPort, err error) {
	k := append(pk.buf[:0], key...)
	if pk.g.method == lb.IPHash {
		a, err := netip.ParseAddr(key)
		if err != nil {
			return "", netip.AddrPort{}, fmt.Errorf("ip_hash key %q is not an IP address", key)
		}
		k = appendAddrKey(pk.buf[:0], a)
	}
	pk.buf = k
	if pk.g.bal == nil {
		return "", netip.AddrPort{}, fmt.Errorf("upstream %q has no address: its names are resolved at run time", pk.g.name)
	}
	i, err := pk.g.bal.Pick(k, pk.usable)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	return pk.g.peers[i].name, pk.g.peers[i].addr, nil
}

// appendAddrKey appends a client address as ip_hash hashes it: 4 bytes for
// IPv4, 16 for IPv6.
func appendAddrKey(b []byte, a netip.Addr) []byte {
	a = a.Unmap()
	if a.Is4() {
		x := a.As4()
		return append(b, x[:]...)
	}
	x := a.As16()
	return append(b, x[:]...)
}
