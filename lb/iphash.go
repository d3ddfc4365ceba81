package lb

// ipHash is nginx's http "ip_hash" (ngx_http_upstream_get_ip_hash_peer)
// applied to the stream client address. The key is the address as the
// listening socket gives it: 4 bytes for an AF_INET socket, of which the
// first three are hashed (a /24 goes to one peer), or 16 bytes for an
// AF_INET6 socket, all hashed. An IPv4 client of a dual-stack [::] listener
// arrives as ::ffff:a.b.c.d on an AF_INET6 socket and nginx hashes those 16
// bytes, so the caller must pass 16 bytes then and 4 only when the listener
// is IPv4. Any other key length hashes as nginx's pseudo address 0.0.0
// (a Unix socket client).
//
// From h = 89, each try runs h = (h*113 + b) % 6271 over the bytes and takes
// the peer owning slot h % total weight; an unusable peer costs a try and the
// next try continues from h. After 20 tries, or with a single peer, it is
// round robin.
type ipHash struct {
	*rrState
	slots weightSlots
}

func newIPHash(rr *rrState) *ipHash {
	return &ipHash{rrState: rr, slots: newWeightSlots(rr)}
}

var pseudoAddr = [3]byte{}

func (h *ipHash) Pick(key []byte, usable func(i int) bool) (int, error) {
	if len(h.primary) < 2 {
		return h.pick(usable)
	}
	if i, ok := h.probe(key, usable); ok {
		return i, nil
	}
	return h.pick(usable)
}

// Owner implements Owner.
func (h *ipHash) Owner(key []byte, usable func(i int) bool) (int, bool) {
	if len(h.primary) < 2 {
		return soleOwner(h.rrState, usable)
	}
	return h.probe(key, usable)
}

// probe is nginx's ip_hash loop: the peer the address lands on, tried up
// to 20 times, or false (round robin then picks).
func (h *ipHash) probe(key []byte, usable func(i int) bool) (int, bool) {
	addr := key
	switch len(key) {
	case 4:
		addr = key[:3]
	case 16:
	default:
		addr = pseudoAddr[:]
	}
	hash := uint64(89)
	for tries := 0; ; {
		for _, b := range addr {
			hash = (hash*113 + uint64(b)) % 6271
		}
		if i := h.slots.peer(hash); usable(i) {
			return i, true
		}
		if tries++; tries > maxTries {
			return -1, false
		}
	}
}
