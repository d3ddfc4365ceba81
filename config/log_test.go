package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// Every top-level error_log is kept, in order; stream's apply to servers
// without their own, as nginx's merge.
func TestErrorLogLevels(t *testing.T) {
	c := mustParse(t, `error_log stderr info;
error_log /b;
error_log syslog:server=127.0.0.1:5514,facility=daemon,severity=crit,tag=Baton_1,nohostname warn;
stream {
    error_log /s warn;
    server { listen 1; proxy_pass 1.1.1.1:1; }
    server {
        listen 2;
        proxy_pass 1.1.1.1:1;
        error_log syslog:server=localhost debug;
        error_log /x;
    }
}`)
	if w := warnings(c); len(w) != 0 {
		t.Errorf("warnings %v", w)
	}
	sl := &Syslog{Server: netip.MustParseAddrPort("127.0.0.1:5514"), Facility: 3, Severity: 2, Tag: "Baton_1", NoHostname: true}
	want := []ErrorLog{
		{Pos: Pos{"a.conf", 1}, Path: "", Level: "info"},
		{Pos: Pos{"a.conf", 2}, Path: "/b", Level: "error"},
		{Pos: Pos{"a.conf", 3}, Path: "syslog:server=127.0.0.1:5514,facility=daemon,severity=crit,tag=Baton_1,nohostname", Syslog: sl, Level: "warn"},
	}
	if !reflect.DeepEqual(c.ErrorLogs, want) {
		t.Errorf("ErrorLogs\n%+v\nwant\n%+v", c.ErrorLogs, want)
	}
	if !reflect.DeepEqual(c.ErrorLog, want[0]) {
		t.Errorf("ErrorLog %+v", c.ErrorLog)
	}
	s1, s2 := c.Stream.Servers[0], c.Stream.Servers[1]
	if len(s1.ErrorLogs) != 1 || s1.ErrorLogs[0].Path != "/s" || s1.ErrorLogs[0].Level != "warn" {
		t.Errorf("server 1 (inherits stream's) %+v", s1.ErrorLogs)
	}
	def := &Syslog{Server: netip.MustParseAddrPort("127.0.0.1:514"), Facility: 23, Severity: 6, Tag: "nginx"}
	if len(s2.ErrorLogs) != 2 || !reflect.DeepEqual(s2.ErrorLogs[0].Syslog, def) || s2.ErrorLogs[0].Level != "debug" || s2.ErrorLogs[1].Path != "/x" {
		t.Errorf("server 2 (its own) %+v", s2.ErrorLogs)
	}
}

// With no error_log, baton logs to standard error at "error".
func TestErrorLogDefault(t *testing.T) {
	c := mustParse(t, "stream { server { listen 1; proxy_pass 1.1.1.1:1; } }")
	if want := []ErrorLog{{Level: "error"}}; !reflect.DeepEqual(c.ErrorLogs, want) || c.ErrorLog != want[0] {
		t.Errorf("ErrorLogs %+v, ErrorLog %+v", c.ErrorLogs, c.ErrorLog)
	}
	if len(c.Stream.Servers[0].ErrorLogs) != 0 {
		t.Errorf("server ErrorLogs %+v", c.Stream.Servers[0].ErrorLogs)
	}
}

func TestAccessLogIfAndSyslog(t *testing.T) {
	c := mustParse(t, `stream {
    log_format a $remote_addr;
    access_log syslog:server=[::1]:1514,severity=notice a if=$remote_port;
    access_log /tmp/a a if=;
    server { listen 1; proxy_pass 1.1.1.1:1; }
}`)
	als := c.Stream.Servers[0].AccessLogs
	if len(als) != 2 || !reflect.DeepEqual(c.Stream.AccessLogs, als) {
		t.Fatalf("access logs %+v, stream's %+v", als, c.Stream.AccessLogs)
	}
	want := &Syslog{Server: netip.MustParseAddrPort("[::1]:1514"), Facility: 23, Severity: 5, Tag: "nginx"}
	if !reflect.DeepEqual(als[0].Syslog, want) || als[0].If != "$remote_port" || als[0].Format.Name != "a" {
		t.Errorf("syslog access_log %+v (syslog %+v)", als[0], als[0].Syslog)
	}
	// An empty condition is nginx's constant "": it never logs, as "0".
	if als[1].Syslog != nil || als[1].Path != "/tmp/a" || als[1].If != "0" {
		t.Errorf("file access_log %+v", als[1])
	}
}

// The syslog: parameters' errors are ngx_syslog_parse_args's.
func TestSyslogLogErrors(t *testing.T) {
	for _, tt := range []struct{ arg, want string }{
		{"syslog:", `unknown syslog parameter ""`},
		{"syslog:facility=user", `no syslog server specified`},
		{"syslog:server=1.2.3.4,server=1.2.3.4", `duplicate syslog "server"`},
		{"syslog:server=1.2.3.4,facility=user,facility=user", `duplicate syslog "facility"`},
		{"syslog:server=1.2.3.4,severity=info,severity=info", `duplicate syslog "severity"`},
		{"syslog:server=1.2.3.4,tag=a,tag=b", `duplicate syslog "tag"`},
		{"syslog:server=1.2.3.4,facility=bogus", `unknown syslog facility "bogus"`},
		{"syslog:server=1.2.3.4,severity=err", `unknown syslog severity "err"`},
		{"syslog:server=1.2.3.4,tag=a-b", `syslog "tag" only allows alphanumeric characters and underscore`},
		{"syslog:server=1.2.3.4,tag=" + strings.Repeat("x", 33), `syslog tag length exceeds 32`},
		{"syslog:server=1.2.3.4:0", `invalid port in syslog server "1.2.3.4:0"`},
		{"syslog:server=nosuch.invalid", `host not found in syslog server "nosuch.invalid"`},
		{"syslog:server=unix:", `no path in the unix domain socket in syslog server "unix:"`},
		{"syslog:server=1.2.3.4,loud", `unknown syslog parameter "loud"`},
	} {
		for _, src := range []string{"error_log " + tt.arg + ";", "stream { log_format a x; access_log " + tt.arg + " a; }"} {
			_, err := testLoader().Parse("a.conf", []byte(src))
			if want := tt.want + " in a.conf:1"; err == nil || err.Error() != want {
				t.Errorf("%s: got %v, want %s", src, err, want)
			}
		}
	}
	c := mustParse(t, "error_log syslog:server=unix:/dev/log,tag=x;")
	if sl := c.ErrorLog.Syslog; sl == nil || sl.Unix != "/dev/log" || sl.Server.IsValid() || sl.Tag != "x" {
		t.Errorf("unix syslog %+v", sl)
	}
	if _, err := testLoader().Parse("a.conf", []byte("error_log memory:32m;")); err == nil {
		t.Error("memory: accepted")
	}
}
