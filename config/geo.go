package config

import (
	"cmp"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Geo is a "geo [$SOURCE] $VAR { ... }" block (ngx_stream_geo_module): VAR's
// value is the Value of the entry that covers an address. Entries hold what
// nginx's tree holds once the block is read, every "delete" and duplicate
// applied, so they do not overlap in ranges mode, and in CIDR mode the most
// specific prefix covering an address wins. Values are plain text: nginx
// does not expand variables in them.
type Geo struct {
	Pos Pos

	// Source is the variable whose value is parsed as the address, without
	// the "$"; "" (no source written) means the client's own address.
	Source string

	// Var is the variable the block defines, without the "$".
	Var string

	// Ranges is "ranges": entries are IPv4 ranges "A-B". An IPv6 address
	// (not IPv4-mapped) then always gets Default.
	Ranges bool

	// Volatile is "volatile": the value is not cached for the session.
	Volatile bool

	// Default is the "default" value of a ranges block ("" if none). In
	// CIDR mode nginx stores "default" as the networks 0.0.0.0/0 and ::/0,
	// and so do Entries; Default is then "".
	Default string

	// Entries, in address order. CIDR mode: always 0.0.0.0/0 and ::/0 among
	// them (with "" if not set). Ranges mode: nginx's pieces, never crossing
	// a /16 boundary (a range written across one is split at it).
	Entries []GeoEntry
}

// GeoEntry is one network (CIDR mode) or range (ranges mode) of a geo block.
type GeoEntry struct {
	Pos Pos // of the line that set Value

	Prefix netip.Prefix // CIDR mode; an IPv4-mapped IPv6 prefix stays IPv6, as nginx

	Start, End netip.Addr // ranges mode: IPv4, Start <= End

	Value string
}

// geoState is what one geo block collects while it is read.
type geoState struct {
	g          *Geo
	tree       bool // a CIDR-mode line was read: "ranges" is too late (nginx's ctx->tree)
	defaultSet bool // ranges mode "default"
	cidr       map[netip.Prefix]geoValue
	ranges     map[uint16][]geoRange // nginx's high.low: the ranges of each /16, in order
}

type geoValue struct {
	pos   Pos
	value string
}

// geoRange is a piece of a range within one /16: the low 16 bits.
type geoRange struct {
	start, end uint32
	geoValue
}

// geoBlock reads "geo [$SOURCE] $VAR { ... }" as ngx_stream_geo_block.
func (l *loader) geoBlock(d *directive) {
	if !l.check(d, true, take(1, 2)) {
		return
	}
	g := &Geo{Pos: d.pos}
	name := d.args[0]
	if len(d.args) == 2 {
		var ok bool
		if g.Source, ok = l.newVarName(d, name); !ok {
			return
		}
		name = d.args[1]
	}
	var ok bool
	if g.Var, ok = l.newVarName(d, name); !ok {
		return
	}
	gs := &geoState{g: g, cidr: map[netip.Prefix]geoValue{}, ranges: map[uint16][]geoRange{}}
	nerrs := len(l.errs)
	var entry func(e *directive)
	entry = func(e *directive) { l.geoEntry(e, gs, entry) }
	l.each(d.block, ctxEntries, entry)
	if len(l.errs) > nerrs {
		return
	}
	if g.Ranges {
		gs.finishRanges()
	} else {
		gs.finishCIDR(d.pos)
	}
	l.st.s.Geos = append(l.st.s.Geos, g)
}

// geoEntry reads one line of a geo block as ngx_stream_geo.
func (l *loader) geoEntry(e *directive, gs *geoState, self func(*directive)) {
	g := gs.g
	if e.hasBlock {
		l.errAt(e.pos, "geo", "unexpected \"{\"")
		return
	}
	args := append([]string{e.name}, e.args...)
	if len(args) == 1 {
		switch args[0] {
		case "ranges":
			if gs.tree {
				l.errAt(e.pos, "geo", "the \"ranges\" directive must be the first directive inside \"geo\" block")
				return
			}
			g.Ranges = true
			return
		case "volatile":
			g.Volatile = true
			return
		}
	}
	if len(args) != 2 {
		l.errAt(e.pos, "geo", "invalid number of the geo parameters")
		return
	}
	if args[0] == "include" {
		l.geoBinaryBase(e, gs)
		l.include(e, ctxEntries, self)
		return
	}
	if g.Ranges {
		l.geoRangeEntry(e, gs, args)
	} else {
		l.geoCIDREntry(e, gs, args)
	}
}

// geoBinaryBase warns about nginx's binary base: in ranges mode nginx reads
// "FILE.bin" instead of an included FILE when the .bin is newer (and writes
// one for an include of over 100,000 ranges). baton neither reads nor
// writes .bin files: it always reads FILE itself, which gives the same
// ranges unless the .bin was made from other text.
func (l *loader) geoBinaryBase(e *directive, gs *geoState) {
	name := e.args[0]
	if !gs.g.Ranges || strings.ContainsAny(name, "*?[") || l.ld.ReadFile != nil {
		return
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(l.prefix, name)
	}
	if _, err := os.Stat(name + ".bin"); err == nil {
		l.warnf(e.pos, "binary geo range base \"%s.bin\" is not read: baton reads \"%s\" instead", name, name)
	}
}

// geoCIDREntry reads a CIDR-mode line as ngx_stream_geo_cidr.
func (l *loader) geoCIDREntry(e *directive, gs *geoState, args []string) {
	gs.tree = true
	if args[0] == "default" {
		gs.cidrAdd(l, e, netip.PrefixFrom(netip.IPv4Unspecified(), 0), args[1], args[0])
		gs.cidrAdd(l, e, netip.PrefixFrom(netip.IPv6Unspecified(), 0), args[1], args[0])
		return
	}
	net, del := args[0], false
	if net == "delete" {
		net, del = args[1], true
	}
	p, low, ok := geoCIDR(net)
	if !ok {
		l.errAt(e.pos, "geo", "invalid network \"%s\"", net)
		return
	}
	if low {
		l.warnf(e.pos, "low address bits of %s are meaningless", net)
	}
	if del {
		// nginx's radix tree on amd64 preallocates the nodes of the first 6
		// bits, and deleting such a node that holds no value and has no
		// children passes silently; baton warns for every network without a
		// value.
		if _, ok := gs.cidr[p]; !ok {
			l.warnf(e.pos, "no network \"%s\" to delete", net)
			return
		}
		delete(gs.cidr, p)
		return
	}
	gs.cidrAdd(l, e, p, args[1], net)
}

// cidrAdd is ngx_stream_geo_cidr_add: a network set twice keeps the later
// value, with nginx's warning, whose old value is what the tree gives the
// network's address (a longer prefix's, if one covers it).
func (gs *geoState) cidrAdd(l *loader, e *directive, p netip.Prefix, value, net string) {
	if _, busy := gs.cidr[p]; busy {
		l.warnf(e.pos, "duplicate network \"%s\", value: \"%s\", old value: \"%s\"", net, value, gs.cidrFind(p.Addr()))
	}
	gs.cidr[p] = geoValue{e.pos, value}
}

// cidrFind is the tree's longest-prefix match for a, as ngx_radix*tree_find.
func (gs *geoState) cidrFind(a netip.Addr) string {
	for bits := a.BitLen(); bits >= 0; bits-- {
		if v, ok := gs.cidr[netip.PrefixFrom(a, bits).Masked()]; ok {
			return v.value
		}
	}
	return ""
}

// geoCIDR is ngx_stream_geo_cidr_value: ngx_ptocidr, but for
// "255.255.255.255" written alone. ngx_inet_addr returns INADDR_NONE for
// that address, so it is invalid in any other spelling ("255.255.255.255/32").
func geoCIDR(s string) (p netip.Prefix, low, ok bool) {
	bcast := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if s == "255.255.255.255" {
		return netip.PrefixFrom(bcast, 32), false, true
	}
	addr, _, _ := strings.Cut(s, "/")
	if a, ok := inetAddr(addr); ok && a == bcast {
		return netip.Prefix{}, false, false
	}
	return parseCIDR(s)
}

// finishCIDR gives 0.0.0.0/0 and ::/0 the empty value where no line did,
// as nginx after reading the block, and lists the networks.
func (gs *geoState) finishCIDR(pos Pos) {
	for _, p := range []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)} {
		if _, ok := gs.cidr[p]; !ok {
			gs.cidr[p] = geoValue{pos: pos}
		}
	}
	for p, v := range gs.cidr {
		gs.g.Entries = append(gs.g.Entries, GeoEntry{Pos: v.pos, Prefix: p, Value: v.value})
	}
	slices.SortFunc(gs.g.Entries, func(a, b GeoEntry) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
}

