package proxy

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/batonproxy/baton/internal/sock"
	"github.com/batonproxy/baton/internal/tlshello"
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
	sent, received           int64          // bytes to and from the client
	upSent, upReceived       int64          // bytes to and from the upstream
	sessionTime, connectTime int64          // connectTime -1: not connected
	firstByteTime            int64          // $upstream_first_byte_time; -1: none
	upSessionTime            int64          // $upstream_session_time; -1: no upstream
	prior                    []int64        // times of the failed attempts before the last (upstream_* lists)
	limitStatus              uint8          // $limit_conn_status
	serverName               string         // $server_name: the server's first server_name
	unixPath                 string         // the unix: listener's path, for its clients ($remote_addr "unix:")
	ppDst                    netip.AddrPort // the PROXY header's destination
	tlv                      []byte         // the PROXY header's TLVs
	status                   int
	tls                      *tlsInfo // a terminated TLS session's ($ssl_*); nil for plain ones

	sv       *sessVars // "set" values, preread results; nil if none
	depth    uint8     // variables evaluating variables (maxDepth)
	nf       bool      // the variable just evaluated was "not found" (nginx's not_found: "-" in a default-escaped log)
	capSrc   []byte    // what the last regex matched against ($1..$9)
	caps     []int     // its submatch indexes
	capNames []string  // its groups' names (named captures)
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

// priorList appends what an $upstream_* list shows for each failed attempt
// before the last (nginx prints one value per attempt): v and ", ".
func (r *record) priorList(b []byte, v string) []byte {
	for range r.prior {
		b = append(append(b, v...), ", "...)
	}
	return b
}

// appendAddr appends a client's address as $remote_addr prints it: "unix:"
// for a client of a unix: listener (it has none).
func (r *record) appendAddr(b []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		if r.unixPath != "" {
			return append(b, "unix:"...)
		}
		return b
	}
	return a.Addr().AppendTo(b)
}

