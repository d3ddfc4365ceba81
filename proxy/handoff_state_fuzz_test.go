package proxy

import (
	"encoding/hex"
	"net/netip"
	"reflect"
	"testing"
)

// The handoff state decoders parse bytes another process wrote: whatever
// they are given, they return an error or a state, never panic, and a
// state they return encodes to bytes that decode to the same state.

func FuzzDecodeState(f *testing.F) {
	f.Add((&movedState{}).encode())
	f.Add((&movedState{
		id: 7, listener: "tcp/127.0.0.1:7000",
		client: netip.MustParseAddrPort("192.0.2.1:5555"), peerAddr: netip.MustParseAddrPort("127.0.0.1:4444"),
		ppAddr: netip.MustParseAddrPort("[2001:db8::1]:80"), upstream: netip.MustParseAddrPort("127.0.0.1:8001"),
		upstreamAddrs: "127.0.0.1:8000, 127.0.0.1:8001", c2uEOF: true, u2cShut: true,
		c2uN: 10, u2cN: -1, ppOutLen: 3, age: 1e9, idle: 5, connectTime: -1,
		limits:  []heldLimitState{{"z", "192.0.2.1"}},
		c2uPend: []byte("pending"), u2cPend: []byte{0, 1, 2},
		phase: phaseConnecting, hdr: []byte("PROXY "), early: []byte("x"),
		tries: 2, tried: []string{"127.0.0.1:8000"}, firstTryAge: 9, attemptAge: 4,
	}).encode())
	f.Add([]byte{stateVersion})
	f.Add(routedGolden().encode())
	for _, m := range tlsGoldens() {
		f.Add(m.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeState(b)
		if err != nil {
			return
		}
		again, err := decodeState(m.encode())
		if err != nil {
			t.Fatalf("a decoded state does not decode once encoded: %v\n%+v", err, m)
		}
		if !reflect.DeepEqual(normState(m), normState(again)) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", m, again)
		}
	})
}

// normState makes empty and nil byte slices alike, as the encoding does.
func normState(m *movedState) movedState {
	c := *m
	for _, p := range []*[]byte{&c.c2uPend, &c.u2cPend, &c.hdr, &c.early} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	if r := c.routed; r != nil {
		rc := *r
		for _, p := range []*[]byte{&rc.sni, &rc.alpn, &rc.proto, &rc.ppTLV} {
			if len(*p) == 0 {
				*p = nil
			}
		}
		c.routed = &rc
	}
	return c
}

// routedGolden is a session with everything routing adds (state version 3).
func routedGolden() *movedState {
	m, _ := goldenStates()
	m.phase = phasePreread
	m.routed = &routedState{group: "db", sets: []string{"backend", "db"}, sni: []byte("db.example.com"),
		alpn: []byte("h2,http/1.1"), proto: []byte("TLSv1.3"), prereadDone: true,
		ppDst: netip.MustParseAddrPort("192.0.2.2:5678"), ppTLV: []byte{1, 0, 1, 'x'}, vhost: "db.example.com",
		pace: [2]pacedState{{rate: 1000, got: 5000, age: 4e9}, {}}, prior: []int64{2e6, 3e6}}
	return m
}

// tlsGoldens are sessions with TLS: terminated (version 5), originated
// (version 6), and both (version 6).
func tlsGoldens() []*movedState {
	term := &movedTLS{rec: []byte("client record state"), serverName: "a.test", alpn: "h2", verify: "NONE",
		resumed: true, curve: 29, curves: []uint16{29, 23}, suites: []uint16{0x1301}, certs: [][]byte{[]byte("der")}}
	var ms []*movedState
	for _, c := range []struct {
		tls *movedTLS
		up  []byte
	}{{term, nil}, {nil, []byte("upstream record state")}, {term, []byte("upstream record state")}} {
		m, _ := goldenStates()
		m.tls, m.upTLS = c.tls, c.up
		ms = append(ms, m)
	}
	return ms
}

