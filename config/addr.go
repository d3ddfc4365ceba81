package config

import (
	"net/netip"
	"strings"
)

// url is an address as nginx's ngx_parse_url splits it.
type url struct {
	host     string
	port     uint16
	noPort   bool
	wildcard bool       // "*:80" or a bare port in "listen"
	addr     netip.Addr // valid when host is an IP literal (or a wildcard)
	lastPort uint16     // "listen ADDR:PORT-LAST" (nginx 1.27.3): the range's end; 0: no range
}

// parseURL splits s ("host:port", "[v6]:port", and for listen also "port"
// and "*:port") as nginx's ngx_parse_inet_url and ngx_parse_inet6_url do.
// On failure it returns nginx's u->err text ("invalid port", "no host"...).
func parseURL(s string, listen bool) (url, string) {
	var u url
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return u, "invalid host"
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return u, "invalid IPv6 address"
		}
		u.host, u.addr = s[1:end], a
		rest := s[end+1:]
		switch {
		case rest == "":
			u.noPort = true
		case rest[0] == ':':
			p, last, msg := parsePorts(rest[1:], listen)
			if msg != "" {
				return u, msg
			}
			u.port, u.lastPort = p, last
		default:
			return u, "invalid host"
		}
		return u, ""
	}
	if strings.ContainsAny(s, "/?") {
		return u, "invalid host"
	}
	host := s
	if i := strings.IndexByte(s, ':'); i >= 0 {
		p, last, msg := parsePorts(s[i+1:], listen)
		if msg != "" {
			return u, msg
		}
		u.port, u.lastPort, host = p, last, s[:i]
	} else {
		if listen {
			if p, last, msg := parsePorts(s, true); msg == "" {
				u.port, u.lastPort, u.wildcard = p, last, true
				u.addr = netip.IPv4Unspecified()
				return u, ""
			} else if _, isNum := atoi(strings.SplitN(s, "-", 2)[0]); isNum {
				return u, msg
			}
		}
		u.noPort = true
	}
	if host == "" {
		return u, "no host"
	}
	u.host = host
	if listen && host == "*" {
		u.wildcard, u.addr = true, netip.IPv4Unspecified()
		return u, ""
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		u.addr = a
	}
	return u, ""
}

// parsePorts reads a port, or for listen a range "PORT-LAST", as nginx's
// ngx_parse_inet_url: "invalid port" or "invalid port range".
func parsePorts(s string, listen bool) (port, last uint16, msg string) {
	if listen {
		if first, rest, ok := strings.Cut(s, "-"); ok {
			l, ok := parsePort(rest)
			if !ok {
				return 0, 0, "invalid port"
			}
			p, ok := parsePort(first)
			if !ok {
				return 0, 0, "invalid port"
			}
			if p > l {
				return 0, 0, "invalid port range"
			}
			return p, l, ""
		}
	}
	p, ok := parsePort(s)
	if !ok {
		return 0, 0, "invalid port"
	}
	return p, 0, ""
}

func parsePort(s string) (uint16, bool) {
	n, ok := atoi(s)
	if !ok || n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// ParseAddrPort parses an IP address with an optional port as nginx's
// ngx_parse_addr_port, for proxy_bind: "192.0.2.1", "192.0.2.1:8000",
// "2001:db8::1", "[2001:db8::1]" or "[2001:db8::1]:8000"; the port is 0
// when there is none. An IPv4 address is read as ngx_inet_addr reads it
// (four dot-separated decimal parts, leading zeros allowed), and an IPv4-
// mapped IPv6 address stays IPv6, as nginx's sockaddr. A host name is not
// an address: ok is false.
func ParseAddrPort(s string) (ap netip.AddrPort, ok bool) {
	if a, ok := parseAddr(s); ok {
		return netip.AddrPortFrom(a, 0), true
	}
	var host, port string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		switch {
		case end == len(s)-1:
			a, ok := parseAddr(s[1:end])
			return netip.AddrPortFrom(a, 0), ok
		case end < 0 || s[end+1] != ':':
			return ap, false
		}
		host, port = s[1:end], s[end+2:]
	} else {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return ap, false
		}
		host, port = s[:i], s[i+1:]
	}
	p, ok := parsePort(port)
	if !ok {
		return ap, false
	}
	a, ok := parseAddr(host)
	return netip.AddrPortFrom(a, p), ok
}

// parseAddr is nginx's ngx_parse_addr: ngx_inet_addr's IPv4, else IPv6
// without a zone.
func parseAddr(s string) (netip.Addr, bool) {
	if a, ok := inetAddr(s); ok {
		return a, true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// URL is an address as nginx's ngx_parse_url (without resolving) splits a
// proxy_pass or pass value: Host, and Port unless NoPort; Addr is valid
// when Host is an IP literal.
type URL struct {
	Host   string
	Port   uint16
	NoPort bool
	Addr   netip.Addr
}

// ParseURL splits s as nginx splits a proxy_pass value evaluated at run
// time. msg is nginx's u->err text ("invalid port", "no host"...) or "".
func ParseURL(s string) (URL, string) {
	u, msg := parseURL(s, false)
	return URL{Host: u.host, Port: u.port, NoPort: u.noPort, Addr: u.addr}, msg
}