// appendPort appends a's port, nothing when a has none (a unix: client).
func appendPort(b []byte, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return b
	}
	return strconv.AppendUint(b, uint64(a.Port()), 10)
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
	"remote_addr": func(b []byte, r *record) []byte { return r.appendAddr(b, r.client) },
	"remote_port": func(b []byte, r *record) []byte { return appendPort(b, r.client) },
	"binary_remote_addr": func(b []byte, r *record) []byte {
		if !r.client.IsValid() {
			return r.appendAddr(b, r.client) // a unix: client: "unix:", as nginx's addr_text
		}
		if a := r.client.Addr(); a.Is4() {
			x := a.As4()
			return append(b, x[:]...)
		}
		x := r.client.Addr().As16()
		return append(b, x[:]...)
	},
	"server_addr": func(b []byte, r *record) []byte {
		if r.unixPath != "" {
			return append(append(b, "unix:"...), r.unixPath...)
		}
		return r.localAddr().Addr().AppendTo(b)
	},
	"server_port": func(b []byte, r *record) []byte {
		if r.unixPath != "" {
			return b
		}
		return strconv.AppendUint(b, uint64(r.localAddr().Port()), 10)
	},
	"protocol": func(b []byte, r *record) []byte {
		if r.udp {
			return append(b, "UDP"...)
		}
		return append(b, "TCP"...)
	},
	"upstream_addr": func(b []byte, r *record) []byte {
		if len(r.upstreamAddrs) == 0 {
			r.nf = true
		}
		return append(b, r.upstreamAddrs...)
	},
	"bytes_sent":     func(b []byte, r *record) []byte { return strconv.AppendInt(b, r.sent, 10) },
	"bytes_received": func(b []byte, r *record) []byte { return strconv.AppendInt(b, r.received, 10) },
	"upstream_bytes_sent": func(b []byte, r *record) []byte {
		if len(r.upstreamAddrs) == 0 {
			r.nf = true
			return b
		}
		return strconv.AppendInt(r.priorList(b, "0"), r.upSent, 10)
	},
	"upstream_bytes_received": func(b []byte, r *record) []byte {
		if len(r.upstreamAddrs) == 0 {
			r.nf = true
			return b
		}
		return strconv.AppendInt(r.priorList(b, "0"), r.upReceived, 10)
	},
	"session_time": func(b []byte, r *record) []byte {
		return appendSeconds(b, r.sessionTime)
	},
	"upstream_connect_time": func(b []byte, r *record) []byte {
		if len(r.upstreamAddrs) == 0 {
			r.nf = true
			return b
		}
		b = r.priorList(b, "-")
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
			r.nf = true
			return b
		}
		return r.pp.Addr().AppendTo(b)
	},
	"proxy_protocol_port": func(b []byte, r *record) []byte {
		if !r.pp.IsValid() {
			r.nf = true
			return b
		}
		return strconv.AppendUint(b, uint64(r.pp.Port()), 10)
	},
	"limit_conn_status": func(b []byte, r *record) []byte {
		if r.limitStatus == limitNone {
			r.nf = true
			return b
		}
		return append(b, [...]string{"", "PASSED", "REJECTED", "REJECTED_DRY_RUN"}[r.limitStatus]...)
	},
	"server_name":   func(b []byte, r *record) []byte { return append(b, r.serverName...) },
	"hostname":      func(b []byte, r *record) []byte { return append(b, hostname...) },
	"nginx_version": func(b []byte, r *record) []byte { return append(b, nginxVersion...) },
	"upstream_first_byte_time": func(b []byte, r *record) []byte {
		if len(r.upstreamAddrs) == 0 {
			r.nf = true
			return b
		}
		b = r.priorList(b, "-")
		if r.firstByteTime < 0 {
			return append(b, '-')
		}
		return appendSeconds(b, r.firstByteTime)
	},
	"upstream_session_time": func(b []byte, r *record) []byte {
		if len(r.upstreamAddrs) == 0 {
			r.nf = true
			return b
		}
		for _, t := range r.prior {
			b = append(appendSeconds(b, t), ", "...)
		}
		if r.upSessionTime < 0 {
			return append(b, '-')
		}
		return appendSeconds(b, r.upSessionTime)
	},
	"ssl_preread_server_name": func(b []byte, r *record) []byte {
		if r.sv == nil || !r.sv.prereadRan {
			r.nf = true
			return b
		}
		return append(b, r.sv.sni...)
	},
	"ssl_preread_alpn_protocols": func(b []byte, r *record) []byte {
		if r.sv == nil || !r.sv.prereadRan {
			r.nf = true
			return b
		}
		return append(b, r.sv.alpn...)
	},
	"ssl_preread_protocol": func(b []byte, r *record) []byte {
		if r.sv == nil || !r.sv.prereadRan {
			r.nf = true
			return b
		}
		return append(b, r.sv.proto...)
	},
	"proxy_protocol_server_addr": func(b []byte, r *record) []byte {
		if !r.ppDst.IsValid() {
			r.nf = true
			return b
		}
		return r.ppDst.Addr().AppendTo(b)
	},
	"proxy_protocol_server_port": func(b []byte, r *record) []byte {
		if !r.ppDst.IsValid() {
			r.nf = true
			return b
		}
		return strconv.AppendUint(b, uint64(r.ppDst.Port()), 10)
	},
	"realip_remote_addr": func(b []byte, r *record) []byte { return r.appendAddr(b, r.realPeer()) },
	"realip_remote_port": func(b []byte, r *record) []byte { return appendPort(b, r.realPeer()) },
}

// nginxVersion is $nginx_version: the nginx release whose stream
// behaviour baton follows (nginx-tests of July 2026).
const nginxVersion = NginxVersion

// NginxVersion is the nginx release whose stream behaviour baton follows:
// $nginx_version, and what the start-up line names.
const NginxVersion = "1.31.4"

// hostname is $hostname: the machine's name, lower-cased as nginx's.
var hostname = func() string {
	h, _ := os.Hostname()
	return strings.ToLower(h)
}()

// appendSeconds prints d nanoseconds as nginx prints times: seconds with
// millisecond resolution ("0.123").
func appendSeconds(b []byte, d int64) []byte {
	ms := d / int64(time.Millisecond)
	b = strconv.AppendInt(b, ms/1000, 10)
	b = append(b, '.')
	return append(b, byte('0'+ms%1000/100), byte('0'+ms%100/10), byte('0'+ms%10))
}

// varTable is the variable namespace of one configuration: nginx's
// built-in stream variables and those the config defines ("set", map, geo,
// split_clients). Names are case-insensitive, as nginx's.
type varTable struct {
	defs  map[string]*varDef
	slots int // "set" variables: the length of sessVars.set
}