// A TLS session's record states come back whole: version 5 for a
// terminated one (which a process that knows 5 reads), 6 with the
// upstream's.
func TestTLSStateRoundTrip(t *testing.T) {
	for i, m := range tlsGoldens() {
		b := m.encode()
		want := byte(stateVersionUpTLS)
		if m.upTLS == nil {
			want = stateVersionTLS
		}
		if b[0] != want {
			t.Fatalf("#%d: version %d, want %d", i, b[0], want)
		}
		got, err := decodeState(b)
		if err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if !reflect.DeepEqual(got.tls, m.tls) || !reflect.DeepEqual(got.upTLS, m.upTLS) {
			t.Fatalf("#%d: decoded %+v %q, want %+v %q", i, got.tls, got.upTLS, m.tls, m.upTLS)
		}
		// Read as version 5, a version 6 body is refused, not misread.
		if b[0] == stateVersionUpTLS {
			b[0] = stateVersionTLS
			if _, err := decodeState(b); err == nil {
				t.Fatalf("#%d: version 6 read as 5", i)
			}
		}
	}
}

// A session that carries routing travels as version 3 and comes back whole;
// one that does not is still written as version 2, which an older baton
// reads (TestStateFormatUnchanged pins its bytes).
func TestRoutedStateRoundTrip(t *testing.T) {
	m := routedGolden()
	b := m.encode()
	if b[0] != stateVersionRouted {
		t.Fatalf("version %d, want %d", b[0], stateVersionRouted)
	}
	got, err := decodeState(b)
	if err != nil || !reflect.DeepEqual(normState(got), normState(m)) {
		t.Fatalf("decoded %+v (%v), want %+v", got, err, m)
	}
	plain, _ := goldenStates()
	if b := plain.encode(); b[0] != stateVersion {
		t.Fatalf("a plain session is written as version %d", b[0])
	}
	// A version 2 state cannot say it is prereading.
	plain.phase = phasePreread
	v2 := plain.encode()
	if _, err := decodeState(v2); err == nil {
		t.Fatal("a version 2 state with phase 3 was accepted")
	}
}

func FuzzDecodeUDPState(f *testing.F) {
	f.Add((&udpMovedState{
		id: 9, listener: "udp/0.0.0.0:53",
		client: netip.MustParseAddrPort("192.0.2.1:5353"), local: netip.MustParseAddrPort("10.0.0.1:53"),
		dst: netip.MustParseAddr("10.0.0.1"), ifidx: 2, upstream: netip.MustParseAddrPort("127.0.0.1:5300"),
		upstreamAddrs: "127.0.0.1:5300", requests: 3, responses: 2, received: 90, sent: 200, upSent: 90,
		age: 1e9, idle: 1e6, connectTime: 20, detached: true, pend: [][]byte{[]byte("q1"), {}},
	}).encode())
	f.Add((&udpMovedState{client: netip.MustParseAddrPort("[::1]:1"), upstream: netip.MustParseAddrPort("[::1]:2")}).encode())
	f.Add([]byte{udpStateVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeUDPState(b)
		if err != nil {
			return
		}
		again, err := decodeUDPState(m.encode())
		if err != nil {
			t.Fatalf("a decoded state does not decode once encoded: %v\n%+v", err, m)
		}
		if !reflect.DeepEqual(normUDPState(m), normUDPState(again)) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", m, again)
		}
	})
}

func normUDPState(m *udpMovedState) udpMovedState {
	c := *m
	for i, d := range c.pend {
		if len(d) == 0 {
			c.pend[i] = nil
		}
	}
	return c
}

