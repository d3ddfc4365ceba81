package config

import (
	"net/netip"
	"slices"
	"strings"
)

// Syslog is a "syslog:" target of error_log or access_log
// ("syslog:server=ADDR[:PORT][,facility=F][,severity=S][,tag=T][,nohostname]"),
// with nginx's defaults filled in (ngx_syslog_process_conf).
type Syslog struct {
	Server     netip.AddrPort // server=ADDR[:PORT], port 514 if none; a host name is resolved here, its first address taken
	Unix       string         // server=unix:PATH, a Unix-domain datagram socket; Server is then invalid
	Facility   int            // facility=, index into syslog's list; default 23 (local7)
	Severity   int            // severity=, 0 (emerg) to 7 (debug); default 6 (info). error_log sends each line at its own level instead
	Tag        string         // tag=; default "nginx"
	NoHostname bool           // nohostname: the header has no hostname
}

var syslogFacilities = []string{
	"kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp",
	"clock", "authpriv", "ftp", "ntp", "audit", "alert", "cron", "local0",
	"local1", "local2", "local3", "local4", "local5", "local6", "local7",
}

// nginx's names: "error" and "warn", as in nginx.conf, not "err" and "warning".
var syslogSeverities = []string{"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"}

// syslog parses arg, a target starting "syslog:", as ngx_syslog_parse_args,
// with its error messages. It reports an error on d and returns nil when
// arg is invalid.
func (l *loader) syslog(d *directive, arg string) *Syslog {
	sl := &Syslog{Facility: -1, Severity: -1}
	var server, tag bool
	for _, p := range strings.Split(strings.TrimPrefix(arg, "syslog:"), ",") {
		switch {
		case strings.HasPrefix(p, "server="):
			if server {
				l.errorf(d, "duplicate syslog \"server\"")
				return nil
			}
			server = true
			if !l.syslogServer(d, sl, p[len("server="):]) {
				return nil
			}
		case strings.HasPrefix(p, "facility="):
			if sl.Facility >= 0 {
				l.errorf(d, "duplicate syslog \"facility\"")
				return nil
			}
			if sl.Facility = slices.Index(syslogFacilities, p[len("facility="):]); sl.Facility < 0 {
				l.errorf(d, "unknown syslog facility \"%s\"", p[len("facility="):])
				return nil
			}
		case strings.HasPrefix(p, "severity="):
			if sl.Severity >= 0 {
				l.errorf(d, "duplicate syslog \"severity\"")
				return nil
			}
			if sl.Severity = slices.Index(syslogSeverities, p[len("severity="):]); sl.Severity < 0 {
				l.errorf(d, "unknown syslog severity \"%s\"", p[len("severity="):])
				return nil
			}
		case strings.HasPrefix(p, "tag="):
			if tag {
				l.errorf(d, "duplicate syslog \"tag\"")
				return nil
			}
			tag = true
			// RFC 3164: the TAG is at most 32 alphanumeric characters.
			t := p[len("tag="):]
			if len(t) > 32 {
				l.errorf(d, "syslog tag length exceeds 32")
				return nil
			}
			for i := 0; i < len(t); i++ {
				c := t[i]
				if c >= 'A' && c <= 'Z' {
					c |= 0x20 // ngx_tolower
				}
				if c < '0' || (c > '9' && c < 'a' && c != '_') || c > 'z' {
					l.errorf(d, "syslog \"tag\" only allows alphanumeric characters and underscore")
					return nil
				}
			}
			sl.Tag = t
		case p == "nohostname":
			sl.NoHostname = true
		default:
			l.errorf(d, "unknown syslog parameter \"%s\"", p)
			return nil
		}
	}
	if !server {
		l.errorf(d, "no syslog server specified")
		return nil
	}
	if sl.Facility < 0 {
		sl.Facility = 23 // local7
	}
	if sl.Severity < 0 {
		sl.Severity = 6 // info
	}
	if !tag {
		sl.Tag = "nginx"
	}
	return sl
}

// syslogServer parses server= as ngx_parse_url with default port 514.
func (l *loader) syslogServer(d *directive, sl *Syslog, s string) bool {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		switch {
		case path == "":
			l.errorf(d, "no path in the unix domain socket in syslog server \"%s\"", s)
			return false
		case len(path)+1 > 108: // sizeof(sun_path)
			l.errorf(d, "too long path in the unix domain socket in syslog server \"%s\"", s)
			return false
		}
		sl.Unix = path
		return true
	}
	u, msg := parseURL(s, false)
	if msg != "" {
		l.errorf(d, "%s in syslog server \"%s\"", msg, s)
		return false
	}
	if u.noPort {
		u.port = 514
	}
	a := u.addr
	if !a.IsValid() {
		addrs := l.lookupHost(u.host)
		if len(addrs) == 0 {
			l.errorf(d, "host not found in syslog server \"%s\"", s)
			return false
		}
		a = addrs[0]
	}
	sl.Server = netip.AddrPortFrom(a, u.port)
	return true
}