// varDef is one variable. A "set" variable reads its session's slot once
// set, and get (a map's, say) before that or nothing.
type varDef struct {
	get        variable
	slot       int  // a "set" variable's slot in sessVars.set; -1 if none
	changeable bool // "set", map, geo, split_clients may (re)define it
}

// sessVars is what a session holds for variables beyond its record's
// facts: "set" values and what ssl_preread found. nil for a server that
// needs none, so that plain proxying pays nothing.
type sessVars struct {
	set              [][]byte         // by varDef.slot; nil: not set
	sni, alpn, proto []byte           // $ssl_preread_server_name, _alpn_protocols, _protocol
	prereadDone      bool             // the ClientHello was parsed (or found not to be one)
	hello            *tlshello.Parser // while prereading
	helloFound       bool             // a whole ClientHello with a server name: it may choose a virtual server
	prereadRan       bool             // ssl_preread has a context (nginx's): its variables are found, empty or not

	// The captures of the server_name regex that chose the virtual server
	// ($1..$9 and named), the session's from then on.
	capSrc   []byte
	caps     []int
	capNames []string
}

// builtinVars holds nginx's built-in variables only: what a configuration
// that defines none compiles against.
var builtinVars = newVarTable()

func newVarTable() *varTable {
	vt := &varTable{defs: make(map[string]*varDef, len(variables)+8)}
	for name, v := range variables {
		vt.defs[name] = &varDef{get: v, slot: -1}
	}
	for name, v := range tlsVars {
		vt.defs[name] = &varDef{get: func(b []byte, r *record) []byte {
			if r.tls == nil {
				r.nf = true
				return b
			}
			return v(b, r.tls)
		}, slot: -1}
	}
	return vt
}

// define makes name a variable computed by get (map, geo, split_clients);
// a later definition replaces an earlier one, as nginx's.
func (vt *varTable) define(name string, get variable) error {
	name = strings.ToLower(name)
	d := vt.defs[name]
	switch {
	case d == nil:
		vt.defs[name] = &varDef{get: get, slot: -1, changeable: true}
	case !d.changeable:
		return fmt.Errorf(`the duplicate "%s" variable`, name)
	default:
		d.get = get
	}
	return nil
}

// settable returns the slot of the "set" variable name, making it.
func (vt *varTable) settable(name string) (int, error) {
	name = strings.ToLower(name)
	d := vt.defs[name]
	switch {
	case d == nil:
		d = &varDef{slot: -1, changeable: true}
		vt.defs[name] = d
	case !d.changeable:
		return 0, fmt.Errorf(`the duplicate "%s" variable`, name)
	}
	if d.slot < 0 {
		d.slot = vt.slots
		vt.slots++
	}
	return d.slot, nil
}

// maxDepth bounds variables that evaluate variables (a map whose source is
// another map's variable): a cycle ends there, empty, instead of
// overflowing the stack.
const maxDepth = 32

// value is name's variable for a template segment.
func (d *varDef) value() variable {
	if d.slot < 0 {
		if d.changeable { // map, geo, split_clients: read get when evaluated
			return func(b []byte, r *record) []byte {
				if d.get == nil || r.depth >= maxDepth {
					return b
				}
				r.depth++
				b = d.get(b, r)
				r.depth--
				return b
			}
		}
		return d.get
	}
	slot := d.slot
	return func(b []byte, r *record) []byte {
		if r.sv != nil && r.sv.set[slot] != nil {
			return append(b, r.sv.set[slot]...)
		}
		if d.get == nil || r.depth >= maxDepth {
			r.nf = true
			return b
		}
		r.depth++
		b = d.get(b, r)
		r.depth--
		return b
	}
}

// compileTemplate parses text against the built-in variables only.
func compileTemplate(text string) (template, error) { return builtinVars.compile(text) }

// compile parses text; an unknown variable is an error worded as nginx's
// ("unknown "foo" variable"). $1..$9 are the captures of the last regex
// that matched (a map's).
func (vt *varTable) compile(text string) (template, error) {
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
		} else if len(text) > 0 && text[0] >= '1' && text[0] <= '9' {
			name, text = text[:1], text[1:]
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
		if n, err := strconv.Atoi(name); err == nil && n >= 0 {
			t = append(t, segment{v: captureVar(n)})
			continue
		}
		d, ok := vt.defs[strings.ToLower(name)]
		if !ok {
			v, ok := vt.prefixed(strings.ToLower(name))
			if !ok {
				return nil, fmt.Errorf(`unknown "%s" variable`, name)
			}
			t = append(t, segment{v: v})
			continue
		}
		t = append(t, segment{v: d.value()})
	}
	return t, nil
}

