package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/batonproxy/baton/internal/sock"
	"golang.org/x/sys/unix"
)

// A template is text with nginx stream variables ($name or ${name}),
// compiled once so that evaluating it for a session is an append loop.
type template []segment

type segment struct {
	lit string
	v   variable // nil for a literal
}

// variable appends its value for the session r describes to b.
type variable func(b []byte, r *record) []byte

// record is what variables read: the facts of one session, TCP
// (session.record) or UDP (udpListener.record), copied into a plain value
// when an access-log line, a hash key or a limit_conn key is evaluated.
type record struct {
	id                       uint64
	udp                      bool
	client                   netip.AddrPort // $remote_addr: the peer, or its trusted PROXY header's source
	peer                     netip.AddrPort // the TCP peer ($realip_remote_addr); invalid for UDP
	pp                       netip.AddrPort // the PROXY header's source; invalid if none
	local                    netip.AddrPort // $server_addr; if invalid, looked up on cfd when first asked
	cfd                      int
	upstreamAddrs            []byte
	sent, received           int64 // bytes to and from the client
	upSent, upReceived       int64 // bytes to and from the upstream
	sessionTime, connectTime int64 // connectTime -1: not connected
	status                   int
}

// localAddr is $server_addr's address, looked up once (a TCP client
// socket's local address costs a syscall, paid only by a format that asks).
func (r *record) localAddr() netip.AddrPort {
	if !r.local.IsValid() && r.cfd >= 0 {
		if sa, err := unix.Getsockname(r.cfd); err == nil {
			r.local = sock.AddrPort(sa)
		}
	}
	return r.local
}

// realPeer is the TCP peer; a UDP session's is its client.
func (r *record) realPeer() netip.AddrPort {
	if r.peer.IsValid() {
		return r.peer
	}
	return r.client
}

// variables are the nginx stream variables baton knows. Each appends its
// value as nginx prints it.
var variables = map[string]variable{
	"remote_addr": func(b []byte, r *record) []byte { return r.client.Addr().AppendTo(b) },
	"remote_port": func(b []byte, r *record) []byte { return strconv.AppendUint(b, uint64(r.client.Port()), 10) },
	"binary_remote_addr": func(b []byte, r *record) []byte {
		if a := r.client.Addr(); a.Is4() {
			x := a.As4()
			return append(b, x[:]...)
		}
		x := r.client.Addr().As16()
		return append(b, x[:]...)
	},
	"server_addr": func(b []byte, r *record) []byte { return r.localAddr().Addr().AppendTo(b) },
	"server_port": func(b []byte, r *record) []byte {
		return strconv.AppendUint(b, uint64(r.localAddr().Port()), 10)
	},
	"protocol": func(b []byte, r *record) []byte {
		if r.udp {
			return append(b, "UDP"...)
		}
		return append(b, "TCP"...)
	},
	"upstream_addr":           func(b []byte, r *record) []byte { return append(b, r.upstreamAddrs...) },
	"bytes_sent":              func(b []byte, r *record) []byte { return strconv.AppendInt(b, r.sent, 10) },
	"bytes_received":          func(b []byte, r *record) []byte { return strconv.AppendInt(b, r.received, 10) },
	"upstream_bytes_sent":     func(b []byte, r *record) []byte { return strconv.AppendInt(b, r.upSent, 10) },
	"upstream_bytes_received": func(b []byte, r *record) []byte { return strconv.AppendInt(b, r.upReceived, 10) },
	"session_time": func(b []byte, r *record) []byte {
		return appendSeconds(b, r.sessionTime)
	},
	"upstream_connect_time": func(b []byte, r *record) []byte {
		if r.connectTime < 0 {
			return append(b, '-')
		}
		return appendSeconds(b, r.connectTime)
	},
	"status":     func(b []byte, r *record) []byte { return strconv.AppendInt(b, int64(r.status), 10) },
	"connection": func(b []byte, r *record) []byte { return strconv.AppendUint(b, r.id, 10) },
	"time_local": func(b []byte, r *record) []byte {
		return time.Now().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	},
	"time_iso8601": func(b []byte, r *record) []byte {
		return time.Now().AppendFormat(b, "2006-01-02T15:04:05-07:00")
	},
	"msec": func(b []byte, r *record) []byte { return appendSeconds(b, time.Now().UnixNano()) },
	"pid":  func(b []byte, r *record) []byte { return strconv.AppendInt(b, int64(pid), 10) },
	"proxy_protocol_addr": func(b []byte, r *record) []byte {
		if !r.pp.IsValid() {
			return b
		}
		return r.pp.Addr().AppendTo(b)
	},
	"proxy_protocol_port": func(b []byte, r *record) []byte {
		if !r.pp.IsValid() {
			return b
		}
		return strconv.AppendUint(b, uint64(r.pp.Port()), 10)
	},
	"realip_remote_addr": func(b []byte, r *record) []byte { return r.realPeer().Addr().AppendTo(b) },
	"realip_remote_port": func(b []byte, r *record) []byte {
		return strconv.AppendUint(b, uint64(r.realPeer().Port()), 10)
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

// appendTo evaluates t for the session r describes.
func (t template) appendTo(b []byte, r *record) []byte {
	for _, seg := range t {
		if seg.v == nil {
			b = append(b, seg.lit...)
		} else {
			b = seg.v(b, r)
		}
	}
	return b
}
