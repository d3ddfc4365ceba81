package config

import (
	"regexp"
	"strings"
	"time"
)

// healthCheck reads a stream server's "health_check [params]" (nginx Plus,
// ngx_stream_upstream_hc_module). nginx Plus is not open source, so the
// wording of its errors is baton's, in nginx's style. The match is linked,
// and health_check_timeout merged, by finishStream.
func (l *loader) healthCheck(d *directive, ss *serverState) {
	if !l.check(d, false, atLeast(0)) {
		return
	}
	if ss.hc != nil {
		l.errorf(d, "\"health_check\" directive is duplicate")
		return
	}
	hc := &HealthCheck{Pos: d.pos, Interval: 5 * time.Second, Fails: 1, Passes: 1}
	var match string
	for _, p := range d.args {
		name, val, hasVal := strings.Cut(p, "=")
		ok := true
		switch {
		case hasVal && name == "interval":
			t, err := ParseDuration(val)
			ok = err == nil && t > 0
			hc.Interval = t
		case hasVal && name == "fails":
			hc.Fails, ok = atoiInt(val)
			ok = ok && hc.Fails > 0
		case hasVal && name == "passes":
			hc.Passes, ok = atoiInt(val)
			ok = ok && hc.Passes > 0
		case hasVal && name == "port":
			var port uint16
			port, ok = parsePort(val)
			hc.Port = int(port)
		case hasVal && name == "match":
			match, ok = val, val != ""
		case p == "udp":
			hc.UDP = true
		case p == "mandatory":
			hc.Mandatory = true
		case p == "persistent" || (hasVal && name == "jitter"):
			l.errorf(d, "the \"%s\" parameter of the \"health_check\" directive is not supported yet", name)
			return
		default:
			ok = false
		}
		if !ok {
			l.errorf(d, "invalid parameter \"%s\"", p)
			return
		}
	}
	ss.hc, ss.hcMatch = hc, match
}

// match reads "match NAME { send STRING; expect STRING | ~ REGEX | ~* REGEX; }"
// (nginx Plus). "send" and "expect" strings may hold "\xHH" byte literals.
func (l *loader) match(d *directive) {
	if !l.check(d, true, take(1)) {
		return
	}
	name := d.args[0]
	matches := l.st.s.Matches
	if matches[name] != nil {
		l.errorf(d, "duplicate match \"%s\"", name)
		return
	}
	m := &Match{Pos: d.pos, Name: name}
	matches[name] = m
	var sendSet, expectSet bool
	l.each(d.block, ctxMatch, func(d *directive) {
		switch d.name {
		case "send":
			if !l.check(d, false, take(1)) {
				return
			}
			if sendSet {
				l.errorf(d, "\"send\" directive is duplicate")
				return
			}
			sendSet = true
			m.Send = decodeHex(d.args[0])
		case "expect":
			if !l.check(d, false, take(1, 2)) {
				return
			}
			if expectSet {
				l.errorf(d, "\"expect\" directive is duplicate")
				return
			}
			expectSet = true
			if len(d.args) == 1 {
				m.Expect = decodeHex(d.args[0])
				return
			}
			expr := d.args[1]
			switch d.args[0] {
			case "~":
			case "~*":
				expr = "(?i)" + expr
			default:
				l.errorf(d, "invalid parameter \"%s\"", d.args[0])
				return
			}
			re, err := regexp.Compile(expr)
			if err != nil {
				msg := strings.TrimPrefix(err.Error(), "error parsing regexp: ")
				l.errorf(d, "invalid regular expression \"%s\": %s", d.args[1], msg)
				return
			}
			m.Regexp = re
		default:
			l.refuse(d, ctxMatch)
		}
	})
}

// decodeHex replaces each "\xHH" (two hex digits) in s with that byte, as
// nginx Plus reads "send" and "expect" strings; other text is unchanged.
func decodeHex(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			hi, ok1 := unhex(s[i+2])
			lo, ok2 := unhex(s[i+3])
			if ok1 && ok2 {
				out = append(out, hi<<4|lo)
				i += 3
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
