package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseErr returns the whole ErrorList text for src, or "" when it loads.
func parseErr(t *testing.T, src string) string {
	t.Helper()
	c, err := testLoader().Parse("a.conf", []byte(src))
	if err == nil {
		if c == nil {
			t.Fatal("nil config and nil error")
		}
		return ""
	}
	if c != nil {
		t.Fatal("config returned with an error")
	}
	return err.Error()
}

type errCase struct {
	name string
	src  string
	want string // the whole ErrorList text
}

func runErrCases(t *testing.T, tests []errCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseErr(t, tt.src); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// srv wraps server-level directives in a valid stream server.
func srv(body string) string {
	return "stream {\nserver {\nlisten 9;\nproxy_pass 10.0.0.1:9;\n" + body + "\n}\n}\n"
}

func TestListenUDP(t *testing.T) {
	c := mustParse(t, "stream {\nserver { listen 53 udp reuseport; listen 53; listen [::1]:53 udp; proxy_pass 10.0.0.1:53; }\nserver { listen 127.0.0.1:53; proxy_pass 10.0.0.1:53; } }")
	ls := c.Stream.Servers[0].Listen
	if len(ls) != 3 || !ls[0].UDP || !ls[0].ReusePort || ls[1].UDP || !ls[2].UDP ||
		ls[0].Addr != netip.MustParseAddrPort("0.0.0.0:53") || ls[0].Backlog != 511 || ls[0].ProxyProtocol {
		t.Errorf("listens %+v %+v %+v", ls[0], ls[1], ls[2])
	}
	runErrCases(t, []errCase{
		{"two udp", "stream {\nserver { listen 53 udp; proxy_pass 1.1.1.1:1; }\nserver { listen 0.0.0.0:53 udp; proxy_pass 1.1.1.1:1; }\n}",
			`duplicate "0.0.0.0:53" address and port pair in a.conf:3`},
		{"backlog", srv("listen 53 backlog=10 udp;"), `"listen" directive "backlog" parameter is incompatible with "udp" in a.conf:5`},
		{"so_keepalive on", srv("listen 53 udp so_keepalive=on;"), `"listen" directive "so_keepalive" parameter is incompatible with "udp" in a.conf:5`},
		{"so_keepalive off", srv("listen 53 udp so_keepalive=off;"), `"listen" directive "so_keepalive" parameter is incompatible with "udp" in a.conf:5`},
		{"proxy_protocol", srv("listen 53 udp proxy_protocol;"), `"listen" directive "proxy_protocol" parameter is incompatible with "udp" in a.conf:5`},
		{"first incompatibility only", srv("listen 53 udp proxy_protocol backlog=5;"), `"listen" directive "backlog" parameter is incompatible with "udp" in a.conf:5`},
		{"ssl with udp", srv("listen 53 udp ssl;"), `"listen" directive "ssl" parameter is incompatible with "udp" in a.conf:5`},
	})
}

func TestListenProxyProtocol(t *testing.T) {
	c := mustParse(t, "stream {\nserver {\nlisten 80 proxy_protocol;\nlisten localhost:81 proxy_protocol;\nlisten 82;\nproxy_pass 10.0.0.1:80;\n}\n}")
	ls := c.Stream.Servers[0].Listen
	if !ls[0].ProxyProtocol || !ls[1].ProxyProtocol || ls[2].ProxyProtocol {
		t.Errorf("listens %+v %+v %+v", ls[0], ls[1], ls[2])
	}
	want := []string{
		`the PROXY header of clients of 80 is not trusted for $remote_addr: no "set_real_ip_from" in a.conf:3`,
		`the PROXY header of clients of localhost:81 is not trusted for $remote_addr: no "set_real_ip_from" in a.conf:4`,
	}
	if got := warnings(c); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings %q", got)
	}
	for _, src := range []string{
		"stream { server { listen 80 proxy_protocol; proxy_pass 10.0.0.1:80; set_real_ip_from 10.0.0.0/8; } }",
		"stream { server { listen 80 proxy_protocol; proxy_pass 10.0.0.1:80; } set_real_ip_from 10.0.0.0/8; }",
	} {
		if c := mustParse(t, src); len(c.Warnings) != 0 {
			t.Errorf("%s: warnings %v", src, warnings(c))
		}
	}
}

