package lookup

import (
	"net/netip"
	"slices"

	"github.com/batonproxy/baton/config"
)

// inaddrNone is INADDR_NONE, 255.255.255.255: the address nginx's geo looks
// up when its source is not an address.
const inaddrNone = 0xffffffff

// Geo is the lookup table of a "geo" block. nginx keeps a radix tree per
// family (CIDR mode) or per-/16 range lists (ranges mode); Geo flattens
// either into sorted intervals, searched in O(log n), with the same answers.
type Geo struct {
	ranges bool
	def    string // ranges mode: the default

	// CIDR mode: the address space cut into intervals, each starting at
	// start[i] and running to the next; ranges mode: v4 only, with ends,
	// and gaps that get def.
	v4 intervals4
	v6 intervals6
}

type intervals4 struct {
	start, end []uint32 // end is set in ranges mode only
	value      []string
}

type intervals6 struct {
	start []u128
	value []string
}

// NewGeo builds the table of cg, copying what it needs. In ranges mode
// cg.Entries must be in address order and disjoint, as config leaves them.
func NewGeo(cg *config.Geo) *Geo {
	g := &Geo{ranges: cg.Ranges, def: cg.Default}
	if cg.Ranges {
		for _, e := range cg.Entries {
			g.v4.start = append(g.v4.start, be32(e.Start))
			g.v4.end = append(g.v4.end, be32(e.End))
			g.v4.value = append(g.v4.value, e.Value)
		}
		return g
	}
	var p4, p6 []prefix
	for _, e := range cg.Entries {
		a := e.Prefix.Addr()
		if a.Is4() {
			p4 = append(p4, newPrefix(a, e.Prefix.Bits(), e.Value))
		} else {
			p6 = append(p6, newPrefix(a, e.Prefix.Bits(), e.Value))
		}
	}
	for _, s := range flatten(p4, 32) {
		g.v4.start = append(g.v4.start, uint32(s.start.lo))
		g.v4.value = append(g.v4.value, s.value)
	}
	for _, s := range flatten(p6, 128) {
		g.v6.start = append(g.v6.start, s.start)
		g.v6.value = append(g.v6.value, s.value)
	}
	return g
}

// Find returns the value for addr, the client's address for a geo block
// without a source. An IPv4-mapped IPv6 address is looked up as IPv4, as
// nginx does; an invalid addr is looked up as nginx looks up a source that
// is not an address.
func (g *Geo) Find(addr netip.Addr) string {
	switch {
	case addr.Is4() || addr.Is4In6():
		b := addr.As16()
		return g.find4(uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15]))
	case addr.Is6():
		if g.ranges {
			return g.def
		}
		b := addr.As16()
		return g.find6(u128FromBytes(b))
	}
	return g.find4(inaddrNone)
}

// FindValue returns the value for a source variable's value b, parsed as
// nginx's ngx_parse_addr parses it (ngx_inet_addr, then ngx_inet6_addr).
// What is not an address, and nil for a variable that was not found, is
// looked up as 255.255.255.255 (INADDR_NONE), as ngx_stream_geo does: in CIDR
// mode that gets the value of the most specific network covering
// 255.255.255.255 (0.0.0.0/0's if no other), in ranges mode the default.
func (g *Geo) FindValue(b []byte) string {
	if a, ok := inetAddr(b); ok {
		return g.find4(a)
	}
	a6, ok := inet6Addr(b)
	if !ok {
		return g.find4(inaddrNone)
	}
	return g.Find(netip.AddrFrom16(a6))
}

func (g *Geo) find4(a uint32) string {
	v := &g.v4
	// the last interval starting at or before a
	lo, hi := 0, len(v.start)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if v.start[m] <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := lo - 1
	if g.ranges {
		if i < 0 || a > v.end[i] {
			return g.def
		}
		return v.value[i]
	}
	if i < 0 {
		return ""
	}
	return v.value[i]
}

func (g *Geo) find6(a u128) string {
	v := &g.v6
	lo, hi := 0, len(v.start)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !a.less(v.start[m]) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return ""
	}
	return v.value[lo-1]
}

// u128 is an address as a 128-bit number; IPv4 addresses use lo only.
type u128 struct{ hi, lo uint64 }

func u128FromBytes(b [16]byte) u128 {
	var x u128
	for i := 0; i < 8; i++ {
		x.hi = x.hi<<8 | uint64(b[i])
		x.lo = x.lo<<8 | uint64(b[8+i])
	}
	return x
}

func (x u128) less(y u128) bool { return x.hi < y.hi || x.hi == y.hi && x.lo < y.lo }

func (x u128) add1() u128 {
	lo := x.lo + 1
	hi := x.hi
	if lo == 0 {
		hi++
	}
	return u128{hi, lo}
}

// hostMask is the mask of the low width-bits bits of a width-bit address.
func hostMask(width, bits int) u128 {
	n := width - bits // host bits
	switch {
	case n >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case n > 64:
		return u128{^uint64(0) >> (128 - n), ^uint64(0)}
	case n == 64:
		return u128{0, ^uint64(0)}
	case n > 0:
		return u128{0, ^uint64(0) >> (64 - n)}
	}
	return u128{}
}

// prefix is a network as the interval [first, last].
type prefix struct {
	first, last u128
	bits        int
	value       string
}

func newPrefix(a netip.Addr, bits int, value string) prefix {
	var first u128
	width := a.BitLen()
	if width == 32 {
		first = u128{0, uint64(be32(a))}
	} else {
		first = u128FromBytes(a.As16())
	}
	m := hostMask(width, bits)
	return prefix{first: first, last: u128{first.hi | m.hi, first.lo | m.lo}, bits: bits, value: value}
}

// span is an interval of the flattened table: from start to the next
// span's start, value.
type span struct {
	start u128
	value string
}

// flatten turns networks, which nest or are disjoint, into the intervals
// of the width-bit address space with the value of the most specific
// network covering each, as a radix tree lookup gives it. An address no
// network covers gets "" (nginx always has 0.0.0.0/0 and ::/0).
func flatten(ps []prefix, width int) []span {
	slices.SortFunc(ps, func(a, b prefix) int {
		if a.first != b.first {
			if a.first.less(b.first) {
				return -1
			}
			return 1
		}
		return a.bits - b.bits
	})
	max := hostMask(width, 0)
	var out []span
	emit := func(start u128, value string) {
		if n := len(out); n > 0 && out[n-1].start == start {
			out = out[:n-1] // a more specific network starts here
		}
		if n := len(out); n > 0 && out[n-1].value == value {
			return
		}
		out = append(out, span{start, value})
	}
	emit(u128{}, "")
	stack := []prefix{{last: max, bits: -1}} // the whole space, for what nothing covers
	for _, p := range ps {
		for stack[len(stack)-1].last.less(p.first) {
			t := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			emit(t.last.add1(), stack[len(stack)-1].value)
		}
		emit(p.first, p.value)
		stack = append(stack, p)
	}
	for len(stack) > 1 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if t.last != max {
			emit(t.last.add1(), stack[len(stack)-1].value)
		}
	}
	return out
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
