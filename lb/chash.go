package lb

import (
	"cmp"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strings"
)

// pointsPerWeight is how many ring points each unit of weight gives a peer.
const pointsPerWeight = 160

// consistentHash is "hash KEY consistent", nginx's ketama ring
// (ngx_stream_upstream_update_chash and get_chash_peer), compatible with
// Cache::Memcached::Fast.
//
// Each peer puts 160×weight points on the ring. The server text as written
// is split at the last ':' followed only by digits into HOST and PORT (the
// whole text is HOST if there is no such ':'; "unix:PATH" is HOST PATH), and
// point j is crc32(HOST, 0x00, PORT, le32(point j-1)) with point -1 = 0. So
// "localhost:19001" and "127.0.0.1:19001" are different points, and peers
// that share a server text (one name resolved to several addresses) share
// their points. Points are sorted and a hash already on the ring is dropped.
// A key goes to the first point at or above crc32(key), wrapping around; if
// no peer of that point's server is usable the next point is tried, and
// after 20 tries it is round robin. Peers of one server split its keys by
// smooth weighted round robin. Down peers keep their points.
//
// The ring does not depend on the order peers are listed: where two servers
// put a point on the same hash, the one whose text sorts first keeps it.
// (nginx keeps the one listed first there, as glibc's qsort is stable; with
// 160 points a server such a clash is rare, about one in 2^32/(n·160)² pairs
// of servers.)
//
// With a BalanceFactor, a point whose peers are all at their HAProxy bound
// (chash_server_is_eligible) is passed over without costing a try.
type consistentHash struct {
	*rrState
	hashes  []uint32 // the ring, ascending
	servers []int32  // servers[k] is the server owning hashes[k]
	members [][]int  // peers of each distinct server text, in config order

	// Bounded load; the scratch slices are used under rrState.mu.
	factor int
	state  State
	canon  []int // peer indexes ordered by name: the order for cumulative weight
	ok     []bool
	active []int
	cumW   []int
	served int // live connections to all peers
	totW   int // weight of the usable peers
}

func newConsistentHash(rr *rrState, peers []Peer, opts Options) *consistentHash {
	c := &consistentHash{rrState: rr, factor: opts.BalanceFactor, state: stateOrNone(opts.State)}
	byName := make(map[string]int32)
	var names []string
	type point struct {
		hash   uint32
		server int32
	}
	points := make([]point, 0, rr.total*pointsPerWeight)
	for i, p := range peers {
		s, ok := byName[p.Name]
		if !ok {
			s = int32(len(names))
			byName[p.Name] = s
			names = append(names, p.Name)
			c.members = append(c.members, nil)
		}
		c.members[s] = append(c.members[s], i)
		base := serverHash(p.Name)
		var prev [4]byte
		for range rr.peers[i].weight * pointsPerWeight {
			h := crc32.Update(base, crc32.IEEETable, prev[:])
			points = append(points, point{h, s})
			binary.LittleEndian.PutUint32(prev[:], h)
		}
	}
	slices.SortFunc(points, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return strings.Compare(names[a.server], names[b.server])
	})
	points = slices.CompactFunc(points, func(a, b point) bool { return a.hash == b.hash })
	c.hashes = make([]uint32, len(points))
	c.servers = make([]int32, len(points))
	for k, p := range points {
		c.hashes[k], c.servers[k] = p.hash, p.server
	}
	if c.factor > 0 {
		c.canon = make([]int, len(peers))
		for i := range c.canon {
			c.canon[i] = i
		}
		slices.SortStableFunc(c.canon, func(a, b int) int { return strings.Compare(peers[a].Name, peers[b].Name) })
		c.ok = make([]bool, len(peers))
		c.active = make([]int, len(peers))
		c.cumW = make([]int, len(peers))
	}
	return c
}

// serverHash returns crc32(HOST, 0x00, PORT) of a server text, the base every
// one of its points continues from.
func serverHash(server string) uint32 {
	host, port := splitServer(server)
	h := crc32.Update(0, crc32.IEEETable, []byte(host))
	h = crc32.Update(h, crc32.IEEETable, []byte{0})
	return crc32.Update(h, crc32.IEEETable, []byte(port))
}