// goldenStates are a TCP and a UDP session state with every field set.
func goldenStates() (*movedState, *udpMovedState) {
	m := &movedState{id: 7, listener: "tcp/127.0.0.1:7000", client: netip.MustParseAddrPort("127.0.0.1:5"),
		peerAddr: netip.MustParseAddrPort("[::1]:6"), upstream: netip.MustParseAddrPort("10.0.0.1:80"), upstreamAddrs: "10.0.0.1:80",
		c2uEOF: true, u2cShut: true, c2uN: 100, u2cN: -3, ppOutLen: 9, age: 1e9, idle: 5, connectTime: 77,
		limits: []heldLimitState{{"z", "k"}}, c2uPend: []byte("ab"), u2cPend: nil, phase: phaseConnecting,
		hdr: []byte("PROXY"), early: []byte{0, 1}, tries: 2, tried: []string{"a", "b"}, firstTryAge: 11, attemptAge: 12}
	u := &udpMovedState{id: 9, listener: "udp/127.0.0.1:53", client: netip.MustParseAddrPort("127.0.0.1:5"), local: netip.MustParseAddrPort("127.0.0.1:53"),
		dst: netip.MustParseAddr("127.0.0.1"), ifidx: 3, upstream: netip.MustParseAddrPort("10.0.0.1:53"), upstreamAddrs: "10.0.0.1:53",
		requests: 4, responses: 3, received: 100, sent: 90, upSent: 100, age: 1e9, idle: 2, connectTime: 1, detached: true, pend: [][]byte{[]byte("q"), nil}}
	return m, u
}

// TestStateFormatUnchanged: the states travel to a new process, which may be
// a newer baton: the bytes an earlier baton wrote for these states (state
// versions 2 and 0x81) still decode to them, and are what this one writes.
func TestStateFormatUnchanged(t *testing.T) {
	const tcpHex = "020700000000000000120000007463702f3132372e302e302e313a373030300b" +
		"0000003132372e302e302e313a35070000005b3a3a315d3a36000000000b0000" +
		"0031302e302e302e313a38300b00000031302e302e302e313a38300100000164" +
		"00000000000000fdffffffffffffff090000000000000000ca9a3b0000000005" +
		"000000000000004d000000000000000100000000000000010000007a01000000" +
		"6b02000000616200000000020500000050524f58590200000000010200000000" +
		"0000000200000000000000010000006101000000620b000000000000000c0000" +
		"0000000000"
	const udpHex = "810900000000000000100000007564702f3132372e302e302e313a35330b0000" +
		"003132372e302e302e313a350c0000003132372e302e302e313a353309000000" +
		"3132372e302e302e3103000000000000000b00000031302e302e302e313a3533" +
		"0b00000031302e302e302e313a35330400000000000000030000000000000064" +
		"000000000000005a00000000000000640000000000000000ca9a3b0000000002" +
		"0000000000000001000000000000000102000000000000000100000071000000" +
		"00"
	m, u := goldenStates()
	if got := hex.EncodeToString(m.encode()); got != tcpHex {
		t.Errorf("TCP state written as\n%s\nwant\n%s", got, tcpHex)
	}
	if got := hex.EncodeToString(u.encode()); got != udpHex {
		t.Errorf("UDP state written as\n%s\nwant\n%s", got, udpHex)
	}
	tb, _ := hex.DecodeString(tcpHex)
	if got, err := decodeState(tb); err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("TCP state read as %+v, %v", got, err)
	}
	ub, _ := hex.DecodeString(udpHex)
	if got, err := decodeUDPState(ub); err != nil || !reflect.DeepEqual(got, u) {
		t.Errorf("UDP state read as %+v, %v", got, err)
	}
}

// A paced UDP session travels as state 0x82 and comes back whole; an
// unpaced one is still 0x81 (TestStateFormatUnchanged pins its bytes).
func TestPacedUDPStateRoundTrip(t *testing.T) {
	_, u := goldenStates()
	u.pace = [2]pacedState{{rate: 100, got: 300, age: 2e9}, {rate: 200, got: 50, age: 2e9}}
	u.limits = []heldLimitState{{"z", "\x7f\x00\x00\x01"}}
	b := u.encode()
	if b[0] != udpStateVersionPaced || !udpStateKind(b) {
		t.Fatalf("version %#x", b[0])
	}
	got, err := decodeUDPState(b)
	if err != nil || !reflect.DeepEqual(got, u) {
		t.Fatalf("decoded %+v (%v), want %+v", got, err, u)
	}
}
