package config

import (
	"net/netip"
	"strings"
)

// accessRule reads "allow|deny ADDRESS|CIDR|all" as ngx_stream_access_rule.
// Rules keep their order; the warning for host bits is nginx's.
func (l *loader) accessRule(d *directive, pc *proxyConf) {
	if !l.check(d, false, take(1)) {
		return
	}
	v := d.args[0]
	r := &AccessRule{Pos: d.pos, Allow: d.name == "allow"}
	switch v {
	case "all":
		r.All = true
	case "unix:":
		r.Unix = true
	default:
		p, ok := l.cidr(d, v)
		if !ok {
			return
		}
		r.Prefix = p
	}
	pc.access = append(pc.access, r)
}

// realIPFrom reads "set_real_ip_from ADDRESS|CIDR" as ngx_stream_realip_from.
func (l *loader) realIPFrom(d *directive, pc *proxyConf) {
	if !l.check(d, false, take(1)) {
		return
	}
	v := d.args[0]
	if v == "unix:" {
		pc.realIPUnix = true
		return
	}
	if _, _, ok := parseCIDR(v); ok || strings.ContainsAny(v, "/:") {
		if p, ok := l.cidr(d, v); ok {
			pc.realIP = append(pc.realIP, p)
		}
		return
	}
	// A host name: every address it resolves to, at load, as nginx's
	// ngx_inet_resolve_host.
	addrs := l.lookupHost(v)
	if len(addrs) == 0 {
		l.errorf(d, "host not found in set_real_ip_from \"%s\"", v)
		return
	}
	for _, a := range addrs {
		pc.realIP = append(pc.realIP, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
}

// cidr parses v with parseCIDR, reporting nginx's error or warning for d.
func (l *loader) cidr(d *directive, v string) (netip.Prefix, bool) {
	p, low, ok := parseCIDR(v)
	if !ok {
		l.errorf(d, "invalid parameter \"%s\"", v)
		return netip.Prefix{}, false
	}
	if low {
		l.warnf(d.pos, "low address bits of %s are meaningless", v)
	}
	return p, true
}

// parseCIDR is nginx's ngx_ptocidr: "ADDR" (a /32 or /128) or "ADDR/BITS",
// ADDR an IPv4 address as ngx_inet_addr reads it or an IPv6 address. The
// prefix is returned masked; low reports that ADDR had bits set beyond
// BITS (nginx's NGX_DONE, which it warns about and masks).
func parseCIDR(s string) (p netip.Prefix, low, ok bool) {
	addrText, maskText, hasMask := strings.Cut(s, "/")
	a, ok := inetAddr(addrText)
	if !ok {
		var err error
		if a, err = netip.ParseAddr(addrText); err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Prefix{}, false, false
		}
	}
	bits := a.BitLen()
	if hasMask {
		n, ok := atoi(maskText)
		if !ok || n > int64(bits) {
			return netip.Prefix{}, false, false
		}
		bits = int(n)
	}
	p = netip.PrefixFrom(a, bits).Masked()
	return p, p.Addr() != a, true
}

// inetAddr is nginx's ngx_inet_addr: four dot-separated decimal octets,
// leniently (leading zeros are decimal, an empty octet is 0).
func inetAddr(s string) (netip.Addr, bool) {
	var b [4]byte
	octet, n := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if octet = octet*10 + int(c-'0'); octet > 255 {
				return netip.Addr{}, false
			}
		case c == '.' && n < 3:
			b[n] = byte(octet)
			octet = 0
			n++
		default:
			return netip.Addr{}, false
		}
	}
	if n != 3 {
		return netip.Addr{}, false
	}
	b[3] = byte(octet)
	return netip.AddrFrom4(b), true
}
