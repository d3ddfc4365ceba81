package proxy

import (
	"math"
	"net/netip"

	"github.com/batonproxy/baton/fdpass"
)

// A session's state as it travels to a new process (fdpass.Conn.State):
// plain data, little-endian, versioned. Times are durations relative to the
// moment of the quiesce, never time.Time (HANDOFF.md P2).
const stateVersion = 2

// stateVersionRouted is version 2 followed by what routing adds (routedState):
// written only for a session that has any of it, so that a plain session
// still moves to a process that knows only version 2.
const stateVersionRouted = 3

// stateVersionRebalance is version 3 followed by the session's rebalance
// plan (movedPlan): written only for a session of an upstream with
// "rebalance", so that every other session still moves to a process that
// knows only version 3.
const stateVersionRebalance = 4

// stateVersionTLS is version 3, a flag and the rebalance plan if it has
// one, then the TLS record state and variables (movedTLS): written only for
// a terminated TLS session, which a process that knows only version 4
// refuses (the old process keeps it).
const stateVersionTLS = 5

// stateVersionUpTLS is version 5 whose TLS part may lack the client's and
// ends with the upstream's record state (empty without): written only for
// a session with TLS to its upstream (proxy_ssl), or in phase 6 (a TLS
// handshake not begun), which a process that knows only version 5 refuses
// (the old process keeps it).
const stateVersionUpTLS = 6

// The phase a session is moved in.
const (
	phaseProxying   = 0
	phaseHeader     = 1 // reading the client's PROXY header: only the client socket moves
	phaseConnecting = 2 // a connect to the upstream is under way
	phasePreread    = 3 // ssl_preread: reading the ClientHello into early (version 3)
	phaseReturning  = 4 // writing a "return" text; the rest is u2cPend (version 3)
	phaseResolving  = 5 // resolving proxy_pass's host name: routed again where it goes (version 3)
	phaseHandshake  = 6 // a TLS handshake not begun: it begins where it goes, with early first (version 6)
)

type movedState struct {
	id                       uint64
	listener                 string // the listener's key ("tcp/127.0.0.1:7000")
	client, peerAddr, ppAddr netip.AddrPort
	upstream                 netip.AddrPort
	upstreamAddrs            string
	c2uEOF, c2uShut          bool
	u2cEOF, u2cShut          bool
	c2uN, u2cN, ppOutLen     int64
	age, idle, connectTime   int64 // nanoseconds
	limits                   []heldLimitState
	c2uPend, u2cPend         []byte

	phase                   uint8
	hdr, early              []byte   // PROXY header bytes read so far; payload read with it
	tries                   int64    // upstream connects tried
	tried                   []string // their addresses
	firstTryAge, attemptAge int64    // since the first and the current connect began

	routed *routedState // version 3; nil for a plain session
	tls    *movedTLS    // version 5; nil but for a terminated TLS session
	upTLS  []byte       // version 6: the upstream's record state (tlsrec.State, encoded); nil without proxy_ssl
}

// routedState is what a session of a server with "set", "ssl_preread" or
// "proxy_pass $var" carries besides version 2's state.
type routedState struct {
	group            string   // what proxy_pass $var named (routes.find); "" for the server's own upstream
	sets             []string // "set" variables as name, value pairs
	sni, alpn, proto []byte
	prereadDone      bool
	ppDst            netip.AddrPort // the PROXY header's destination and TLVs
	ppTLV            []byte
	vhost            string // the server name that chose its virtual server

	// pace is each direction's pacing (proxy_upload_rate, then
	// proxy_download_rate): bytes read so far and how long ago pacing
	// began, so that the new process goes on with the same allowance.
	// rate 0: not paced.
	pace [2]pacedState

	// prior are the times of the attempts that failed before the current
	// one ($upstream_* list one value per attempt).
	prior []int64

	// rb is the session's rebalance plan; nil without one (version 3).
	rb *movedPlan
}

// movedPlan is a rebalance plan in transit: the key, and the session's turn
// and window end as durations from the export (when planned).
type movedPlan struct {
	key         []byte
	planned     bool
	atIn, endIn int64
	owner       string
}

type pacedState struct{ rate, got, age int64 }

// putPaced writes both directions' pacing; stateDecoder.paced reads it.
func putPaced(e *fdpass.Encoder, ps [2]pacedState) {
	for _, p := range ps {
		e.Uint64(uint64(p.rate))
		e.Uint64(uint64(p.got))
		e.Uint64(uint64(p.age))
	}
}