func TestProxyUDPAndProtocolSettings(t *testing.T) {
	c := mustParse(t, `stream {
proxy_responses 1;
proxy_protocol v2;
proxy_protocol_timeout 5s;
server { listen 1; proxy_pass 10.0.0.1:1; }
server { listen 2; proxy_pass 10.0.0.1:1; proxy_responses 0; proxy_requests 7; proxy_protocol ON; proxy_protocol_timeout 1m; }
server { listen 3; proxy_pass 10.0.0.1:1; proxy_protocol off; }
}`)
	type got struct {
		resp, req, pp int
		ppt           time.Duration
	}
	wants := []got{{1, 0, 2, 5 * time.Second}, {0, 7, 1, time.Minute}, {1, 0, 0, 5 * time.Second}}
	for i, w := range wants {
		s := c.Stream.Servers[i]
		if g := (got{s.ProxyResponses, s.ProxyRequests, s.ProxyProtocol, s.ProxyProtocolTimeout}); g != w {
			t.Errorf("server %d: got %+v want %+v", i, g, w)
		}
	}
	d := mustParse(t, "stream { "+okServer+" }").Stream.Servers[0]
	if d.ProxyResponses != -1 || d.ProxyRequests != 0 || d.ProxyProtocol != 0 || d.ProxyProtocolTimeout != 30*time.Second {
		t.Errorf("defaults %+v", d)
	}
	runErrCases(t, []errCase{
		{"responses negative", srv("proxy_responses -1;"), `"proxy_responses" directive invalid number in a.conf:5`},
		{"requests junk", "stream {\nproxy_requests many;\n}", `"proxy_requests" directive invalid number in a.conf:2`},
		{"responses duplicate", srv("proxy_responses 1;\nproxy_responses 2;"), `"proxy_responses" directive is duplicate in a.conf:6`},
		{"responses args", srv("proxy_responses;"), `invalid number of arguments in "proxy_responses" directive in a.conf:5`},
		{"protocol value", srv("proxy_protocol v3;"), `invalid value "v3" in "proxy_protocol" directive, it must be "on", "off" or "v2" in a.conf:5`},
		{"protocol duplicate", "stream {\nproxy_protocol on;\nproxy_protocol off;\n}", `"proxy_protocol" directive is duplicate in a.conf:3`},
		{"protocol timeout", srv("proxy_protocol_timeout 5x;"), `"proxy_protocol_timeout" directive invalid value in a.conf:5`},
		{"protocol in upstream", "stream { upstream u { server 1.1.1.1:1; proxy_protocol on; } }", `"proxy_protocol" directive is not allowed here in a.conf:1`},
	})
}