// splitServer splits a server text as nginx's update_chash does.
func splitServer(s string) (host, port string) {
	if len(s) >= 5 && strings.EqualFold(s[:5], "unix:") {
		return s[5:], ""
	}
	for j := len(s) - 1; j >= 0; j-- {
		c := s[j]
		if c == ':' {
			return s[:j], s[j+1:]
		}
		if c < '0' || c > '9' {
			break
		}
	}
	return s, ""
}

// find returns the first point at or above h (len(hashes) if none: the
// caller wraps), as ngx_stream_upstream_find_chash_point.
func (c *consistentHash) find(h uint32) int {
	lo, hi := 0, len(c.hashes)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if c.hashes[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func (c *consistentHash) Pick(key []byte, usable func(i int) bool) (int, error) {
	if len(key) == 0 || len(c.primary) < 2 {
		return c.pick(usable)
	}
	start := c.find(crc32.ChecksumIEEE(key))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.factor > 0 {
		c.loadLocked(usable)
		if i, ok := c.walkLocked(start, usable, true); ok {
			return i, nil
		}
	}
	if i, ok := c.walkLocked(start, usable, false); ok {
		return i, nil
	}
	return c.pickLocked(usable)
}

// walkLocked goes round the ring from point start. It returns the peer and
// true, or false when 20 points had no usable peer (nginx's cue for round
// robin) or, bounded, when a whole turn found every usable peer full.
// Owner implements Owner: the first server along the ring from the key's
// point with a usable peer, and its first usable peer.
func (c *consistentHash) Owner(key []byte, usable func(i int) bool) (int, bool) {
	if len(key) == 0 {
		return -1, false
	}
	if len(c.primary) < 2 {
		return soleOwner(c.rrState, usable)
	}
	start := c.find(crc32.ChecksumIEEE(key))
	n := len(c.hashes)
	for k := range n {
		for _, i := range c.members[c.servers[(start+k)%n]] {
			if usable(i) {
				return i, true
			}
		}
	}
	return -1, false
}

func (c *consistentHash) walkLocked(start int, usable func(i int) bool, bounded bool) (int, bool) {
	n := len(c.hashes)
	tries := 0
	for k := range n {
		// Peers sharing this point's server name take turns by nginx's
		// smooth round robin, as everywhere else.
		seen := false
		best := c.smoothLocked(c.members[c.servers[(start+k)%n]], func(i int) bool {
			if !bounded {
				return usable(i)
			}
			if !c.ok[i] {
				return false
			}
			seen = true
			return c.eligibleLocked(i)
		})
		if best >= 0 {
			return best, true
		}
		if bounded && seen {
			continue // full, not unusable: no try spent
		}
		if tries++; tries > maxTries {
			return -1, false
		}
	}
	return -1, false
}

// loadLocked reads, for bounded load, each peer's usability and live
// connections once, and the weight of the usable peers before it in name
// order (HAProxy's cumulative_weight, which spreads the rounding remainder).
func (c *consistentHash) loadLocked(usable func(i int) bool) {
	c.served, c.totW = 0, 0
	for _, i := range c.canon {
		c.active[i] = c.state.Active(i)
		c.served += c.active[i]
		c.ok[i] = usable(i)
		if c.ok[i] {
			c.cumW[i] = c.totW
			c.totW += c.peers[i].weight
		}
	}
}

// eligibleLocked is HAProxy's chash_server_is_eligible: with S live
// connections in all, the upstream has ceil((S+1)·factor/100) slots, dealt
// out in proportion to weight over the usable peers (the remainder by
// cumulative weight), and at least one each; peer i may take a new flow if
// it holds fewer connections than its slots.
func (c *consistentHash) eligibleLocked(i int) bool {
	totW := c.totW
	if totW == 0 {
		return false
	}
	totSlots := ((c.served+1)*c.factor + 99) / 100
	w, cum := c.peers[i].weight, c.cumW[i]
	rem := totSlots % totW
	slots := w*(totSlots/totW) + (cum+w)*rem/totW - cum*rem/totW
	if slots == 0 {
		slots = 1
	}
	return c.active[i] < slots
}
