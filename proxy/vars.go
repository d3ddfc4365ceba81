package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// A template is text with nginx stream variables ($name or ${name}),
// compiled once so that evaluating it for a session is an append loop.
type template []segment

type segment struct {
	lit string
	v   variable // nil for a literal
}

// variable appends its value for s to b.
type variable func(b []byte, s *session) []byte

// variables are the nginx stream variables baton knows. Each appends its
// value as nginx prints it.
var variables = map[string]variable{
	"remote_addr": func(b []byte, s *session) []byte { return s.client.Addr().AppendTo(b) },
	"remote_port": func(b []byte, s *session) []byte { return strconv.AppendUint(b, uint64(s.client.Port()), 10) },
	"binary_remote_addr": func(b []byte, s *session) []byte {
		if a := s.client.Addr(); a.Is4() {
			x := a.As4()
			return append(b, x[:]...)
		}
		x := s.client.Addr().As16()
		return append(b, x[:]...)
	},
	"server_addr": func(b []byte, s *session) []byte { return s.localAddr().Addr().AppendTo(b) },
	"server_port": func(b []byte, s *session) []byte {
		return strconv.AppendUint(b, uint64(s.localAddr().Port()), 10)
	},
	"protocol": func(b []byte, s *session) []byte {
		if s.udp {
			return append(b, "UDP"...)
		}
		return append(b, "TCP"...)
	},
	"upstream_addr":           func(b []byte, s *session) []byte { return append(b, s.upstreamAddrs...) },
	"bytes_sent":              func(b []byte, s *session) []byte { return strconv.AppendInt(b, s.u2c.n, 10) },
	"bytes_received":          func(b []byte, s *session) []byte { return strconv.AppendInt(b, s.c2u.n-s.ppOutLen, 10) },
	"upstream_bytes_sent":     func(b []byte, s *session) []byte { return strconv.AppendInt(b, s.c2u.n, 10) },
	"upstream_bytes_received": func(b []byte, s *session) []byte { return strconv.AppendInt(b, s.u2c.n, 10) },
	"session_time": func(b []byte, s *session) []byte {
		return appendSeconds(b, s.endMono-s.startMono)
	},
	"upstream_connect_time": func(b []byte, s *session) []byte {
		if s.connectTime < 0 {
			return append(b, '-')
		}
		return appendSeconds(b, s.connectTime)
	},
	"status":     func(b []byte, s *session) []byte { return strconv.AppendInt(b, int64(s.status), 10) },
	"connection": func(b []byte, s *session) []byte { return strconv.AppendUint(b, s.id, 10) },
	"time_local": func(b []byte, s *session) []byte {
		return time.Now().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	},
	"time_iso8601": func(b []byte, s *session) []byte {
		return time.Now().AppendFormat(b, "2006-01-02T15:04:05-07:00")
	},
	"msec": func(b []byte, s *session) []byte { return appendSeconds(b, time.Now().UnixNano()) },
	"pid":  func(b []byte, s *session) []byte { return strconv.AppendInt(b, int64(pid), 10) },
	"proxy_protocol_addr": func(b []byte, s *session) []byte {
		if !s.ppAddr.IsValid() {
			return b
		}
		return s.ppAddr.Addr().AppendTo(b)
	},
	"proxy_protocol_port": func(b []byte, s *session) []byte {
		if !s.ppAddr.IsValid() {
			return b
		}
		return strconv.AppendUint(b, uint64(s.ppAddr.Port()), 10)
	},
	"realip_remote_addr": func(b []byte, s *session) []byte { return s.realPeer().Addr().AppendTo(b) },
	"realip_remote_port": func(b []byte, s *session) []byte {
		return strconv.AppendUint(b, uint64(s.realPeer().Port()), 10)
	},
}

// appendSeconds prints d nanoseconds as nginx prints times: seconds with
// millisecond resolution ("0.123").
func appendSeconds(b []byte, d int64) []byte {
	ms := d / int64(time.Millisecond)
	b = strconv.AppendInt(b, ms/1000, 10)
	b = append(b, '.')
	return append(b, byte('0'+ms%1000/100), byte('0'+ms%100/10), byte('0'+ms%10))
}

// compileTemplate parses text; an unknown variable is an error worded as
// nginx's ("unknown "foo" variable").
func compileTemplate(text string) (template, error) {
	var t template
	for len(text) > 0 {
		i := strings.IndexByte(text, '$')
		if i < 0 {
			t = append(t, segment{lit: text})
			break
		}
		if i > 0 {
			t = append(t, segment{lit: text[:i]})
		}
		text = text[i+1:]
		var name string
		if strings.HasPrefix(text, "{") {
			j := strings.IndexByte(text, '}')
			if j < 0 {
				return nil, fmt.Errorf(`the closing bracket in "%s" variable is missing`, text[1:])
			}
			name, text = text[1:j], text[j+1:]
		} else {
			j := 0
			for j < len(text) && isVarChar(text[j]) {
				j++
			}
			name, text = text[:j], text[j:]
		}
		if name == "" {
			return nil, fmt.Errorf(`invalid variable name in "$%s"`, text)
		}
		v, ok := variables[name]
		if !ok {
			return nil, fmt.Errorf(`unknown "%s" variable`, name)
		}
		t = append(t, segment{v: v})
	}
	return t, nil
}

func isVarChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// appendTo evaluates t for s.
func (t template) appendTo(b []byte, s *session) []byte {
	for _, seg := range t {
		if seg.v == nil {
			b = append(b, seg.lit...)
		} else {
			b = seg.v(b, s)
		}
	}
	return b
}

// realPeer is the TCP peer; sessions built without one (UDP) use the client.
func (s *session) realPeer() netip.AddrPort {
	if s.peerAddr.IsValid() {
		return s.peerAddr
	}
	return s.client
}