func TestSetRealIPFrom(t *testing.T) {
	c := mustParse(t, `stream {
set_real_ip_from 10.0.0.1;
set_real_ip_from 2001:db8::/32;
server { listen 1; proxy_pass 10.0.0.1:1; }
server { listen 2; proxy_pass 10.0.0.1:1; set_real_ip_from ::1; set_real_ip_from 010.1.2.0/24; }
}`)
	want0 := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	want1 := []netip.Prefix{netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.1.2.0/24")}
	if got := c.Stream.Servers[0].SetRealIPFrom; !reflect.DeepEqual(got, want0) {
		t.Errorf("inherited %v", got)
	}
	if got := c.Stream.Servers[1].SetRealIPFrom; !reflect.DeepEqual(got, want1) {
		t.Errorf("own (not merged) %v", got)
	}
	c = mustParse(t, srv("set_real_ip_from 10.1.2.3/8;\nset_real_ip_from 2001:db8::1/32;"))
	if got := c.Stream.Servers[0].SetRealIPFrom; !reflect.DeepEqual(got, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}) {
		t.Errorf("masked %v", got)
	}
	// A host name: each address it resolves to (nginx 1.x: ngx_inet_resolve_host).
	c = mustParse(t, srv("set_real_ip_from db.internal;"))
	if got, want := c.Stream.Servers[0].SetRealIPFrom, []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("10.0.0.6/32"), netip.MustParsePrefix("fd00::5/128")}; !reflect.DeepEqual(got, want) {
		t.Errorf("host name: %v, want %v", got, want)
	}
	c = mustParse(t, srv("set_real_ip_from 10.1.2.3/8;\nset_real_ip_from 2001:db8::1/32;"))
	wantWarn := []string{
		`low address bits of 10.1.2.3/8 are meaningless in a.conf:5`,
		`low address bits of 2001:db8::1/32 are meaningless in a.conf:6`,
	}
	if got := warnings(c); !reflect.DeepEqual(got, wantWarn) {
		t.Errorf("warnings %q", got)
	}
	runErrCases(t, []errCase{
		{"mask too long", srv("set_real_ip_from 10.0.0.0/33;"), `invalid parameter "10.0.0.0/33" in a.conf:5`},
		{"v6 mask too long", srv("set_real_ip_from ::/129;"), `invalid parameter "::/129" in a.conf:5`},
		{"empty mask", srv("set_real_ip_from 10.0.0.0/;"), `invalid parameter "10.0.0.0/" in a.conf:5`},
		{"host name", srv("set_real_ip_from lb.internal;"), `host not found in set_real_ip_from "lb.internal" in a.conf:5`},
		{"all", srv("set_real_ip_from all;"), `host not found in set_real_ip_from "all" in a.conf:5`},
		{"zone", srv("set_real_ip_from fe80::1%eth0;"), `invalid parameter "fe80::1%eth0" in a.conf:5`},
		{"octet", srv("set_real_ip_from 10.0.0.256;"), `host not found in set_real_ip_from "10.0.0.256" in a.conf:5`},
		{"args", srv("set_real_ip_from 1.1.1.1 2.2.2.2;"), `invalid number of arguments in "set_real_ip_from" directive in a.conf:5`},
		{"main", "set_real_ip_from 1.1.1.1;", `"set_real_ip_from" directive is not allowed here in a.conf:1`},
	})
}

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in   string
		want string
		low  bool
		ok   bool
	}{
		{"1.2.3.4", "1.2.3.4/32", false, true},
		{"1.2.3.4/0", "0.0.0.0/0", true, true},
		{"0.0.0.0/0", "0.0.0.0/0", false, true},
		{"1..2.3", "1.0.2.3/32", false, true}, // ngx_inet_addr's leniency
		{"::ffff:1.2.3.4", "::ffff:1.2.3.4/128", false, true},
		{"1.2.3", "", false, false},
		{"1.2.3.4.5", "", false, false},
		{"1.2.3.4/-1", "", false, false},
		{"", "", false, false},
	}
	for _, tt := range tests {
		p, low, ok := parseCIDR(tt.in)
		if ok != tt.ok || low != tt.low || (ok && p.String() != tt.want) {
			t.Errorf("%q: got %v %v %v", tt.in, p, low, ok)
		}
	}
}

func TestAccess(t *testing.T) {
	c := mustParse(t, `stream {
deny 192.168.1.1;
allow 192.168.1.0/24;
deny all;
server { listen 1; proxy_pass 10.0.0.1:1; }
server { listen 2; proxy_pass 10.0.0.1:1;
  allow 2001:db8::/32;
  deny all;
}
}`)
	a := c.Stream.Servers[0].Access
	if len(a) != 3 || a[0].Allow || a[0].Prefix != netip.MustParsePrefix("192.168.1.1/32") || a[0].Pos.Line != 2 ||
		!a[1].Allow || a[1].Prefix != netip.MustParsePrefix("192.168.1.0/24") ||
		a[2].Allow || !a[2].All || a[2].Prefix.IsValid() {
		t.Errorf("inherited rules %+v %+v %+v", a[0], a[1], a[2])
	}
	b := c.Stream.Servers[1].Access
	if len(b) != 2 || !b[0].Allow || b[0].Prefix != netip.MustParsePrefix("2001:db8::/32") || b[1].Allow || !b[1].All || b[1].Pos.Line != 8 {
		t.Errorf("own rules %+v %+v", b[0], b[1])
	}
	if len(mustParse(t, "stream { "+okServer+" }").Stream.Servers[0].Access) != 0 {
		t.Error("rules without any allow/deny")
	}
	c = mustParse(t, srv("allow 10.0.0.1/8;"))
	if got := warnings(c); len(got) != 1 || got[0] != `low address bits of 10.0.0.1/8 are meaningless in a.conf:5` ||
		c.Stream.Servers[0].Access[0].Prefix != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("warnings %q rules %+v", got, c.Stream.Servers[0].Access[0])
	}
	runErrCases(t, []errCase{
		{"bad address", srv("allow x;"), `invalid parameter "x" in a.conf:5`},
		{"bad cidr", "stream {\ndeny 10.0.0.0/40;\n}", `invalid parameter "10.0.0.0/40" in a.conf:2`},
		{"args", srv("allow;"), `invalid number of arguments in "allow" directive in a.conf:5`},
		{"in upstream", "stream { upstream u { server 1.1.1.1:1; deny all; } }", `"deny" directive is not allowed here in a.conf:1`},
	})
}