// geoRangeEntry reads a ranges-mode line as ngx_stream_geo_range.
func (l *loader) geoRangeEntry(e *directive, gs *geoState, args []string) {
	if args[0] == "default" {
		if gs.defaultSet {
			l.warnf(e.pos, "duplicate default geo range value: \"%s\", old value: \"%s\"", args[1], gs.g.Default)
		}
		gs.g.Default, gs.defaultSet = args[1], true
		return
	}
	net, del := args[0], false
	if net == "delete" {
		net, del = args[1], true
	}
	start, end, ok := parseRange(net)
	if !ok {
		l.errAt(e.pos, "geo", "invalid range \"%s\"", net)
		return
	}
	if del {
		if gs.deleteRange(start, end) {
			l.warnf(e.pos, "no address range \"%s\" to delete", net)
		}
		return
	}
	gs.addRange(l, e, start, end, geoValue{e.pos, args[1]}, net)
}

// parseRange reads "A-B", two IPv4 addresses as ngx_inet_addr reads them.
// 255.255.255.255 is ngx_inet_addr's INADDR_NONE, so it cannot be an end.
func parseRange(s string) (start, end uint32, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	start, ok1 := inetAddr32(a)
	end, ok2 := inetAddr32(b)
	if !ok1 || !ok2 || start > end {
		return 0, 0, false
	}
	return start, end, true
}