func (d *stateDecoder) paced() (ps [2]pacedState) {
	for i := range ps {
		ps[i] = pacedState{d.i64(), d.i64(), d.i64()}
	}
	return ps
}

// putLimits writes held limit_conn counts; stateDecoder.limits reads them.
func putLimits(e *fdpass.Encoder, ls []heldLimitState) {
	e.Uint64(uint64(len(ls)))
	for _, l := range ls {
		putStr(e, l.zone)
		putStr(e, l.key)
	}
}

func (d *stateDecoder) limits() (ls []heldLimitState) {
	for n := d.count(64); n > 0 && d.Err() == nil; n-- {
		ls = append(ls, heldLimitState{d.str(), d.str()})
	}
	return ls
}

type heldLimitState struct{ zone, key string }

// The states are written with fdpass's Encoder and read with its Decoder,
// the handoff protocol's own body format: little-endian integers, bools as
// one byte, and strings and byte strings with a u32 length (putStr, not the
// Encoder's u16-prefixed Text, as state version 2 has always been written).

// maxStateLen is the largest state written: what the protocol carries, or
// what an int holds.
const maxStateLen = min(fdpass.MaxState, math.MaxInt)

func putStr(e *fdpass.Encoder, s string) { e.Bytes([]byte(s)) }

// putAddr writes an address as text; the invalid address as "".
func putAddr(e *fdpass.Encoder, a netip.AddrPort) {
	if !a.IsValid() {
		putStr(e, "")
		return
	}
	putStr(e, a.String())
}

// stateDecoder reads a state; bad records a value the Decoder cannot judge
// (an address that does not parse, a count out of bounds).
type stateDecoder struct {
	*fdpass.Decoder
	bad bool
}

func newStateDecoder(b []byte) *stateDecoder { return &stateDecoder{Decoder: fdpass.NewDecoder(b, 0)} }

func (d *stateDecoder) i64() int64  { return int64(d.Uint64()) }
func (d *stateDecoder) str() string { return string(d.Bytes()) }

// bytes returns a copy of the next byte string (Bytes aliases the input).
func (d *stateDecoder) bytes() []byte { return append([]byte(nil), d.Bytes()...) }

func (d *stateDecoder) addr() netip.AddrPort {
	s := d.str()
	if s == "" || d.Err() != nil {
		return netip.AddrPort{}
	}
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		d.bad = true
	}
	return a
}

// count reads a u64 count of following items, at most max.
func (d *stateDecoder) count(max uint64) int {
	n := d.Uint64()
	if n > max {
		d.bad = true
		return 0
	}
	return int(n)
}

// done reports whether the whole input was read with no error.
func (d *stateDecoder) done() bool { return !d.bad && d.Finish() == nil }

// body returns what e wrote, or nil if it failed (a state over 4 GiB: the
// new process rejects it as malformed, and the session goes on here).
func body(e *fdpass.Encoder) []byte {
	b, err := e.Body()
	if err != nil {
		return nil
	}
	return b
}