func TestLimitConn(t *testing.T) {
	c := mustParse(t, `stream {
limit_conn perip 10;
limit_conn_log_level warn;
server { listen 1; proxy_pass 10.0.0.1:1; }
server { listen 2; proxy_pass 10.0.0.1:1;
  limit_conn perserver 100;
  limit_conn perip 2;
  limit_conn_log_level INFO;
  limit_conn_dry_run on;
}
limit_conn_zone $binary_remote_addr zone=perip:10m;
limit_conn_zone "$server_addr:$server_port" zone=perserver:1M;
}`)
	zones := c.Stream.LimitConnZones
	perip, perserver := zones["perip"], zones["perserver"]
	if len(zones) != 2 || perip.Key != "$binary_remote_addr" || perip.Size != 10<<20 || perip.Name != "perip" || perip.Pos.Line != 11 ||
		perserver.Key != "$server_addr:$server_port" || perserver.Size != 1<<20 {
		t.Fatalf("zones %+v %+v", perip, perserver)
	}
	s0, s1 := c.Stream.Servers[0], c.Stream.Servers[1]
	if len(s0.LimitConns) != 1 || s0.LimitConns[0].Zone != perip || s0.LimitConns[0].N != 10 || s0.LimitConns[0].Pos.Line != 2 ||
		s0.LimitConnLogLevel != "warn" || s0.LimitConnDryRun {
		t.Errorf("server 0 %+v %+v", s0.LimitConns, s0)
	}
	if len(s1.LimitConns) != 2 || s1.LimitConns[0].Zone != perserver || s1.LimitConns[0].N != 100 ||
		s1.LimitConns[1].Zone != perip || s1.LimitConns[1].N != 2 || s1.LimitConnLogLevel != "info" || !s1.LimitConnDryRun {
		t.Errorf("server 1 %+v %+v", s1.LimitConns, s1)
	}
	d := mustParse(t, "stream { "+okServer+" }").Stream
	if s := d.Servers[0]; len(s.LimitConns) != 0 || s.LimitConnLogLevel != "error" || s.LimitConnDryRun || d.LimitConnZones == nil || d.Matches == nil {
		t.Errorf("defaults %+v", s)
	}
	const z = "limit_conn_zone $binary_remote_addr zone=a:1m;\n"
	runErrCases(t, []errCase{
		{"unknown zone", "stream {\n" + okServer + "\nlimit_conn nope 1;\nserver { listen 2; proxy_pass 1.1.1.1:1;\nlimit_conn nope 2; }\n}",
			`zero size shared memory zone "nope" in a.conf:3`},
		{"zone bound twice", "stream {\n" + z + "limit_conn_zone $remote_addr zone=a:1m;\n}",
			`limit_conn_zone "a" is already bound to key "$binary_remote_addr" in a.conf:3`},
		{"zone size conflict", "stream {\n" + z + "limit_conn_zone $remote_addr zone=a:2m;\n}",
			`the size 2097152 of shared memory zone "a" conflicts with already declared size 1048576 in a.conf:3`},
		{"zone used by upstream", "stream {\nupstream u { zone a 64k; server 1.1.1.1:1; }\n" + z + "}",
			`the shared memory zone "a" is already declared for a different use in a.conf:3`},
		{"upstream zone used by limit_conn_zone", "stream {\n" + z + "upstream u {\nzone a;\nserver 1.1.1.1:1; }\n}",
			`the shared memory zone "a" is already declared for a different use in a.conf:4`},
		{"limit_conn on upstream zone", "stream {\nupstream u { zone a 64k; server 1.1.1.1:1; }\nlimit_conn a 1;\n}",
			`the shared memory zone "a" is already declared for a different use in a.conf:3`},
		{"session cache no size", "stream {\nssl_session_cache shared:SSL;\n}", `invalid session cache "shared:SSL" in a.conf:2`},
		{"session cache no name", "stream {\nssl_session_cache shared::1m;\n}", `invalid session cache "shared::1m" in a.conf:2`},
		{"session cache too small", "stream {\nssl_session_cache shared:SSL:16k;\n}", `session cache "shared:SSL:16k" is too small in a.conf:2`},
		{"session cache builtin size", "stream {\nssl_session_cache builtin:1m;\n}", `invalid session cache "builtin:1m" in a.conf:2`},
		{"zone no size", "stream {\nlimit_conn_zone $binary_remote_addr zone=a;\n}", `invalid zone size "zone=a" in a.conf:2`},
		{"zone bad size", "stream {\nlimit_conn_zone $binary_remote_addr zone=a:lots;\n}", `invalid zone size "zone=a:lots" in a.conf:2`},
		{"zone too small", "stream {\nlimit_conn_zone $binary_remote_addr zone=a:31k;\n}", `zone "zone=a:31k" is too small in a.conf:2`},
		{"zone no name", "stream {\nlimit_conn_zone $binary_remote_addr zone=:1m;\n}", `"limit_conn_zone" must have "zone" parameter in a.conf:2`},
		{"zone bad param", "stream {\nlimit_conn_zone $binary_remote_addr size=1m;\n}", `invalid parameter "size=1m" in a.conf:2`},
		{"zone args", "stream {\nlimit_conn_zone zone=a:1m;\n}", `invalid number of arguments in "limit_conn_zone" directive in a.conf:2`},
		{"zone in server", srv("limit_conn_zone $binary_remote_addr zone=a:1m;"), `"limit_conn_zone" directive is not allowed here in a.conf:5`},
		{"limit zero", "stream {\n" + z + "limit_conn a 0;\n}", `invalid number of connections "0" in a.conf:3`},
		{"limit junk", "stream {\n" + z + "limit_conn a x;\n}", `invalid number of connections "x" in a.conf:3`},
		{"limit too big", "stream {\n" + z + "limit_conn a 65536;\n}", `connection limit must be less 65536 in a.conf:3`},
		{"limit duplicate", "stream {\n" + z + "limit_conn a 1;\nlimit_conn a 2;\n}", `"limit_conn" directive is duplicate in a.conf:4`},
		{"limit args", "stream {\n" + z + "limit_conn a;\n}", `invalid number of arguments in "limit_conn" directive in a.conf:3`},
		{"log level", srv("limit_conn_log_level debug;"), `invalid value "debug" in a.conf:5`},
		{"log level duplicate", srv("limit_conn_log_level warn;\nlimit_conn_log_level warn;"), `"limit_conn_log_level" directive is duplicate in a.conf:6`},
		{"dry run", srv("limit_conn_dry_run maybe;"), `invalid value "maybe" in "limit_conn_dry_run" directive, it must be "on" or "off" in a.conf:5`},
	})
	// The same zone at stream and server level is not a duplicate.
	if e := parseErr(t, "stream {\n"+z+"limit_conn a 1;\nserver { listen 1; proxy_pass 1.1.1.1:1; limit_conn a 2; } }"); e != "" {
		t.Error(e)
	}
}