// varNames lists the lower-cased names of the variables text uses.
func varNames(text string) []string {
	var names []string
	for {
		i := strings.IndexByte(text, '$')
		if i < 0 {
			return names
		}
		text = text[i+1:]
		if strings.HasPrefix(text, "{") {
			if j := strings.IndexByte(text, '}'); j > 0 {
				names = append(names, strings.ToLower(text[1:j]))
				text = text[j+1:]
			}
			continue
		}
		j := 0
		for j < len(text) && isVarChar(text[j]) {
			j++
		}
		names = append(names, strings.ToLower(text[:j]))
		text = text[j:]
	}
}

// captureVar is $n: the n-th capture of the last regex that matched.
func captureVar(n int) variable {
	return func(b []byte, r *record) []byte {
		if 2*n+1 >= len(r.caps) || r.caps[2*n] < 0 {
			return b
		}
		return append(b, r.capSrc[r.caps[2*n]:r.caps[2*n+1]]...)
	}
}

// prefixed returns the variable of a name in one of nginx's prefix
// families, if it is one.
func (vt *varTable) prefixed(name string) (variable, bool) {
	if rest, ok := strings.CutPrefix(name, "proxy_protocol_tlv_"); ok {
		return tlvVar(rest)
	}
	return nil, false
}

// PROXY protocol v2 TLV types, by the names nginx gives them.
var tlvNames = map[string]int{"alpn": 0x01, "authority": 0x02, "unique_id": 0x05, "ssl": 0x20, "netns": 0x30}

// ... and those of the sub-TLVs of the SSL TLV (0x20), after "ssl_".
var tlvSSLNames = map[string]int{"version": 0x21, "cn": 0x22, "cipher": 0x23, "sig_alg": 0x24, "key_alg": 0x25}

// tlvVar is $proxy_protocol_tlv_NAME, as nginx's ngx_proxy_protocol_get_tlv:
// NAME is a type's name or 0xHEX, "ssl_" and a name of the SSL TLV's own
// (ssl_verify: its verify field, in decimal).
func tlvVar(name string) (variable, bool) {
	ssl := false
	names := tlvNames
	if rest, ok := strings.CutPrefix(name, "ssl_"); ok {
		ssl, name, names = true, rest, tlvSSLNames
	}
	typ := -1
	switch {
	case ssl && name == "verify":
		typ = -2
	case strings.HasPrefix(name, "0x"):
		n, err := strconv.ParseUint(name[2:], 16, 64)
		if err != nil || name == "0x" {
			return func(b []byte, r *record) []byte { return b }, true // nginx: "invalid PROXY protocol TLV" at run time
		}
		typ = int(min(n, 0x100)) // beyond a byte: no TLV has it
	default:
		t, ok := names[name]
		if !ok {
			// nginx accepts the name and finds nothing at run time
			// ("unknown PROXY protocol TLV"): empty.
			return func(b []byte, r *record) []byte { return b }, true
		}
		typ = t
	}
	return func(b []byte, r *record) []byte {
		tlvs := r.tlv
		if ssl {
			v, ok := findTLV(tlvs, 0x20)
			if !ok || len(v) < 5 {
				return b
			}
			if typ == -2 {
				return strconv.AppendUint(b, uint64(v[1])<<24|uint64(v[2])<<16|uint64(v[3])<<8|uint64(v[4]), 10)
			}
			tlvs = v[5:]
		}
		v, ok := findTLV(tlvs, typ)
		if !ok {
			r.nf = true
		}
		return append(b, v...)
	}, true
}

// findTLV returns the value of the first TLV of type typ in raw.
func findTLV(raw []byte, typ int) ([]byte, bool) {
	for len(raw) >= 3 {
		n := int(raw[1])<<8 | int(raw[2])
		if len(raw) < 3+n {
			return nil, false
		}
		if int(raw[0]) == typ {
			return raw[3 : 3+n], true
		}
		raw = raw[3+n:]
	}
	return nil, false
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
