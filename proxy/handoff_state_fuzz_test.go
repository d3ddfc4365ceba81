package proxy

import (
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
	return c
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