func TestHealthCheck(t *testing.T) {
	c := mustParse(t, `stream {
health_check_timeout 3s;
upstream pg { server 10.0.0.1:5432; }
server { listen 1; proxy_pass pg;
  health_check interval=2s fails=3 passes=2 port=8080 match=pg udp mandatory;
}
server { listen 2; proxy_pass 10.0.0.2:53; health_check; health_check_timeout 500ms; }
server { listen 3; proxy_pass pg; }
match pg {
  send "\x00\x01ping\r\n";
  expect ~* "^PONG";
}
}`)
	s := c.Stream.Servers
	m := c.Stream.Matches["pg"]
	want := &HealthCheck{Pos: Pos{"a.conf", 5}, Interval: 2 * time.Second, Fails: 3, Passes: 2, Port: 8080,
		Match: m, UDP: true, Mandatory: true, Timeout: 3 * time.Second}
	if !reflect.DeepEqual(s[0].HealthCheck, want) {
		t.Errorf("health check\n got %+v\nwant %+v", s[0].HealthCheck, want)
	}
	want2 := &HealthCheck{Pos: Pos{"a.conf", 7}, Interval: 5 * time.Second, Fails: 1, Passes: 1, Timeout: 500 * time.Millisecond}
	if !reflect.DeepEqual(s[1].HealthCheck, want2) || !s[1].Upstream.Implicit {
		t.Errorf("defaults on an implicit upstream\n got %+v\nwant %+v", s[1].HealthCheck, want2)
	}
	if s[2].HealthCheck != nil {
		t.Errorf("server without health_check: %+v", s[2].HealthCheck)
	}
	if m.Name != "pg" || m.Send != "\x00\x01ping\r\n" || m.Expect != "" || m.Regexp == nil ||
		!m.Regexp.MatchString("pong ok") || m.Regexp.MatchString("a PONG") || m.Pos.Line != 9 {
		t.Errorf("match %+v", m)
	}
	if hc := mustParse(t, srv("health_check;")).Stream.Servers[0].HealthCheck; hc.Timeout != 5*time.Second {
		t.Errorf("default timeout %v", hc.Timeout)
	}
	runErrCases(t, []errCase{
		{"unknown match", srv("health_check match=nope;"), `unknown match "nope" in a.conf:5`},
		{"match case", "stream {\nmatch M {}\n" + okServer + "\nserver { listen 2; proxy_pass 1.1.1.1:1;\nhealth_check match=m; }\n}", `unknown match "m" in a.conf:5`},
		{"jitter", srv("health_check jitter=1s;"), `the "jitter" parameter of the "health_check" directive is not supported yet in a.conf:5`},
		{"persistent", srv("health_check mandatory persistent;"), `the "persistent" parameter of the "health_check" directive is not supported yet in a.conf:5`},
		{"interval zero", srv("health_check interval=0;"), `invalid parameter "interval=0" in a.conf:5`},
		{"interval junk", srv("health_check interval=fast;"), `invalid parameter "interval=fast" in a.conf:5`},
		{"fails zero", srv("health_check fails=0;"), `invalid parameter "fails=0" in a.conf:5`},
		{"passes junk", srv("health_check passes=-1;"), `invalid parameter "passes=-1" in a.conf:5`},
		{"port range", srv("health_check port=65536;"), `invalid parameter "port=65536" in a.conf:5`},
		{"empty match", srv("health_check match=;"), `invalid parameter "match=" in a.conf:5`},
		{"unknown param", srv("health_check uri=/;"), `invalid parameter "uri=/" in a.conf:5`},
		{"duplicate", srv("health_check;\nhealth_check udp;"), `"health_check" directive is duplicate in a.conf:6`},
		{"in stream", "stream {\nhealth_check;\n}", `"health_check" directive is not allowed here in a.conf:2`},
		{"timeout value", "stream {\nhealth_check_timeout soon;\n}", `"health_check_timeout" directive invalid value in a.conf:2`},
		{"timeout duplicate", srv("health_check_timeout 1s;\nhealth_check_timeout 2s;"), `"health_check_timeout" directive is duplicate in a.conf:6`},
	})
}