func inetAddr32(s string) (uint32, bool) {
	a, ok := inetAddr(s)
	if !ok {
		return 0, false
	}
	b := a.As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return n, n != 0xffffffff
}

// addRange is ngx_stream_geo_add_range: the range is cut at each /16, and
// each piece is put in its /16's ordered list. A piece equal to one there
// replaces its value (with a warning); a piece inside one, or sharing its
// start or end, splits it; any other overlap is an error. nginx warns once
// per /16 piece replaced, up to 65,536 times for one line; baton warns once
// per line, with the first piece's old value.
func (gs *geoState) addRange(l *loader, e *directive, start, end uint32, v geoValue, net string) {
	warned := false
	for n := start; n <= end; n = (n + 0x10000) & 0xffff0000 {
		h := uint16(n >> 16)
		s, last := uint32(0), uint32(0xffff)
		if n == start {
			s = n & 0xffff
		}
		if n|0xffff > end {
			last = end & 0xffff
		}
		a := gs.ranges[h]
		added := false
		for i := len(a) - 1; i >= 0 && !added; i-- {
			r := a[i]
			switch {
			case last < r.start:
				continue
			case s > r.end: // after a[i]
				a = slices.Insert(a, i+1, geoRange{s, last, v})
			case s == r.start && last == r.end:
				if !warned {
					l.warnf(e.pos, "duplicate range \"%s\", value: \"%s\", old value: \"%s\"", net, v.value, r.value)
					warned = true
				}
				a[i].geoValue = v
			case s > r.start && last < r.end: // inside a[i]: split it
				a = slices.Insert(a, i+1, geoRange{s, last, v}, geoRange{last + 1, r.end, r.geoValue})
				a[i].end = s - 1
			case s == r.start && last < r.end: // a[i]'s start
				a = slices.Insert(a, i, geoRange{s, last, v})
				a[i+1].start = last + 1
			case s > r.start && last == r.end: // a[i]'s end
				a = slices.Insert(a, i+1, geoRange{s, last, v})
				a[i].end = s - 1
			default:
				l.errAt(e.pos, "geo", "range \"%s\" overlaps \"%d.%d.%d.%d-%d.%d.%d.%d\"", net,
					h>>8, h&0xff, r.start>>8, r.start&0xff, h>>8, h&0xff, r.end>>8, r.end&0xff)
				gs.ranges[h] = a
				return
			}
			added = true
		}
		if !added { // before every range of this /16
			a = slices.Insert(a, 0, geoRange{s, last, v})
		}
		gs.ranges[h] = a
		if h == 0xffff {
			break
		}
	}
}

// deleteRange is ngx_stream_geo_delete_range: it removes the pieces that
// are exactly the range's, and reports whether some piece was missing.
func (gs *geoState) deleteRange(start, end uint32) (warn bool) {
	for n := start; n <= end; n = (n + 0x10000) & 0xffff0000 {
		h := uint16(n >> 16)
		s, last := uint32(0), uint32(0xffff)
		if n == start {
			s = n & 0xffff
		}
		if n|0xffff > end {
			last = end & 0xffff
		}
		a := gs.ranges[h]
		if len(a) == 0 {
			warn = true
		}
		for i, r := range a {
			if r.start == s && r.end == last {
				gs.ranges[h] = slices.Delete(a, i, i+1)
				break
			}
			if i == len(a)-1 {
				warn = true
			}
		}
		if h == 0xffff {
			break
		}
	}
	return warn
}

// finishRanges lists the pieces in address order.
func (gs *geoState) finishRanges() {
	highs := make([]int, 0, len(gs.ranges))
	for h := range gs.ranges {
		highs = append(highs, int(h))
	}
	slices.Sort(highs)
	for _, h := range highs {
		for _, r := range gs.ranges[uint16(h)] {
			gs.g.Entries = append(gs.g.Entries, GeoEntry{Pos: r.pos, Value: r.value,
				Start: addr4(uint32(h)<<16 | r.start), End: addr4(uint32(h)<<16 | r.end)})
		}
	}
}

func addr4(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
