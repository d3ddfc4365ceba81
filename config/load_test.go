package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testLoader resolves a few fixed names and reads no files.
func testLoader() *Loader {
	return &Loader{
		LookupHost: func(_ context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "db.internal":
				return []netip.Addr{netip.MustParseAddr("fd00::5"), netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")}, nil
			case "localhost":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, errors.New("no such host")
		},
		ReadFile: func(string) ([]byte, error) { return nil, fs.ErrNotExist },
		Glob:     func(string) ([]string, error) { return nil, nil },
	}
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := testLoader().Parse("a.conf", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func warnings(c *Config) []string {
	var w []string
	for _, x := range c.Warnings {
		w = append(w, x.String())
	}
	return w
}

const realistic = `user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /var/run/nginx.pid;
worker_rlimit_nofile 65536;

events {
    worker_connections  4096;
    multi_accept on;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    include /etc/nginx/conf.d/*.conf;
    server { listen 80; location / { return 200 "ok"; } }
}

stream {
    log_format proxy '$remote_addr [$time_local] '
                     '$protocol $status $bytes_sent $bytes_received '
                     '$session_time "$upstream_addr"';
    access_log /var/log/nginx/stream.log proxy;
    proxy_connect_timeout 5s;

    upstream postgres {
        zone postgres 64k;
        hash $remote_addr consistent;
        server db.internal:5432 max_fails=3 fail_timeout=30s;
        server 10.0.0.7:5432 weight=5 max_conns=100;
        server 10.0.0.8:5432 down;
    }

    server {
        listen 5432 backlog=1024 so_keepalive=on;
        listen [::]:5432 reuseport;
        proxy_pass postgres;
        proxy_timeout 1h;
        proxy_half_close on;
    }

    server {
        listen 127.0.0.1:6379;
        proxy_pass localhost:6380;
        proxy_next_upstream off;
        proxy_next_upstream_tries 3;
        access_log off;
    }
}
`

func TestRealistic(t *testing.T) {
	c := mustParse(t, realistic)
	wantWarn := []string{
		`"user" directive is ignored: baton does not drop privileges; run it as an unprivileged user with CAP_NET_BIND_SERVICE in a.conf:1`,
		`"worker_processes" directive is ignored by baton in a.conf:2`,
		`"multi_accept" directive is ignored by baton in a.conf:10`,
		`"http" block is ignored by baton, with everything in it in a.conf:13`,
	}
	if got := warnings(c); !reflect.DeepEqual(got, wantWarn) {
		t.Errorf("warnings:\n got %q\nwant %q", got, wantWarn)
	}
	if c.Pid != "/var/run/nginx.pid" || c.WorkerRlimitNofile != 65536 || c.WorkerConnections != 4096 {
		t.Errorf("main: pid %q nofile %d conns %d", c.Pid, c.WorkerRlimitNofile, c.WorkerConnections)
	}
	if c.ErrorLog.Path != "/var/log/nginx/error.log" || c.ErrorLog.Level != "notice" {
		t.Errorf("error_log %+v", c.ErrorLog)
	}
	s := c.Stream
	if len(s.Upstreams) != 1 || len(s.Servers) != 2 {
		t.Fatalf("upstreams %d servers %d", len(s.Upstreams), len(s.Servers))
	}
	up := s.Upstreams[0]
	if up.Method != "hash" || up.HashKey != "$remote_addr" || !up.Consistent || up.MethodPos.Line != 29 {
		t.Errorf("upstream method %+v", up)
	}
	db := up.Servers[0]
	wantAddrs := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.5:5432"), netip.MustParseAddrPort("10.0.0.6:5432"),
		netip.MustParseAddrPort("[fd00::5]:5432"),
	}
	if !reflect.DeepEqual(db.Addrs, wantAddrs) || db.MaxFails != 3 || db.FailTimeout != 30*time.Second || db.Weight != 1 {
		t.Errorf("db server %+v", db)
	}
	if w := up.Servers[1]; w.Weight != 5 || w.MaxConns != 100 || w.MaxFails != 1 || w.FailTimeout != 10*time.Second {
		t.Errorf("second server %+v", w)
	}
	if !up.Servers[2].Down {
		t.Errorf("third server not down")
	}
	lf := s.LogFormats["proxy"]
	if lf == nil || lf.Format != `$remote_addr [$time_local] $protocol $status $bytes_sent $bytes_received $session_time "$upstream_addr"` {
		t.Errorf("log format %+v", lf)
	}

	s1 := s.Servers[0]
	if s1.Upstream != up || s1.ProxyConnectTimeout != 5*time.Second || s1.ProxyTimeout != time.Hour ||
		!s1.ProxyHalfClose || !s1.ProxyNextUpstream {
		t.Errorf("server 1 %+v", s1)
	}
	if len(s1.Listen) != 2 || s1.Listen[0].Addr != netip.MustParseAddrPort("0.0.0.0:5432") ||
		s1.Listen[0].Backlog != 1024 || !s1.Listen[0].SoKeepalive ||
		s1.Listen[1].Addr != netip.MustParseAddrPort("[::]:5432") || !s1.Listen[1].ReusePort || s1.Listen[1].Backlog != 511 {
		t.Errorf("server 1 listens %+v %+v", s1.Listen[0], s1.Listen[1])
	}
	if len(s1.AccessLogs) != 1 || s1.AccessLogs[0].Format != lf || s1.AccessLogs[0].Path != "/var/log/nginx/stream.log" {
		t.Errorf("server 1 access logs %+v", s1.AccessLogs)
	}

	s2 := s.Servers[1]
	if s2.Upstream == nil || !s2.Upstream.Implicit || s2.Upstream.Name != "localhost:6380" ||
		!reflect.DeepEqual(s2.Upstream.Servers[0].Addrs, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:6380")}) {
		t.Errorf("server 2 upstream %+v", s2.Upstream)
	}
	if s2.ProxyConnectTimeout != 5*time.Second || s2.ProxyTimeout != 10*time.Minute || s2.ProxyNextUpstream ||
		s2.ProxyNextUpstreamTries != 3 || s2.ProxyHalfClose || len(s2.AccessLogs) != 0 {
		t.Errorf("server 2 %+v", s2)
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, "stream { server { listen 1; proxy_pass 10.0.0.1:2; } }")
	s := c.Stream.Servers[0]
	if s.ProxyConnectTimeout != 60*time.Second || s.ProxyTimeout != 10*time.Minute || !s.ProxyNextUpstream ||
		s.ProxyNextUpstreamTries != 0 || s.ProxyNextUpstreamTimeout != 0 || s.ProxyHalfClose {
		t.Errorf("defaults %+v", s)
	}
	us := s.Upstream.Servers[0]
	if us.Weight != 1 || us.MaxFails != 1 || us.FailTimeout != 10*time.Second || us.MaxConns != 0 || us.Name != "10.0.0.1:2" {
		t.Errorf("implicit server %+v", us)
	}
	if c.ErrorLog.Level != "error" || c.ErrorLog.Path != "" || len(c.Warnings) != 0 {
		t.Errorf("error log %+v warnings %v", c.ErrorLog, c.Warnings)
	}
}

func TestUpstreamDeclaredAfterUse(t *testing.T) {
	c := mustParse(t, "stream { server { listen 1; proxy_pass B; } upstream b { server 10.0.0.1:1; } }")
	if c.Stream.Servers[0].Upstream != c.Stream.Upstreams[0] {
		t.Error("proxy_pass B does not name upstream b")
	}
}

func TestImplicitUpstreamShared(t *testing.T) {
	c := mustParse(t, "stream { server { listen 1; proxy_pass 10.0.0.1:2; } server { listen 3; proxy_pass 10.0.0.1:2; } }")
	if c.Stream.Servers[0].Upstream != c.Stream.Servers[1].Upstream {
		t.Error("same address gives two implicit upstreams; nginx shares one")
	}
}

func TestListenHostname(t *testing.T) {
	c := mustParse(t, "stream { server { listen localhost:7; listen *:8; proxy_pass 10.0.0.1:2; } }")
	ls := c.Stream.Servers[0].Listen
	if len(ls) != 2 || ls[0].Addr != netip.MustParseAddrPort("127.0.0.1:7") || ls[0].Text != "localhost:7" ||
		ls[1].Addr != netip.MustParseAddrPort("0.0.0.0:8") {
		t.Errorf("listens %+v", ls)
	}
}

// ok is a stream prelude that makes a config valid, for error tests to extend.
const okServer = "server { listen 9; proxy_pass 10.0.0.1:9; }"

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string // the whole ErrorList text
	}{
		{"unknown main", "foo;", `unknown directive "foo" in a.conf:1`},
		{"unknown stream", "stream {\n foo bar;\n}", `unknown directive "foo" in a.conf:2`},
		{"not allowed here", "stream { worker_processes 1; }", `"worker_processes" directive is not allowed here in a.conf:1`},
		{"stream directive in main", "proxy_timeout 1s;", `"proxy_timeout" directive is not allowed here in a.conf:1`},
		{"server-only directive in stream", "stream { proxy_pass x:1; }", `"proxy_pass" directive is not allowed here in a.conf:1`},
		{"not supported in stream", "stream { variables_hash_max_size 1024; }", `"variables_hash_max_size" directive is not supported yet in a.conf:1`},
		{"not supported in server", "stream {\n server { listen 1; proxy_pass 1.1.1.1:1; ssl_early_data on; }\n}", `"ssl_early_data" directive is not supported yet in a.conf:2`},
		{"ssl_conf_command", "stream { ssl_conf_command Options x; }", `"ssl_conf_command" is OpenSSL's own and baton's TLS is Go's crypto/tls: set what it would set with ssl_protocols, ssl_ciphers and ssl_ecdh_curve in a.conf:1`},
		{"ssl_protocols bad", "stream { ssl_protocols TLSv9; }", `invalid value "TLSv9" in a.conf:1`},
		{"ssl_verify_client bad", "stream { ssl_verify_client maybe; }", `invalid value "maybe" in "ssl_verify_client" directive, it must be "on", "off", "optional" or "optional_no_ca" in a.conf:1`},
		{"ssl certificate missing", "stream { server { listen 80 ssl; ssl_certificate nosuch.crt; ssl_certificate_key nosuch.key; proxy_pass 1.1.1.1:1; } }", `cannot load certificate "nosuch.crt": open nosuch.crt: no such file or directory in a.conf:1`},
		{"ssl key missing", "stream { server { listen 80 ssl; ssl_certificate a.crt; proxy_pass 1.1.1.1:1; } }", `no "ssl_certificate_key" is defined for certificate "a.crt" in a.conf:1`},
		{"not supported, wrong context", "stream { server { listen 1; proxy_pass 1.1.1.1:1; map $a $b {} } }", `"map" directive is not allowed here in a.conf:1`},
		{"not supported in upstream", "stream { upstream u { sticky cookie srv; server 1.1.1.1:1; } }", `"sticky" directive is not supported yet in a.conf:1`},
		{"baton block", "baton {\n control_socket /run/baton.sock;\n workers 3;\n tls on;\n}", "\"workers\" directive is not supported yet in a.conf:3\n\"tls\" directive is not supported yet in a.conf:4"},
		{"not terminated", "stream { " + okServer + " proxy_timeout 1s {} }", `directive "proxy_timeout" is not terminated by ";" in a.conf:1`},
		{"no opening brace", "stream;", `directive "stream" has no opening "{" in a.conf:1`},
		{"ignored block without brace", "http;", `directive "http" has no opening "{" in a.conf:1`},
		{"arg count", "stream {\n server {\n listen 1;\n proxy_pass;\n }\n}", "invalid number of arguments in \"proxy_pass\" directive in a.conf:4"},
		{"duplicate", "stream { server { listen 1; proxy_pass 1.1.1.1:1;\nproxy_timeout 1s;\nproxy_timeout 2s; } }", `"proxy_timeout" directive is duplicate in a.conf:3`},
		{"duplicate stream", "stream {}\nstream {}", `"stream" directive is duplicate in a.conf:2`},
		{"invalid time", "stream { proxy_timeout 1x; }", `"proxy_timeout" directive invalid value in a.conf:1`},
		{"invalid flag", "stream { proxy_half_close yes; }", `invalid value "yes" in "proxy_half_close" directive, it must be "on" or "off" in a.conf:1`},
		{"invalid number", "stream { proxy_next_upstream_tries -1; }", `"proxy_next_upstream_tries" directive invalid number in a.conf:1`},
		{"invalid port", "stream {\n server {\n listen 127.0.0.1:99999;\n proxy_pass 1.1.1.1:1; } }", `invalid port in "127.0.0.1:99999" of the "listen" directive in a.conf:3`},
		{"bare port out of range", "stream { server { listen 0; proxy_pass 1.1.1.1:1; } }", `invalid port in "0" of the "listen" directive in a.conf:1`},
		{"listen no port", "stream { server { listen 10.0.0.1; proxy_pass 1.1.1.1:1; } }", `no port in "10.0.0.1" of the "listen" directive in a.conf:1`},
		{"listen bad v6", "stream { server { listen [::1:80; proxy_pass 1.1.1.1:1; } }", `invalid host in "[::1:80" of the "listen" directive in a.conf:1`},
		{"listen host not found", "stream { server { listen nosuch.invalid:80; proxy_pass 1.1.1.1:1; } }", `host not found in "nosuch.invalid:80" of the "listen" directive in a.conf:1`},
		{"listen ssl", "stream { server { listen 80 ssl; proxy_pass 1.1.1.1:1; } }", `no "ssl_certificate" is defined for the "listen ... ssl" directive in a.conf:1`},
		{"listen so_keepalive all zero", "stream { server { listen 80 so_keepalive=0::; proxy_pass 1.1.1.1:1; } }", `invalid so_keepalive value: "0::" in a.conf:1`},
		{"listen ipv6only", "stream { server { listen [::1]:80 ipv6only=oops; proxy_pass 1.1.1.1:1; } }", `invalid ipv6only flags "oops" in a.conf:1`},
		{"listen fastopen udp", "stream { server { listen 80 udp fastopen=5; proxy_pass 1.1.1.1:1; } }", `"listen" directive "fastopen" parameter is incompatible with "udp" in a.conf:1`},
		{"listen setfib", "stream { server { listen 80 setfib=1; proxy_pass 1.1.1.1:1; } }", `the invalid "setfib=1" parameter in a.conf:1`},
		{"listen so_keepalive junk", "stream { server { listen 80 so_keepalive=yes; proxy_pass 1.1.1.1:1; } }", `invalid so_keepalive value: "yes" in a.conf:1`},
		{"listen bad backlog", "stream { server { listen 80 backlog=0; proxy_pass 1.1.1.1:1; } }", `invalid backlog "backlog=0" in a.conf:1`},
		{"listen bad param", "stream { server { listen 80 default; proxy_pass 1.1.1.1:1; } }", `the invalid "default" parameter in a.conf:1`},
		{"listen unix udp", "stream { server { listen unix:/tmp/s udp; proxy_pass 1.1.1.1:1; } }", `"listen unix:... udp" is not supported yet in a.conf:1`},
		{"listen unix no path", "stream { server { listen unix:; proxy_pass 1.1.1.1:1; } }", `no path in the unix domain socket in "unix:" of the "listen" directive in a.conf:1`},
		{"duplicate listen", "stream {\n server { listen 80 udp; proxy_pass 1.1.1.1:1; }\n server { listen 0.0.0.0:80 udp; proxy_pass 1.1.1.1:1; }\n}", `duplicate "0.0.0.0:80" address and port pair in a.conf:3`},
		{"duplicate default server", "stream {\n server { listen 80 default_server; proxy_pass 1.1.1.1:1; }\n server { listen 0.0.0.0:80 default_server; proxy_pass 1.1.1.1:1; }\n}", `a duplicate default server for 0.0.0.0:80 in a.conf:3`},
		{"duplicate listen options", "stream {\n server { listen 80 backlog=5; proxy_pass 1.1.1.1:1; }\n server { listen 0.0.0.0:80 reuseport; proxy_pass 1.1.1.1:1; }\n}", `duplicate listen options for 0.0.0.0:80 in a.conf:3`},
		{"server_name invalid", "stream { server { listen 80; server_name *x; proxy_pass 1.1.1.1:1; } }", `server name "*x" is invalid in a.conf:1`},
		{"duplicate listen v6", "stream { server { listen [::1]:80; listen [::1]:80; proxy_pass 1.1.1.1:1; } }", `a duplicate listen [::1]:80 in a.conf:1`},
		{"no listen", "stream {\n server {\n proxy_pass 1.1.1.1:1;\n }\n}", `no "listen" is defined for server in a.conf:2`},
		{"proxy_pass no port", "stream {\n server { listen 1;\n proxy_pass backend; }\n}", `no port in upstream "backend" in a.conf:3`},
		{"proxy_pass bad port", "stream { server { listen 1; proxy_pass a:0; } }", `invalid port in upstream "a:0" in a.conf:1`},
		{"proxy_pass host not found", "stream {\n server { listen 1;\n proxy_pass nosuch.invalid:80; }\n}", `host not found in upstream "nosuch.invalid" in a.conf:3`},
		{"proxy_pass upstream with port", "stream { upstream b { server 1.1.1.1:1; } server { listen 1; proxy_pass b:80; } }", `upstream "b" may not have port 80 in a.conf:1`},
		{"set_real_ip_from host not found", "stream { set_real_ip_from nosuch.invalid; }", `host not found in set_real_ip_from "nosuch.invalid" in a.conf:1`},
		{"open_log_file_cache max", "stream { open_log_file_cache inactive=10s; }", `"open_log_file_cache" must have "max" parameter in a.conf:1`},
		{"open_log_file_cache param", "stream { open_log_file_cache max=10 x=1; }", `invalid "open_log_file_cache" parameter "x=1" in a.conf:1`},
		{"pass no port", "stream { server { listen 1; pass 127.0.0.1; } }", `"pass" directive has no port in a.conf:1`},
		{"pass host", "stream { server { listen 1; pass localhost:80; } }", `"pass" directive has no addresses in a.conf:1`},
		{"pass duplicate", "stream { server { listen 1; pass 127.0.0.1:1;\npass 127.0.0.1:2; } }", `"pass" directive is duplicate in a.conf:2`},
		{"set without $", "stream { server { listen 1; set a 1; return x; } }", `invalid variable name "a" in a.conf:1`},
		{"set args", "stream { server { listen 1; set $a; return x; } }", `invalid number of arguments in "set" directive in a.conf:1`},
		{"set in stream", "stream { set $a 1; }", `"set" directive is not allowed here in a.conf:1`},
		{"return duplicate", "stream { server { listen 1; return a;\nreturn b; } }", `"return" directive is duplicate in a.conf:2`},
		{"ssl_preread value", "stream { ssl_preread yes; }", `invalid value "yes" in "ssl_preread" directive, it must be "on" or "off" in a.conf:1`},
		{"preread_timeout value", "stream { server { listen 1; return x; preread_timeout abc; } }", `"preread_timeout" directive invalid value in a.conf:1`},
		{"preread_buffer_size duplicate", "stream { preread_buffer_size 1k;\npreread_buffer_size 2k; }", `"preread_buffer_size" directive is duplicate in a.conf:2`},
		{"proxy_pass unix no path", "stream { server { listen 1; proxy_pass unix:; } }", `no path in the unix domain socket in upstream "unix:" in a.conf:1`},
		{"proxy_pass duplicate", "stream { server { listen 1; proxy_pass 1.1.1.1:1;\nproxy_pass 1.1.1.1:2; } }", `"proxy_pass" directive is duplicate in a.conf:2`},
		{"upstream host not found", "stream {\n upstream u {\n zone u 64k;\n\n server nosuch.invalid:80;\n }\n" + okServer + "}", `host not found in upstream "nosuch.invalid:80" in a.conf:5`},
		{"upstream no servers", "stream {\n upstream u {\n zone u;\n }\n" + okServer + "}", `no servers are inside upstream in a.conf:4`},
		{"upstream no port", "stream { upstream u { server 10.0.0.1; } }", `no port in upstream "10.0.0.1" in a.conf:1`},
		{"upstream duplicate", "stream {\n upstream u { server 10.0.0.1:1; }\n upstream U { server 10.0.0.1:1; }\n}", `duplicate upstream "U" in a.conf:3`},
		{"upstream bad weight", "stream { upstream u { server 10.0.0.1:1 weight=0; } }", `invalid parameter "weight=0" in a.conf:1`},
		{"upstream bad max_fails", "stream { upstream u { server 10.0.0.1:1 max_fails=x; } }", `invalid parameter "max_fails=x" in a.conf:1`},
		{"upstream bad fail_timeout", "stream { upstream u { server 10.0.0.1:1 fail_timeout=10ms; } }", `invalid parameter "fail_timeout=10ms" in a.conf:1`},
		{"upstream unknown param", "stream { upstream u { server 10.0.0.1:1 heavy; } }", `invalid parameter "heavy" in a.conf:1`},
		{"upstream drain", "stream { upstream u { server 10.0.0.1:1 drain; } }", `the "drain" parameter of the "server" directive is not supported yet in a.conf:1`},
		{"upstream resolve without zone", "stream { resolver 127.0.0.1; upstream u { server db:1 resolve; } }", `resolving names at run time requires upstream "u" to be in shared memory in a.conf:1`},
		{"upstream resolve without resolver", "stream { upstream u { zone z 1m; server db:1 resolve; } }", `no resolver defined to resolve names at run time in upstream "u" in a.conf:1`},
		{"service without resolve", "stream { upstream u { zone z; server db service=http; } }", `service upstream "db" requires "resolve" parameter in a.conf:1`},
		{"service with port", "stream { upstream u { zone z; server db:80 resolve service=http; } }", `service upstream "db:80" may not have port in a.conf:1`},
		{"service of an address", "stream { upstream u { zone z; server 10.0.0.1 resolve service=http; } }", `service upstream "10.0.0.1" requires domain name in a.conf:1`},
		{"service empty", "stream { upstream u { zone z; server db resolve service=; } }", `service is empty in a.conf:1`},
		{"resolver duplicate", "stream { resolver 127.0.0.1; resolver 127.0.0.2; }", `"resolver" directive is duplicate in a.conf:1`},
		{"resolver bad valid", "stream { resolver 127.0.0.1 valid=x; }", `invalid parameter: valid=x in a.conf:1`},
		{"resolver bad ipv6", "stream { resolver 127.0.0.1 ipv6=maybe; }", `invalid parameter: ipv6=maybe in a.conf:1`},
		{"resolver no family", "stream { resolver 127.0.0.1 ipv4=off ipv6=off; }", `"ipv4" and "ipv6" cannot both be "off" in a.conf:1`},
		{"resolver no servers", "stream { resolver valid=1s; }", `no name servers defined in a.conf:1`},
		{"resolver bad port", "stream { resolver 127.0.0.1:99999; }", `invalid port in resolver "127.0.0.1:99999" in a.conf:1`},
		{"resolver_timeout bad", "stream { resolver_timeout x; }", `"resolver_timeout" directive invalid value in a.conf:1`},
		{"hash_ring without consistent", "stream { upstream u { hash $remote_addr; hash_ring address; server 10.0.0.1:1; } }", `"hash_ring" requires "hash ... consistent" in the same upstream: the other methods have no ring in a.conf:1`},
		{"hash_ring bad", "stream { upstream u { hash $remote_addr consistent; hash_ring pods; server 10.0.0.1:1; } }", `invalid value "pods" in "hash_ring" directive, it must be "name" or "address" in a.conf:1`},
		{"rebalance round robin", "stream { upstream u { rebalance; server 10.0.0.1:1; } }", `"rebalance" requires "hash" or "ip_hash" in the same upstream: only they map a session's key to one server in a.conf:1`},
		{"rebalance bounded", "stream { upstream u { hash $remote_addr consistent; hash_balance_factor 150; rebalance; server 10.0.0.1:1; } }", `"rebalance" cannot be used with "hash_balance_factor": a session the bound sent to another server would be moved back and forth in a.conf:1`},
		{"rebalance bad window", "stream { upstream u { ip_hash; rebalance window=0; server 10.0.0.1:1; } }", `invalid parameter "window=0" in a.conf:1`},
		{"rebalance bad param", "stream { upstream u { ip_hash; rebalance soon; server 10.0.0.1:1; } }", `invalid parameter "soon" in a.conf:1`},
		{"rebalance duplicate", "stream { upstream u { ip_hash; rebalance; rebalance; server 10.0.0.1:1; } }", `"rebalance" directive is duplicate in a.conf:1`},
		{"hash bad param", "stream { upstream u { hash $x weird; server 10.0.0.1:1; } }", `invalid parameter "weird" in a.conf:1`},
		{"random bad param", "stream { upstream u { random three; server 10.0.0.1:1; } }", `invalid parameter "three" in a.conf:1`},
		{"ip_hash args", "stream { upstream u { ip_hash x; server 10.0.0.1:1; } }", `invalid number of arguments in "ip_hash" directive in a.conf:1`},
		{"balance factor without consistent", "stream { upstream u {\n hash $x;\n hash_balance_factor 150;\n server 10.0.0.1:1; } }", `"hash_balance_factor" requires "hash ... consistent" in the same upstream in a.conf:3`},
		{"balance factor too small", "stream { upstream u { hash $x consistent; hash_balance_factor 100; server 10.0.0.1:1; } }", `invalid value "100" in "hash_balance_factor" directive, it must be a number greater than 100 in a.conf:1`},
		{"log format unknown", "stream { access_log /tmp/x nope; }", `unknown log format "nope" in a.conf:1`},
		{"log format missing", "stream { access_log /tmp/x; }", `log format is not specified in a.conf:1`},
		{"log format duplicate", "stream { log_format a x; log_format a y; }", `duplicate "log_format" name "a" in a.conf:1`},
		{"access_log buffer size", "stream { log_format a x; access_log /tmp/x a buffer=0; }", `invalid buffer size "0" in a.conf:1`},
		{"access_log flush without buffer", "stream { log_format a x; access_log /tmp/x a flush=1s; }", `no buffer is defined for access_log "/tmp/x" in a.conf:1`},
		{"access_log buffered variable path", "stream { log_format a x; access_log /tmp/$pid a buffer=4k; }", `buffered logs cannot have variables in name in a.conf:1`},
		{"access_log conflicting buffers", "stream { log_format a x; access_log /tmp/x a buffer=4k;\n access_log /tmp/x a buffer=8k; }", `access_log "/tmp/x" already defined with conflicting parameters in a.conf:2`},
		{"access_log gzip level", "stream { log_format a x; access_log /tmp/x a gzip=10; }", `invalid compression level "10" in a.conf:1`},
		{"access_log buffer no value", "stream { log_format a x; access_log /tmp/x a buffer; }", `invalid parameter "buffer" in a.conf:1`},
		{"access_log bad param", "stream { log_format a x; access_log /tmp/x a if=$pid loud; }", `invalid parameter "loud" in a.conf:1`},
		{"error_log level", "error_log /tmp/e loud;", `invalid log level "loud" in a.conf:1`},
		{"worker_connections", "events { worker_connections many; }", `invalid number "many" in a.conf:1`},
		{"missing include", "include nosuch.conf;", `open() "nosuch.conf" failed (2: No such file or directory) in a.conf:1`},
		{"several semantic errors", "foo;\nstream {\n bar;\n proxy_timeout x;\n}\nbaz;", "unknown directive \"foo\" in a.conf:1\nunknown directive \"bar\" in a.conf:3\n\"proxy_timeout\" directive invalid value in a.conf:4\nunknown directive \"baz\" in a.conf:6"},
		{"syntax error alone", "foo;\nbar \"x\"y;", `unexpected "y" in a.conf:2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := testLoader().Parse("a.conf", []byte(tt.src))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Error("config returned with an error")
			}
			if err.Error() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", err, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Pos.File != "a.conf" || e.Pos.Line == 0 {
				t.Errorf("errors.As *Error: %+v", e)
			}
		})
	}
}

func TestErrorDirective(t *testing.T) {
	_, err := testLoader().Parse("a.conf", []byte("stream { server { listen 1; proxy_pass 1.1.1.1:1; proxy_timeout 1s; proxy_timeout 1s; } }"))
	var e *Error
	if !errors.As(err, &e) || e.Directive != "proxy_timeout" || e.Msg != `"proxy_timeout" directive is duplicate` {
		t.Errorf("got %+v", e)
	}
}

func TestBackupAndMethods(t *testing.T) {
	const bad = `balancing method does not support parameter "backup" in a.conf:6`
	tests := []struct {
		name    string
		body    string
		err     string
		warns   []string
		method  string
		backups int
	}{
		{"round robin keeps backup", "server 1.1.1.1:1;\nserver 1.1.1.1:2 backup;\n\n", "", nil, "", 1},
		{"least_conn keeps backup", "least_conn;\nserver 1.1.1.1:1;\n\nserver 1.1.1.1:2 backup;", "", nil, "least_conn", 1},
		{"backup after hash", "hash $remote_addr;\nserver 1.1.1.1:1;\n\nserver 1.1.1.1:2 backup;", bad, nil, "", 0},
		{"backup after ip_hash", "ip_hash;\nserver 1.1.1.1:1;\n\nserver 1.1.1.1:2 backup;", bad, nil, "", 0},
		{"backup after random", "random two least_conn;\nserver 1.1.1.1:1;\n\nserver 1.1.1.1:2 backup;", bad, nil, "", 0},
		{"backup after least_conn then hash", "least_conn;\nhash $x;\n\nserver 1.1.1.1:2 backup;", bad,
			nil, "", 0},
		{"backup before hash", "server 1.1.1.1:1;\nserver 1.1.1.1:2 backup;\nhash $remote_addr consistent;\n", "",
			[]string{`backup server "1.1.1.1:2" will never be used: the "hash" balancing method does not use backup servers in a.conf:4`}, "hash", 1},
		{"backup before ip_hash", "server 1.1.1.1:2 backup;\nip_hash;\n", "",
			[]string{`backup server "1.1.1.1:2" will never be used: the "ip_hash" balancing method does not use backup servers in a.conf:3`}, "ip_hash", 1},
		{"redefined", "least_conn;\nhash $x;\nserver 1.1.1.1:1;\n", "",
			[]string{`load balancing method redefined in a.conf:4`}, "hash", 0},
		{"weight after hash is fine", "hash $x;\nserver 1.1.1.1:1 weight=3 max_conns=2 max_fails=0 fail_timeout=1m down;\n", "", nil, "hash", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "stream {\nupstream u {\n" + tt.body + "\n}\n}\n"
			c, err := testLoader().Parse("a.conf", []byte(src))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			up := c.Stream.Upstreams[0]
			if up.Method != tt.method {
				t.Errorf("method %q, want %q", up.Method, tt.method)
			}
			n := 0
			for _, s := range up.Servers {
				if s.Backup {
					n++
				}
			}
			if n != tt.backups {
				t.Errorf("%d backups, want %d", n, tt.backups)
			}
			if got := warnings(c); !reflect.DeepEqual(got, tt.warns) {
				t.Errorf("warnings %q, want %q", got, tt.warns)
			}
		})
	}
}

// TestLeastTime: "least_time MODE [inflight]" is read as nginx's
// ngx_stream_upstream_least_time, errors and warnings included.
func TestLeastTime(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		err      string
		warns    []string
		method   string
		mode     string
		inflight bool
		backups  int
	}{
		{"connect", "least_time connect;", "", nil, "least_time", "connect", false, 0},
		{"first_byte inflight", "least_time first_byte inflight;", "", nil, "least_time", "first_byte", true, 0},
		{"mode case", "least_time LAST_BYTE;", "", nil, "least_time", "last_byte", false, 0},
		{"backup allowed", "least_time last_byte;\nserver 1.1.1.1:2 backup weight=2 max_conns=3 max_fails=2 fail_timeout=1s slow_start=5s;", "", nil, "least_time", "last_byte", false, 1},
		{"no args", "least_time;", `invalid number of arguments in "least_time" directive in a.conf:3`, nil, "", "", false, 0},
		{"three args", "least_time connect inflight x;", `invalid number of arguments in "least_time" directive in a.conf:3`, nil, "", "", false, 0},
		{"bad mode", "least_time header;", `invalid value "header" in a.conf:3`, nil, "", "", false, 0},
		{"bad parameter", "least_time connect INFLIGHT;", `invalid parameter "INFLIGHT" in a.conf:3`, nil, "", "", false, 0},
		{"bad parameter first", "least_time bogus more;", `invalid parameter "more" in a.conf:3`, nil, "", "", false, 0},
		{"duplicate", "least_time connect;\nleast_time connect;", `"least_time" directive is duplicate in a.conf:4`, nil, "", "", false, 0},
		{"duplicate past another method", "least_time connect;\nleast_conn;\nleast_time last_byte;", `"least_time" directive is duplicate in a.conf:5`, nil, "", "", false, 0},
		{"redefined by hash", "least_time connect;\nhash $remote_addr;", "",
			[]string{`load balancing method redefined in a.conf:4`}, "hash", "", false, 0},
		{"redefines least_conn", "least_conn;\nleast_time first_byte;", "",
			[]string{`load balancing method redefined in a.conf:4`}, "least_time", "first_byte", false, 0},
		{"backup after random then least_time", "random;\nleast_time connect;\nserver 1.1.1.1:2 backup;", "", []string{`load balancing method redefined in a.conf:4`}, "least_time", "connect", false, 1},
		{"backup after least_time then hash", "least_time connect;\nhash $x;\nserver 1.1.1.1:2 backup;",
			`balancing method does not support parameter "backup" in a.conf:5`, nil, "", "", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "stream {\nupstream u {\n" + tt.body + "\nserver 1.1.1.1:1;\n}\n}\n"
			c, err := testLoader().Parse("a.conf", []byte(src))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			up := c.Stream.Upstreams[0]
			if up.Method != tt.method || up.LeastTime != tt.mode || up.Inflight != tt.inflight {
				t.Errorf("method %q %q inflight %v, want %q %q %v", up.Method, up.LeastTime, up.Inflight, tt.method, tt.mode, tt.inflight)
			}
			n := 0
			for _, s := range up.Servers {
				if s.Backup {
					n++
				}
			}
			if n != tt.backups {
				t.Errorf("%d backups, want %d", n, tt.backups)
			}
			if got := warnings(c); !reflect.DeepEqual(got, tt.warns) {
				t.Errorf("warnings %q, want %q", got, tt.warns)
			}
		})
	}
}

func TestRandomAndFactor(t *testing.T) {
	c := mustParse(t, "stream { upstream r { random two least_conn; server 1.1.1.1:1; } upstream h { hash $remote_addr consistent; hash_balance_factor 150; server 1.1.1.1:1; } }")
	r, h := c.Stream.Upstreams[0], c.Stream.Upstreams[1]
	if r.Method != "random" || !r.RandomTwo || !r.RandomLeastConn {
		t.Errorf("random %+v", r)
	}
	if h.BalanceFactor != 150 || !h.Consistent {
		t.Errorf("hash %+v", h)
	}
}

func TestEveryIgnoredMainDirectiveWarnsOnce(t *testing.T) {
	for name, block := range ignoredMain {
		src := name + " x;"
		if block {
			src = name + " { include /nonexistent; server { listen 80; } }"
		}
		c, err := testLoader().Parse("a.conf", []byte(src))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Msg, `"`+name+`"`) {
			t.Errorf("%s: warnings %v", name, c.Warnings)
		}
	}
}

func TestEveryNotSupportedDirectiveIsNamed(t *testing.T) {
	for name, ctx := range notSupported {
		var src string
		switch {
		case ctx&ctxStream != 0:
			src = "stream { " + name + " x; }"
		case ctx&ctxServer != 0:
			src = "stream { server { listen 1; proxy_pass 1.1.1.1:1; " + name + " x; } }"
		default:
			src = "stream { upstream u { server 1.1.1.1:1; " + name + " x; } }"
		}
		_, err := testLoader().Parse("a.conf", []byte(src))
		want := `"` + name + `" directive is not supported yet in a.conf:1`
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// A port range in listen (nginx 1.27.3) is a listen for each port.
func TestListenPortRange(t *testing.T) {
	c := mustParse(t, "stream { server { listen 127.0.0.1:8000-8002; listen 9000-9001 udp; proxy_pass 1.1.1.1:1; } }")
	var got []string
	for _, ln := range c.Stream.Servers[0].Listen {
		got = append(got, fmt.Sprintf("%s %s %v", ln.Addr, ln.Text, ln.UDP))
	}
	want := []string{"127.0.0.1:8000 127.0.0.1:8000 false", "127.0.0.1:8001 127.0.0.1:8001 false", "127.0.0.1:8002 127.0.0.1:8002 false",
		"0.0.0.0:9000 0.0.0.0:9000 true", "0.0.0.0:9001 0.0.0.0:9001 true"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for _, tc := range []struct{ conf, want string }{
		{"listen 127.0.0.1:8002-8000;", `invalid port range in "127.0.0.1:8002-8000" of the "listen" directive in a.conf:1`},
		{"listen 127.0.0.1:8000-70000;", `invalid port in "127.0.0.1:8000-70000" of the "listen" directive in a.conf:1`},
	} {
		_, err := testLoader().Parse("a.conf", []byte("stream { server { "+tc.conf+" proxy_pass 1.1.1.1:1; } }"))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %s", tc.conf, err, tc.want)
		}
	}
}