func TestMatch(t *testing.T) {
	c := mustParse(t, `stream {
match a { expect "+OK\x0d"; }
match b { send 'PING\x'; expect ~ "^\+PONG\s*$"; }
match c { }
}`)
	ms := c.Stream.Matches
	if a := ms["a"]; a.Expect != "+OK\r" || a.Regexp != nil || a.Send != "" {
		t.Errorf("a %+v", a)
	}
	if b := ms["b"]; b.Send != `PING\x` || b.Regexp == nil || !b.Regexp.MatchString("+PONG \r\n") || b.Regexp.MatchString("+pong") {
		t.Errorf("b %+v", b)
	}
	if c := ms["c"]; c.Send != "" || c.Expect != "" || c.Regexp != nil {
		t.Errorf("c %+v", c)
	}
	runErrCases(t, []errCase{
		{"bad regex", "stream {\nmatch a {\nsend x;\nexpect ~ \"(unclosed\";\n}\n}", "invalid regular expression \"(unclosed\": missing closing ): `(unclosed` in a.conf:4"},
		{"bad modifier", "stream {\nmatch a {\nexpect = x;\n}\n}", `invalid parameter "=" in a.conf:3`},
		{"unknown inside", "stream {\nmatch a {\nstatus 200;\n}\n}", `unknown directive "status" in a.conf:3`},
		{"stream directive inside", "stream {\nmatch a {\nproxy_timeout 1s;\n}\n}", `"proxy_timeout" directive is not allowed here in a.conf:3`},
		{"duplicate send", "stream {\nmatch a {\nsend x;\nsend y;\n}\n}", `"send" directive is duplicate in a.conf:4`},
		{"duplicate expect", "stream {\nmatch a {\nexpect x;\nexpect ~ y;\n}\n}", `"expect" directive is duplicate in a.conf:4`},
		{"expect args", "stream {\nmatch a {\nexpect;\n}\n}", `invalid number of arguments in "expect" directive in a.conf:3`},
		{"duplicate match", "stream {\nmatch a {}\nmatch a {}\n}", `duplicate match "a" in a.conf:3`},
		{"no block", "stream {\nmatch a;\n}", `directive "match" has no opening "{" in a.conf:2`},
		{"in server", srv("match a {}"), `"match" directive is not allowed here in a.conf:5`},
		{"send outside match", "stream {\nsend x;\n}", `unknown directive "send" in a.conf:2`},
	})
}

