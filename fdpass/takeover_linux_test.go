package fdpass

import (
	"errors"
	"hash/crc32"
	"io"
	"net"
	"os"
	"slices"
	"testing"
)

// parentScript plays the old process by hand against Takeover.
type parentScript struct {
	t *testing.T
	peer
}

// hello does HELLO .. READY with no listeners.
func (p *parentScript) hello() {
	p.t.Helper()
	if _, err := p.expect(TypeHello); err != nil {
		p.t.Fatal(err)
	}
	var e Encoder
	e.Uint64(1)
	e.Uint32(1)
	p.send(TypeHelloOK, &e)
	e = Encoder{}
	e.Bool(true)
	e.Uint16(0)
	p.send(TypeListeners, &e)
	if _, err := p.expect(TypeReady); err != nil {
		p.t.Fatal(err)
	}
}

// batch sends BATCH for flows, then DATA for each state, then BATCH_END;
// crcDelta spoils the CRC and extra lengthens the last DATA.
func (p *parentScript) batch(id uint64, flows []*flow, crcDelta uint32, extra []byte, end bool) {
	p.t.Helper()
	var e Encoder
	e.Uint64(id)
	e.Uint16(uint16(len(flows)))
	var files []*os.File
	crc := uint32(0)
	for _, f := range flows {
		e.Uint64(f.id)
		e.Uint8(2)
		for _, c := range []*net.TCPConn{f.proxyC, f.proxyU} {
			d, err := Dup(c, "conn")
			if err != nil {
				p.t.Fatal(err)
			}
			e.FD(len(files))
			files = append(files, d)
		}
		e.Uint32(uint32(len(f.state)))
		crc = crc32.Update(crc, castagnoli, f.state)
	}
	err := p.send(TypeBatch, &e, files...)
	closeAll(files)
	if err != nil {
		p.t.Fatal(err)
	}
	for i, f := range flows {
		e = Encoder{}
		e.Uint64(id)
		e.Uint64(f.id)
		e.Uint32(0)
		if i == len(flows)-1 {
			e.Bytes(append(slices.Clip(f.state), extra...))
		} else {
			e.Bytes(f.state)
		}
		p.send(TypeData, &e)
	}
	if end {
		e = Encoder{}
		e.Uint64(id)
		e.Uint16(uint16(len(flows)))
		e.Uint32(crc + crcDelta)
		p.send(TypeBatchEnd, &e)
	}
}

func TestTakeoverRefusesBadBatches(t *testing.T) {
	tests := []struct {
		name     string
		crcDelta uint32
		extra    []byte
		end      bool // send BATCH_END; without it the parent dies mid-batch
		want     error
	}{
		{name: "bad crc", crcDelta: 1, end: true, want: ErrMalformed},
		{name: "state too long", extra: []byte("x"), end: true, want: ErrProtocol},
		{name: "parent dies mid-batch", want: ErrParentGone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := baseline(t)
			w := newWorld(t, 0)
			for id := range uint64(6) {
				w.addFlow(id+1, 10+int(id))
			}
			parent, end := handoffChannel(t)
			sink := newFakeSink(t)
			done := make(chan error, 1)
			go func() { done <- Takeover(end, sink, TakeoverOptions{}) }()
			p := &parentScript{t: t, peer: peer{c: parent}}
			p.hello()
			// A good batch first: it must stay with the child whatever follows.
			p.batch(1, w.flows[:3], 0, nil, true)
			if _, err := p.expect(TypeAccepted); err != nil {
				t.Fatal(err)
			}
			p.batch(2, w.flows[3:], tt.crcDelta, tt.extra, tt.end)
			if tt.end {
				if _, err := p.expect(TypeAccepted); !errors.Is(err, ErrPeer) {
					t.Errorf("got %v, want the child's ERROR", err)
				}
			} else {
				parent.Close()
			}
			err := <-done
			if !errors.Is(err, tt.want) {
				t.Errorf("Takeover: %v, want %v", err, tt.want)
			}
			t.Logf("Takeover: %v", err)
			if sink.imports != 1 || !slices.Equal(sorted(sink.started), []uint64{1, 2, 3}) {
				t.Errorf("%d imports, started %v; want batch 1 only", sink.imports, sink.started)
			}
			// Batch 1's bytes arrive from the child (the test holds the old copies).
			for _, f := range w.flows[:3] {
				f.proxyC.Close()
				f.proxyU.Close()
			}
			checkMoved(t, w, []uint64{1, 2, 3})
			sink.close()
			parent.Close()
			end.Close()
			w.close()
			checkNoLeak(t, base)
		})
	}
}

// TestTakeoverDone checks Done runs before DONE_OK, and that its failure is an ERROR.
func TestTakeoverDone(t *testing.T) {
	for _, fail := range []bool{false, true} {
		parent, end := handoffChannel(t)
		sink := newFakeSink(t)
		done := make(chan error, 1)
		called := false
		go func() {
			done <- Takeover(end, sink, TakeoverOptions{Done: func() error {
				called = true
				if fail {
					return io.ErrShortWrite
				}
				return nil
			}})
		}()
		p := &parentScript{t: t, peer: peer{c: parent}}
		p.hello()
		p.send(TypeDone, nil)
		_, rerr := p.expect(TypeDoneOK)
		err := <-done
		if !called || (err == nil) == fail || (rerr == nil) == fail {
			t.Errorf("fail=%v: Done called %v, Takeover %v, parent got %v", fail, called, err, rerr)
		}
		parent.Close()
		end.Close()
	}
}
