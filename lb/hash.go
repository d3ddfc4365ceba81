package lb

import (
	"hash/crc32"
	"strconv"
)

// maxTries is how many unusable picks the hash and random methods make before
// they fall back to round robin, as nginx's "tries > 20".
const maxTries = 20

// hashBalancer is "hash KEY" (ngx_stream_upstream_get_hash_peer), compatible
// with Cache::Memcached: pick k adds (crc32([k] KEY) >> 16) & 0x7fff to a
// running sum, where [k] is k in decimal and is left out for k = 0, and takes
// the peer that owns slot sum % total weight, the slots being dealt out by
// weight in config order. An unusable peer costs a try and a rehash; after 20
// tries, an empty key, or with a single peer, it is round robin.
type hashBalancer struct {
	*rrState
	slots weightSlots
}

func newHash(rr *rrState) *hashBalancer {
	return &hashBalancer{rrState: rr, slots: newWeightSlots(rr)}
}

func (h *hashBalancer) Pick(key []byte, usable func(i int) bool) (int, error) {
	if len(key) == 0 || len(h.primary) < 2 {
		return h.pick(usable)
	}
	if i, ok := h.probe(key, usable); ok {
		return i, nil
	}
	return h.pick(usable)
}

// Owner implements Owner.
func (h *hashBalancer) Owner(key []byte, usable func(i int) bool) (int, bool) {
	if len(key) == 0 || len(h.primary) < 2 {
		return soleOwner(h.rrState, usable)
	}
	return h.probe(key, usable)
}

// probe is nginx's rehash loop: the peer key lands on, tried up to 20
// times with a new hash, or false (round robin then picks).
func (h *hashBalancer) probe(key []byte, usable func(i int) bool) (int, bool) {
	var (
		buf [20]byte
		sum uint32 // nginx's hp->hash, a uint32_t that may wrap
	)
	for k := 0; ; k++ {
		var crc uint32
		if k > 0 {
			crc = crcSmall(0, strconv.AppendUint(buf[:0], uint64(k), 10))
		}
		crc = crc32.Update(crc, crc32.IEEETable, key)
		sum += (crc >> 16) & 0x7fff
		if i := h.slots.peer(uint64(sum)); usable(i) {
			return i, true
		}
		if k+1 > maxTries {
			return -1, false
		}
	}
}

func crcSmall(crc uint32, p []byte) uint32 {
	crc = ^crc
	for _, b := range p {
		crc = crc32.IEEETable[byte(crc)^b] ^ crc>>8
	}
	return ^crc
}

// weightSlots deals slots 0..total-1 out to the primary peers by weight, in
// config order: the walk "while (w >= peer->weight) w -= peer->weight" that
// hash and ip_hash do, as a binary search.
type weightSlots struct {
	end   []int // end[k] = slots held by the peers before and at primary[k]
	index []int // primary peer indexes
}

func newWeightSlots(rr *rrState) weightSlots {
	ws := weightSlots{end: make([]int, len(rr.primary)), index: rr.primary}
	sum := 0
	for k, i := range rr.primary {
		sum += rr.peers[i].weight
		ws.end[k] = sum
	}
	return ws
}

// peer returns the peer holding slot h % total.
func (ws *weightSlots) peer(h uint64) int {
	w := int(h % uint64(ws.end[len(ws.end)-1]))
	lo, hi := 0, len(ws.end)-1
	for lo < hi { // first k with end[k] > w
		mid := int(uint(lo+hi) >> 1)
		if ws.end[mid] > w {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return ws.index[lo]
}