func TestDecodeHex(t *testing.T) {
	for in, want := range map[string]string{
		`\x41\x62c`: "Abc", `\x4`: `\x4`, `\xZZ`: `\xZZ`, `a\\x41`: `a\A`, `\x00`: "\x00", `plain`: "plain",
	} {
		if got := decodeHex(in); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}

func TestSlowStart(t *testing.T) {
	c := mustParse(t, "stream {\nupstream u {\nleast_conn;\nserver 1.1.1.1:1 slow_start=30s;\nserver 1.1.1.1:2;\n}\nupstream h {\nserver 1.1.1.1:1 slow_start=1m;\nhash $remote_addr;\n}\n}")
	u, h := c.Stream.Upstreams[0], c.Stream.Upstreams[1]
	if u.Servers[0].SlowStart != 30*time.Second || u.Servers[1].SlowStart != 0 {
		t.Errorf("slow start %v %v", u.Servers[0].SlowStart, u.Servers[1].SlowStart)
	}
	if h.Servers[0].SlowStart != 0 {
		t.Errorf("slow start before hash kept: %v", h.Servers[0].SlowStart)
	}
	want := []string{`the "slow_start" parameter of server "1.1.1.1:1" is ignored: the "hash" balancing method does not support it in a.conf:8`}
	if got := warnings(c); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings %q", got)
	}
	runErrCases(t, []errCase{
		{"after hash", "stream { upstream u {\nhash $x;\nserver 1.1.1.1:1 slow_start=10s; } }", `balancing method does not support parameter "slow_start=10s" in a.conf:3`},
		{"after random", "stream { upstream u {\nrandom;\nserver 1.1.1.1:1 slow_start=10s; } }", `balancing method does not support parameter "slow_start=10s" in a.conf:3`},
		{"bad value", "stream { upstream u {\nserver 1.1.1.1:1 slow_start=10ms; } }", `invalid parameter "slow_start=10ms" in a.conf:2`},
	})
}

