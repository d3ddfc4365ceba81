package config

import (
	"net/netip"
	"testing"
)

// proxy_bind, proxy_socket_keepalive and tcp_nodelay: nginx's parsing,
// defaults and merging (a server inherits the stream's unless it sets its
// own, "proxy_bind off" included).
func TestUpstreamSocketSettings(t *testing.T) {
	c := mustParse(t, `stream {
proxy_bind 127.0.0.2;
proxy_socket_keepalive on;
tcp_nodelay off;
server { listen 1; proxy_pass 10.0.0.1:1; }
server { listen 2; proxy_pass 10.0.0.1:1; proxy_bind off; proxy_socket_keepalive OFF; tcp_nodelay On; }
server { listen 3; proxy_pass 10.0.0.1:1; proxy_bind $remote_addr transparent; }
server { listen 4; proxy_pass 10.0.0.1:1; proxy_bind [::1]:8000; }
}`)
	type got struct {
		bind        string
		vars        bool
		addr        netip.AddrPort
		transparent bool
		keepalive   bool
		noDelayOff  bool
	}
	wants := []got{
		{"127.0.0.2", false, netip.MustParseAddrPort("127.0.0.2:0"), false, true, true},
		{"", false, netip.AddrPort{}, false, false, false},
		{"$remote_addr", true, netip.AddrPort{}, true, true, true},
		{"[::1]:8000", false, netip.MustParseAddrPort("[::1]:8000"), false, true, true},
	}
	for i, w := range wants {
		s := c.Stream.Servers[i]
		g := got{s.ProxyBind, s.ProxyBindVars, s.ProxyBindAddr, s.ProxyBindTransparent, s.ProxySocketKeepalive, s.TCPNoDelayOff}
		if g != w {
			t.Errorf("server %d: got %+v want %+v", i, g, w)
		}
	}
	if s := c.Stream.Servers[2]; s.ProxyBindPos.Line != 7 {
		t.Errorf("proxy_bind position %v; want line 7 (the server's own)", s.ProxyBindPos)
	}
	d := mustParse(t, "stream { "+okServer+" }").Stream.Servers[0]
	if d.ProxyBind != "" || d.ProxyBindAddr.IsValid() || d.ProxySocketKeepalive || d.TCPNoDelayOff {
		t.Errorf("defaults %+v", d)
	}
	runErrCases(t, []errCase{
		{"bind host name", srv("proxy_bind localhost;"), `invalid address "localhost" in a.conf:5`},
		{"bind bad port", srv("proxy_bind 127.0.0.1:0;"), `invalid address "127.0.0.1:0" in a.conf:5`},
		{"bind param", srv("proxy_bind 127.0.0.1 opaque;"), `invalid parameter "opaque" in a.conf:5`},
		{"bind off with param", srv("proxy_bind off transparent;"), `invalid address "off" in a.conf:5`},
		{"bind OFF is an address", srv("proxy_bind OFF;"), `invalid address "OFF" in a.conf:5`},
		{"bind duplicate", srv("proxy_bind off;\nproxy_bind 127.0.0.1;"), `"proxy_bind" directive is duplicate in a.conf:6`},
		{"bind args", srv("proxy_bind;"), `invalid number of arguments in "proxy_bind" directive in a.conf:5`},
		{"bind three args", srv("proxy_bind 127.0.0.1 transparent x;"), `invalid number of arguments in "proxy_bind" directive in a.conf:5`},
		{"bind bad variable", srv("proxy_bind $;"), `invalid variable name in a.conf:5`},
		{"bind in upstream", "stream { upstream u { server 1.1.1.1:1; proxy_bind 127.0.0.1; } }", `"proxy_bind" directive is not allowed here in a.conf:1`},
		{"keepalive value", srv("proxy_socket_keepalive yes;"), `invalid value "yes" in "proxy_socket_keepalive" directive, it must be "on" or "off" in a.conf:5`},
		{"keepalive duplicate", "stream {\nproxy_socket_keepalive on;\nproxy_socket_keepalive on;\n}", `"proxy_socket_keepalive" directive is duplicate in a.conf:3`},
		{"nodelay value", srv("tcp_nodelay 1;"), `invalid value "1" in "tcp_nodelay" directive, it must be "on" or "off" in a.conf:5`},
		{"nodelay args", srv("tcp_nodelay on off;"), `invalid number of arguments in "tcp_nodelay" directive in a.conf:5`},
		{"nodelay in main", "tcp_nodelay on;", `"tcp_nodelay" directive is not allowed here in a.conf:1`},
	})
}

func TestParseAddrPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" when not an address
	}{
		{"127.0.0.2", "127.0.0.2:0"},
		{"127.0.0.2:8000", "127.0.0.2:8000"},
		{"127.000.0.02", "127.0.0.2:0"}, // ngx_inet_addr: leading zeros are decimal
		{"10.1.2.", "10.1.2.0:0"},       // and an empty part is 0
		{"::1", "[::1]:0"},
		{"[::1]", "[::1]:0"},
		{"[::1]:8000", "[::1]:8000"},
		{"::ffff:127.0.0.1", "[::ffff:127.0.0.1]:0"}, // stays IPv6, as nginx's sockaddr
		{"[127.0.0.1]:80", "127.0.0.1:80"},
		{"", ""},
		{"localhost", ""},
		{"localhost:80", ""},
		{"127.0.0.1:", ""},
		{"127.0.0.1:0", ""},
		{"127.0.0.1:65536", ""},
		{"127.0.0.1:+80", ""},
		{"1.2.3.256", ""},
		{"1.2.3.4.5", ""},
		{"[::1]80", ""},
		{"[::1", ""},
		{"fe80::1%eth0", ""},
	} {
		ap, ok := ParseAddrPort(tc.in)
		got := ""
		if ok {
			got = ap.String()
		}
		if got != tc.want {
			t.Errorf("ParseAddrPort(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}
