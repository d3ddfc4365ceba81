package proxy

import (
	"encoding/binary"
	"net/netip"
)

// A session's state as it travels to a new process (fdpass.Conn.State):
// plain data, little-endian, versioned. Times are durations relative to the
// moment of the quiesce, never time.Time (HANDOFF.md P2).
const stateVersion = 2

// The phase a session is moved in.
const (
	phaseProxying   = 0
	phaseHeader     = 1 // reading the client's PROXY header: only the client socket moves
	phaseConnecting = 2 // a connect to the upstream is under way
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
}

type heldLimitState struct{ zone, key string }

type stateWriter struct{ b []byte }

func (w *stateWriter) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *stateWriter) i64(v int64)  { w.u64(uint64(v)) }
func (w *stateWriter) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}
func (w *stateWriter) bytes(p []byte) {
	w.b = binary.LittleEndian.AppendUint32(w.b, uint32(len(p)))
	w.b = append(w.b, p...)
}
func (w *stateWriter) str(s string) { w.bytes([]byte(s)) }
func (w *stateWriter) addr(a netip.AddrPort) {
	if !a.IsValid() {
		w.str("")
		return
	}
	w.str(a.String())
}

type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.err = errBadState
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}
func (r *stateReader) u64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(p)
}
func (r *stateReader) i64() int64 { return int64(r.u64()) }
func (r *stateReader) bool() bool {
	p := r.take(1)
	return p != nil && p[0] == 1
}
func (r *stateReader) bytes() []byte {
	p := r.take(4)
	if p == nil {
		return nil
	}
	return r.take(int(binary.LittleEndian.Uint32(p)))
}
func (r *stateReader) str() string { return string(r.bytes()) }
func (r *stateReader) addr() netip.AddrPort {
	s := r.str()
	if s == "" || r.err != nil {
		return netip.AddrPort{}
	}
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		r.err = errBadState
	}
	return a
}

func (m *movedState) encode() []byte {
	w := &stateWriter{b: make([]byte, 0, 256+len(m.c2uPend)+len(m.u2cPend))}
	w.b = append(w.b, stateVersion)
	w.u64(m.id)
	w.str(m.listener)
	w.addr(m.client)
	w.addr(m.peerAddr)
	w.addr(m.ppAddr)
	w.addr(m.upstream)
	w.str(m.upstreamAddrs)
	for _, f := range []bool{m.c2uEOF, m.c2uShut, m.u2cEOF, m.u2cShut} {
		w.bool(f)
	}
	for _, v := range []int64{m.c2uN, m.u2cN, m.ppOutLen, m.age, m.idle, m.connectTime} {
		w.i64(v)
	}
	w.u64(uint64(len(m.limits)))
	for _, l := range m.limits {
		w.str(l.zone)
		w.str(l.key)
	}
	w.bytes(m.c2uPend)
	w.bytes(m.u2cPend)
	w.b = append(w.b, m.phase)
	w.bytes(m.hdr)
	w.bytes(m.early)
	w.i64(m.tries)
	w.u64(uint64(len(m.tried)))
	for _, a := range m.tried {
		w.str(a)
	}
	w.i64(m.firstTryAge)
	w.i64(m.attemptAge)
	return w.b
}

func decodeState(b []byte) (*movedState, error) {
	if len(b) == 0 || b[0] != stateVersion {
		return nil, errBadState
	}
	r := &stateReader{b: b[1:]}
	m := &movedState{}
	m.id = r.u64()
	m.listener = r.str()
	m.client = r.addr()
	m.peerAddr = r.addr()
	m.ppAddr = r.addr()
	m.upstream = r.addr()
	m.upstreamAddrs = r.str()
	m.c2uEOF, m.c2uShut, m.u2cEOF, m.u2cShut = r.bool(), r.bool(), r.bool(), r.bool()
	m.c2uN, m.u2cN, m.ppOutLen = r.i64(), r.i64(), r.i64()
	m.age, m.idle, m.connectTime = r.i64(), r.i64(), r.i64()
	n := r.u64()
	if n > 64 {
		return nil, errBadState
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		m.limits = append(m.limits, heldLimitState{r.str(), r.str()})
	}
	m.c2uPend = append([]byte(nil), r.bytes()...)
	m.u2cPend = append([]byte(nil), r.bytes()...)
	if p := r.take(1); p != nil {
		m.phase = p[0]
	}
	m.hdr = append([]byte(nil), r.bytes()...)
	m.early = append([]byte(nil), r.bytes()...)
	m.tries = r.i64()
	nt := r.u64()
	if nt > 1<<16 {
		return nil, errBadState
	}
	for i := uint64(0); i < nt && r.err == nil; i++ {
		m.tried = append(m.tried, r.str())
	}
	m.firstTryAge, m.attemptAge = r.i64(), r.i64()
	if r.err != nil || len(r.b) != 0 || m.phase > phaseConnecting {
		return nil, errBadState
	}
	return m, nil
}