func TestBaton(t *testing.T) {
	c := mustParse(t, "")
	if c.Baton != (Baton{ControlSocket: "/run/baton/control.sock", UpgradeTimeout: 10 * time.Second}) {
		t.Errorf("defaults %+v", c.Baton)
	}
	c = mustParse(t, "baton {\ncontrol_socket /tmp/b.sock;\nmetrics [::1]:9090;\nupgrade_timeout 30s;\n}")
	if c.Baton != (Baton{Pos: Pos{"a.conf", 1}, ControlSocket: "/tmp/b.sock", Metrics: "[::1]:9090", UpgradeTimeout: 30 * time.Second}) {
		t.Errorf("set %+v", c.Baton)
	}
	for _, m := range []string{"127.0.0.1:9090", "localhost:9100"} {
		if got := mustParse(t, "baton { metrics "+m+"; }").Baton.Metrics; got != m {
			t.Errorf("metrics %q", got)
		}
	}
	if c := mustParse(t, "baton { metrics off; }"); c.Baton.Metrics != "" || c.Baton.ControlSocket != DefaultControlSocket {
		t.Errorf("off %+v", c.Baton)
	}
	runErrCases(t, []errCase{
		{"port", "baton {\nmetrics 127.0.0.1:0;\n}", `invalid port in "127.0.0.1:0" of the "metrics" directive in a.conf:2`},
		{"port range", "baton {\nmetrics 127.0.0.1:65536;\n}", `invalid port in "127.0.0.1:65536" of the "metrics" directive in a.conf:2`},
		{"no port", "baton {\nmetrics 127.0.0.1;\n}", `no port in "127.0.0.1" of the "metrics" directive in a.conf:2`},
		{"bare port", "baton {\nmetrics 9090;\n}", `no port in "9090" of the "metrics" directive in a.conf:2`},
		{"no host", "baton {\nmetrics :9090;\n}", `no host in ":9090" of the "metrics" directive in a.conf:2`},
		{"host not found", "baton {\nmetrics nosuch.invalid:9090;\n}", `host not found in "nosuch.invalid:9090" of the "metrics" directive in a.conf:2`},
		{"metrics duplicate", "baton {\nmetrics off;\nmetrics off;\n}", `"metrics" directive is duplicate in a.conf:3`},
		{"socket duplicate", "baton {\ncontrol_socket /a;\ncontrol_socket /b;\n}", `"control_socket" directive is duplicate in a.conf:3`},
		{"socket empty", "baton {\ncontrol_socket \"\";\n}", `"control_socket" directive invalid value in a.conf:2`},
		{"upgrade_timeout zero", "baton {\nupgrade_timeout 0;\n}", `"upgrade_timeout" directive invalid value in a.conf:2`},
		{"upgrade_timeout duplicate", "baton {\nupgrade_timeout 1s;\nupgrade_timeout 2s;\n}", `"upgrade_timeout" directive is duplicate in a.conf:3`},
		{"socket args", "baton {\ncontrol_socket;\n}", `invalid number of arguments in "control_socket" directive in a.conf:2`},
		{"other", "baton {\nlisten 1;\n}", `"listen" directive is not supported yet in a.conf:2`},
		{"outside baton", "metrics 127.0.0.1:9090;", `unknown directive "metrics" in a.conf:1`},
	})
}

// TestNewlySupportedAreNotRefused checks the directive table: none of the
// directives implemented here is still "not supported yet".
func TestNewlySupportedAreNotRefused(t *testing.T) {
	for _, name := range strings.Fields(`proxy_responses proxy_requests proxy_protocol proxy_protocol_timeout
		set_real_ip_from allow deny limit_conn_zone limit_conn limit_conn_log_level limit_conn_dry_run
		health_check health_check_timeout match least_time`) {
		if _, ok := notSupported[name]; ok {
			t.Errorf("%s is still in notSupported", name)
		}
		if _, ok := implemented[name]; !ok {
			t.Errorf("%s is not in implemented", name)
		}
	}
}

// TestEverythingTogether loads a config using every new directive.
func TestEverythingTogether(t *testing.T) {
	c := mustParse(t, `
baton { control_socket /run/b.sock; metrics 127.0.0.1:9145; }
stream {
    limit_conn_zone $binary_remote_addr zone=perip:10m;
    set_real_ip_from 10.0.0.0/8;
    allow 10.0.0.0/8;
    deny all;
    proxy_protocol_timeout 10s;
    upstream dns { zone dns 64k; server 10.0.0.53:53 slow_start=10s; server 10.0.0.54:53; }
    match dns { send "\x00"; expect ~ "."; }
    server {
        listen 53 udp reuseport;
        listen 5353 proxy_protocol;
        proxy_pass dns;
        proxy_responses 1;
        proxy_requests 1;
        proxy_protocol v2;
        limit_conn perip 50;
        health_check udp match=dns interval=10s;
    }
}`)
	s := c.Stream.Servers[0]
	if len(c.Warnings) != 0 || s.HealthCheck.Match != c.Stream.Matches["dns"] || s.LimitConns[0].Zone.Name != "perip" ||
		len(s.Access) != 2 || len(s.SetRealIPFrom) != 1 || s.ProxyProtocol != 2 || s.ProxyProtocolTimeout != 10*time.Second ||
		!s.Listen[0].UDP || !s.Listen[1].ProxyProtocol || c.Baton.Metrics != "127.0.0.1:9145" ||
		c.Stream.Upstreams[0].Servers[0].SlowStart != 10*time.Second {
		t.Errorf("%+v\nwarnings %v", s, warnings(c))
	}
}