func (m *movedState) encode() []byte {
	e := fdpass.NewEncoder(maxStateLen)
	e.Uint8(stateVersion)
	e.Uint64(m.id)
	putStr(e, m.listener)
	putAddr(e, m.client)
	putAddr(e, m.peerAddr)
	putAddr(e, m.ppAddr)
	putAddr(e, m.upstream)
	putStr(e, m.upstreamAddrs)
	for _, f := range []bool{m.c2uEOF, m.c2uShut, m.u2cEOF, m.u2cShut} {
		e.Bool(f)
	}
	for _, v := range []int64{m.c2uN, m.u2cN, m.ppOutLen, m.age, m.idle, m.connectTime} {
		e.Uint64(uint64(v))
	}
	putLimits(e, m.limits)
	e.Bytes(m.c2uPend)
	e.Bytes(m.u2cPend)
	e.Uint8(m.phase)
	e.Bytes(m.hdr)
	e.Bytes(m.early)
	e.Uint64(uint64(m.tries))
	e.Uint64(uint64(len(m.tried)))
	for _, a := range m.tried {
		putStr(e, a)
	}
	e.Uint64(uint64(m.firstTryAge))
	e.Uint64(uint64(m.attemptAge))
	r := m.routed
	v6 := m.upTLS != nil || m.phase == phaseHandshake
	hasTLS := m.tls != nil || v6
	if r == nil && hasTLS {
		r = &routedState{}
	}
	if r != nil {
		putStr(e, r.group)
		e.Uint64(uint64(len(r.sets)))
		for _, v := range r.sets {
			putStr(e, v)
		}
		e.Bytes(r.sni)
		e.Bytes(r.alpn)
		e.Bytes(r.proto)
		e.Bool(r.prereadDone)
		putAddr(e, r.ppDst)
		e.Bytes(r.ppTLV)
		putStr(e, r.vhost)
		putPaced(e, r.pace)
		e.Uint64(uint64(len(r.prior)))
		for _, t := range r.prior {
			e.Uint64(uint64(t))
		}
		if hasTLS {
			e.Bool(r.rb != nil)
		}
		if p := r.rb; p != nil {
			e.Bytes(p.key)
			e.Bool(p.planned)
			e.Uint64(uint64(p.atIn))
			e.Uint64(uint64(p.endIn))
			putStr(e, p.owner)
		}
	}
	if v6 {
		e.Bool(m.tls != nil)
	}
	if m.tls != nil {
		putTLS(e, m.tls)
	}
	if v6 {
		e.Bytes(m.upTLS)
	}
	b := body(e)
	switch {
	case len(b) == 0 || r == nil:
	case v6:
		b[0] = stateVersionUpTLS
	case m.tls != nil:
		b[0] = stateVersionTLS
	case r.rb != nil:
		b[0] = stateVersionRebalance
	default:
		b[0] = stateVersionRouted
	}
	return b
}

func decodeState(b []byte) (*movedState, error) {
	if len(b) == 0 || b[0] < stateVersion || b[0] > stateVersionUpTLS {
		return nil, errBadState
	}
	d := newStateDecoder(b[1:])
	m := &movedState{}
	m.id = d.Uint64()
	m.listener = d.str()
	m.client = d.addr()
	m.peerAddr = d.addr()
	m.ppAddr = d.addr()
	m.upstream = d.addr()
	m.upstreamAddrs = d.str()
	m.c2uEOF, m.c2uShut, m.u2cEOF, m.u2cShut = d.Bool(), d.Bool(), d.Bool(), d.Bool()
	m.c2uN, m.u2cN, m.ppOutLen = d.i64(), d.i64(), d.i64()
	m.age, m.idle, m.connectTime = d.i64(), d.i64(), d.i64()
	m.limits = d.limits()
	m.c2uPend = d.bytes()
	m.u2cPend = d.bytes()
	m.phase = d.Uint8()
	m.hdr = d.bytes()
	m.early = d.bytes()
	m.tries = d.i64()
	for n := d.count(1 << 16); n > 0 && d.Err() == nil; n-- {
		m.tried = append(m.tried, d.str())
	}
	m.firstTryAge, m.attemptAge = d.i64(), d.i64()
	maxPhase := uint8(phaseConnecting)
	if b[0] >= stateVersionRouted {
		maxPhase = phaseResolving
		r := &routedState{group: d.str()}
		n := d.count(1 << 16)
		if n%2 != 0 {
			d.bad = true
		}
		for ; n > 0 && d.Err() == nil; n-- {
			r.sets = append(r.sets, d.str())
		}
		r.sni, r.alpn, r.proto = d.bytes(), d.bytes(), d.bytes()
		r.prereadDone = d.Bool()
		r.ppDst = d.addr()
		r.ppTLV = d.bytes()
		r.vhost = d.str()
		r.pace = d.paced()
		for n := d.count(1 << 16); n > 0 && d.Err() == nil; n-- {
			r.prior = append(r.prior, d.i64())
		}
		if b[0] == stateVersionRebalance || b[0] >= stateVersionTLS && d.Bool() {
			r.rb = &movedPlan{key: d.bytes(), planned: d.Bool(), atIn: d.i64(), endIn: d.i64(), owner: d.str()}
		}
		m.routed = r
		if b[0] == stateVersionTLS || b[0] == stateVersionUpTLS && d.Bool() {
			m.tls = d.movedTLS()
		}
		if b[0] == stateVersionUpTLS {
			m.upTLS = d.bytes()
			maxPhase = phaseHandshake
		}
	}
	if !d.done() || m.phase > maxPhase {
		return nil, errBadState
	}
	return m, nil
}
