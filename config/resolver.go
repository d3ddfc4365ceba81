package config

import (
	"net/netip"
	"strings"
	"time"
)

// defaultResolverTimeout is nginx's resolver_timeout when none is set.
const defaultResolverTimeout = 30 * time.Second

// resolverConf is what one level (stream, server, upstream) says of the
// resolver: its own "resolver" and "resolver_timeout", if any.
type resolverConf struct {
	r          *Resolver // nil: none at this level
	timeout    time.Duration
	timeoutSet bool
}

// resolverSetting handles "resolver" and "resolver_timeout" at a level and
// reports whether d was one of them.
func (l *loader) resolverSetting(d *directive, rc *resolverConf) bool {
	switch d.name {
	case "resolver":
		if !l.check(d, false, atLeast(1)) {
			return true
		}
		if rc.r != nil {
			l.errorf(d, "\"resolver\" directive is duplicate")
			return true
		}
		rc.r = l.resolver(d)
	case "resolver_timeout":
		if !l.check(d, false, take(1)) {
			return true
		}
		if rc.timeoutSet {
			l.errorf(d, "\"resolver_timeout\" directive is duplicate")
			return true
		}
		t, err := ParseDuration(d.args[0])
		if err != nil {
			l.errorf(d, "\"resolver_timeout\" directive invalid value")
			return true
		}
		rc.timeout, rc.timeoutSet = t, true
	default:
		return false
	}
	return true
}

// resolver reads "resolver ADDRESS ... [valid=TIME] [ipv4=on|off]
// [ipv6=on|off]" as nginx's ngx_resolver_create: an address is host[:port]
// or [v6][:port] (port 53 by default), a host name standing for every
// address it resolves to now. It returns nil after reporting an error.
func (l *loader) resolver(d *directive) *Resolver {
	r := &Resolver{Pos: d.pos, IPv4: true, IPv6: true}
	for _, a := range d.args {
		name, val, _ := strings.Cut(a, "=")
		switch {
		case strings.HasPrefix(a, "valid="):
			t, err := ParseSeconds(val)
			if err != nil {
				l.errorf(d, "invalid parameter: %s", a)
				return nil
			}
			r.Valid = t
			continue
		case strings.HasPrefix(a, "ipv4=") || strings.HasPrefix(a, "ipv6="):
			var on bool
			switch val {
			case "on":
				on = true
			case "off":
			default:
				l.errorf(d, "invalid parameter: %s", a)
				return nil
			}
			if name == "ipv4" {
				r.IPv4 = on
			} else {
				r.IPv6 = on
			}
			continue
		case strings.HasPrefix(a, "status_zone="):
			continue // nginx Plus's resolver statistics: baton's status shows them anyway
		}
		u, msg := parseURL(a, false)
		if msg != "" {
			l.errorf(d, "%s in resolver \"%s\"", msg, a)
			return nil
		}
		port := u.port
		if u.noPort {
			port = 53
		}
		addrs := []netip.Addr{u.addr}
		if !u.addr.IsValid() {
			if addrs = l.lookupHost(u.host); len(addrs) == 0 {
				l.errorf(d, "host not found in resolver \"%s\"", a)
				return nil
			}
		}
		for _, ad := range addrs {
			r.Addrs = append(r.Addrs, netip.AddrPortFrom(ad, port))
		}
	}
	if !r.IPv4 && !r.IPv6 {
		l.errorf(d, "\"ipv4\" and \"ipv6\" cannot both be \"off\"")
		return nil
	}
	if len(r.Addrs) == 0 {
		l.errorf(d, "no name servers defined")
		return nil
	}
	return r
}

// mergeResolver is the resolver that applies at a level: its own, else
// the parent's, with the level's resolver_timeout, else the parent's, else
// 30s. It returns a copy, so that levels sharing a resolver may differ in
// timeout.
func mergeResolver(own, parent *resolverConf) *Resolver {
	r := own.r
	if r == nil {
		r = parent.r
	}
	if r == nil {
		return nil
	}
	c := *r
	switch {
	case own.timeoutSet:
		c.Timeout = own.timeout
	case parent.timeoutSet:
		c.Timeout = parent.timeout
	default:
		c.Timeout = defaultResolverTimeout
	}
	return &c
}
