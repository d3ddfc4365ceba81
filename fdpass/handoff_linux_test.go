package fdpass

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// baseline returns the descriptor count once the runtime's poller exists.
func baseline(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return fdCount(t)
}

// upgradeInProcess runs Upgrade against Takeover in a goroutine over a fresh
// socketpair and returns what both said.
func upgradeInProcess(t *testing.T, src Source, sink Sink, opts UpgradeOptions) (Report, *inProcessChild, error) {
	t.Helper()
	parent, end := handoffChannel(t)
	defer parent.Close()
	done := 0
	ch := startChild(end, func(end *net.UnixConn) error {
		return Takeover(end, sink, TakeoverOptions{Build: "test", Done: func() error { done++; return nil }})
	})
	opts.ChildExited, opts.Kill = ch.exited, ch.kill
	rep, err := Upgrade(parent, src, opts)
	ch.kill()
	<-ch.exited
	if err == nil && done != 1 {
		t.Errorf("Done called %d times before DONE_OK, want 1", done)
	}
	return rep, ch, err
}

func TestUpgradeMovesEverything(t *testing.T) {
	base := baseline(t)
	w := newWorld(t, 3)
	var all []uint64
	for i := range 300 {
		size := 1 + i*37%5000
		switch {
		case i == 7:
			size = 0
		case i%60 == 1:
			size = 70<<10 + i // more than one DATA record
		case i == 250:
			size = 300 << 10
		}
		w.addFlow(uint64(1000+i), size)
		all = append(all, uint64(1000+i))
	}
	src, sink := &fakeSource{w: w}, newFakeSink(t)
	var steps []string
	rep, ch, err := upgradeInProcess(t, src, sink, UpgradeOptions{
		BatchSize: 100,
		Progress:  func(f string, a ...any) { steps = append(steps, f) },
	})
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if ch.err != nil {
		t.Fatalf("Takeover: %v", ch.err)
	}
	if want := (Report{NewPID: os.Getpid(), Moved: 300}); rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	checkMoved(t, w, all)
	if !slices.Equal(sorted(src.released), all) || len(src.restored) > 0 {
		t.Errorf("released %d flows, restored %d; want all 300 released", len(src.released), len(src.restored))
	}
	if !slices.Equal(sorted(sink.started), all) || sink.imports != 3 {
		t.Errorf("started %d flows in %d imports, want 300 in 3", len(sink.started), sink.imports)
	}
	if len(sink.adopted) != 3 {
		t.Errorf("adopted %v, want 3 listeners", sink.adopted)
	}
	if want := []string{"pause", "quiesce", "release 100", "quiesce", "release 100", "quiesce", "release 100", "quiesce"}; !slices.Equal(src.calls, want) {
		t.Errorf("source calls %v, want %v", src.calls, want)
	}
	if len(steps) == 0 {
		t.Error("no progress reported")
	}
	sink.close()
	w.close()
	checkNoLeak(t, base)
}

// TestUpgradeManyListeners needs two LISTENERS records and moves no flow.
func TestUpgradeManyListeners(t *testing.T) {
	base := baseline(t)
	w := newWorld(t, MaxFDs+40)
	src, sink := &fakeSource{w: w}, newFakeSink(t)
	rep, _, err := upgradeInProcess(t, src, sink, UpgradeOptions{})
	if err != nil || rep.Moved != 0 || len(sink.adopted) != MaxFDs+40 {
		t.Errorf("Upgrade: %+v, %v; adopted %d listeners, want %d", rep, err, len(sink.adopted), MaxFDs+40)
	}
	sink.close()
	w.close()
	checkNoLeak(t, base)
}

func TestUpgradeRestoresRejected(t *testing.T) {
	base := baseline(t)
	w := newWorld(t, 1)
	var moved, rejected []uint64
	for i := range 30 {
		id := uint64(i + 1)
		w.addFlow(id, 100+i)
		if id%3 == 0 {
			rejected = append(rejected, id)
		} else {
			moved = append(moved, id)
		}
	}
	src, sink := &fakeSource{w: w}, newFakeSink(t)
	sink.reject = func(id uint64) bool { return id%3 == 0 }
	rep, _, err := upgradeInProcess(t, src, sink, UpgradeOptions{BatchSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{NewPID: os.Getpid(), Moved: 20, Resumed: 10}); rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	if !slices.Equal(sorted(src.restored), rejected) || !slices.Equal(sorted(src.released), moved) {
		t.Errorf("restored %v, released %v; want %v restored", sorted(src.restored), sorted(src.released), rejected)
	}
	if !slices.Equal(sorted(sink.started), moved) {
		t.Errorf("started %v, want %v", sorted(sink.started), moved)
	}
	checkMoved(t, w, moved)
	sink.close()
	w.close()
	checkNoLeak(t, base)
}

// TestUpgradeChildFailsBeforeReady: nothing in the old process changes.
func TestUpgradeChildFailsBeforeReady(t *testing.T) {
	base := baseline(t)
	w := newWorld(t, 2)
	w.addFlow(1, 10)
	src, sink := &fakeSource{w: w}, newFakeSink(t)
	sink.adoptErr = errors.New("port 7000 is not in my config")
	rep, ch, err := upgradeInProcess(t, src, sink, UpgradeOptions{})
	if !errors.Is(err, ErrPeer) || !strings.Contains(err.Error(), "port 7000") {
		t.Errorf("Upgrade error %v, want the child's ERROR", err)
	}
	if ch.err == nil {
		t.Error("Takeover succeeded")
	}
	if len(src.calls) > 0 || rep.Moved+rep.Resumed+rep.Lost != 0 {
		t.Errorf("source calls %v, report %+v; want none", src.calls, rep)
	}
	sink.close()
	w.close()
	checkNoLeak(t, base)
}

// script plays a child by hand, to fail at exact points.
type script struct {
	t *testing.T
	peer
}

// hello does HELLO .. READY and closes the listeners it gets.
func (s *script) hello() error {
	var e Encoder
	e.Uint16(ProtoVersion)
	e.Text("script")
	e.Uint32(uint32(os.Getpid()))
	if err := s.send(TypeHello, &e); err != nil {
		return err
	}
	if _, err := s.expect(TypeHelloOK); err != nil {
		return err
	}
	for {
		rec, files, err := s.receive()
		closeAll(files)
		if err != nil {
			return err
		}
		if rec.Body[0] == 1 { // last
			break
		}
	}
	e = Encoder{}
	e.Uint16(0)
	return s.send(TypeReady, &e)
}

// batch reads one whole batch, closes its files, and returns its flow ids.
func (s *script) batch() (uint64, []uint64, error) {
	rec, files, err := s.receive()
	if err != nil {
		return 0, nil, err
	}
	b := &incoming{files: files}
	defer closeAll(files)
	if err := b.header(rec, files); err != nil {
		return 0, nil, err
	}
	for {
		rec, _, err := s.receive()
		if err != nil {
			return 0, nil, err
		}
		if rec.Type == TypeBatchEnd {
			return b.id, connIDs(b.conns), nil
		}
	}
}

func (s *script) accept(batch uint64, ok, rejected []uint64) error {
	a := accepted{batch: batch, ok: ok, rejected: rejected}
	for range rejected {
		a.reasons = append(a.reasons, "no")
	}
	var e Encoder
	a.encode(&e)
	return s.send(TypeAccepted, &e)
}

func TestUpgradeRollback(t *testing.T) {
	ids := func(lo, hi uint64) (s []uint64) {
		for id := lo; id <= hi; id++ {
			s = append(s, id)
		}
		return s
	}
	type result struct{ released, restored []uint64 }
	tests := []struct {
		name string
		// child plays the child after READY, then it exits; killed is
		// closed when Upgrade kills it.
		child func(s *script, killed <-chan struct{})
		want  Report
		res   result
	}{{
		name: "child dies mid-batch",
		child: func(s *script, _ <-chan struct{}) {
			b, got, _ := s.batch()
			s.accept(b, got, nil)
			s.batch()
		},
		want: Report{Resumed: 10, Lost: 10},
		res:  result{released: ids(1, 10), restored: ids(11, 20)},
	}, {
		name: "timeout, ACCEPTED queued as it is killed",
		child: func(s *script, killed <-chan struct{}) {
			b, got, _ := s.batch()
			s.accept(b, got[:4], got[4:])
			b, got, _ = s.batch()
			<-killed
			s.accept(b, got[:6], got[6:])
		},
		want: Report{Resumed: 6 + 4, Lost: 4 + 6},
		res:  result{released: append(ids(1, 4), ids(11, 16)...), restored: append(ids(5, 10), ids(17, 20)...)},
	}, {
		name: "wrong type instead of ACCEPTED",
		child: func(s *script, _ <-chan struct{}) {
			s.batch()
			s.send(TypeReady, &Encoder{})
		},
		want: Report{Resumed: 10},
		res:  result{restored: ids(1, 10)},
	}, {
		name: "wrong seq",
		child: func(s *script, _ <-chan struct{}) {
			b, got, _ := s.batch()
			s.seq += 5
			s.accept(b, got, nil)
		},
		want: Report{Lost: 10}, // it may have started them
		res:  result{released: ids(1, 10)},
	}, {
		name: "ACCEPTED that does not parse",
		child: func(s *script, _ <-chan struct{}) {
			b, _, _ := s.batch()
			var e Encoder
			e.Uint64(b)
			e.Uint16(3)
			s.send(TypeAccepted, &e)
		},
		want: Report{Lost: 10},
		res:  result{released: ids(1, 10)},
	}, {
		name: "garbage with descriptors",
		child: func(s *script, _ <-chan struct{}) {
			s.batch()
			r, w, _ := os.Pipe()
			defer r.Close()
			defer w.Close()
			b, _ := appendRecord(nil, Record{Type: TypeAccepted, Seq: s.seq + 1}, 2)
			copy(b, "JUNK")
			var fds []int
			withFDs([]*os.File{r, w}, &fds, func() error {
				_, _, err := s.c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
				return err
			})
		},
		want: Report{Resumed: 10},
		res:  result{restored: ids(1, 10)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := baseline(t)
			w := newWorld(t, 1)
			for _, id := range ids(1, 30) {
				w.addFlow(id, int(id)*1000)
			}
			src := &fakeSource{w: w}
			parent, end := handoffChannel(t)
			s := &script{t: t, peer: peer{c: end}}
			exited, killed := make(chan struct{}), make(chan struct{})
			var once sync.Once
			go func() {
				defer close(exited)
				defer end.Close()
				if err := s.hello(); err != nil {
					t.Errorf("script: %v", err)
					return
				}
				tt.child(s, killed)
			}()
			rep, err := Upgrade(parent, src, UpgradeOptions{
				BatchSize: 10, BatchTimeout: 300 * time.Millisecond,
				ChildExited: exited, Kill: func() { once.Do(func() { close(killed) }) },
			})
			if !errors.Is(err, ErrRolledBack) {
				t.Fatalf("Upgrade: %v, want a rollback", err)
			}
			t.Logf("Upgrade: %v", err)
			tt.want.NewPID = os.Getpid()
			if rep != tt.want {
				t.Errorf("report %+v, want %+v", rep, tt.want)
			}
			if !slices.Equal(sorted(src.released), tt.res.released) || !slices.Equal(sorted(src.restored), tt.res.restored) {
				t.Errorf("released %v restored %v, want %v and %v",
					sorted(src.released), sorted(src.restored), tt.res.released, tt.res.restored)
			}
			if n := len(src.calls); n == 0 || slices.Index(src.calls, "resume") != n-1 {
				t.Errorf("source calls %v, want one resume, last", src.calls)
			}
			parent.Close()
			w.close()
			checkNoLeak(t, base)
		})
	}
}

// TestUpgradeRefusesOtherProtocol: a child speaking another protocol gets an
// ERROR, and the old process changes nothing.
func TestUpgradeRefusesOtherProtocol(t *testing.T) {
	base := baseline(t)
	w := newWorld(t, 1)
	src := &fakeSource{w: w}
	parent, end := handoffChannel(t)
	s := &script{t: t, peer: peer{c: end}}
	exited := make(chan struct{})
	var childGot error
	go func() {
		defer close(exited)
		defer end.Close()
		var e Encoder
		e.Uint16(ProtoVersion + 1)
		e.Text("future")
		e.Uint32(1)
		s.send(TypeHello, &e)
		_, childGot = s.expect(TypeHelloOK)
	}()
	_, err := Upgrade(parent, src, UpgradeOptions{ChildExited: exited, Kill: func() {}})
	if !errors.Is(err, ErrProtocol) || !errors.Is(childGot, ErrPeer) || len(src.calls) > 0 {
		t.Errorf("Upgrade: %v; child got %v; source calls %v", err, childGot, src.calls)
	}
	parent.Close()
	w.close()
	checkNoLeak(t, base)
}

// TestUpgradeQuiesceFails: the flows moved so far die with the killed child.
func TestUpgradeQuiesceFails(t *testing.T) {
	base := baseline(t)
	w := newWorld(t, 1)
	for id := range uint64(12) {
		w.addFlow(id+1, 5)
	}
	src, sink := &fakeSource{w: w, quiesceErr: errors.New("loop stuck")}, newFakeSink(t)
	rep, _, err := upgradeInProcess(t, src, sink, UpgradeOptions{BatchSize: 5})
	if !errors.Is(err, ErrRolledBack) || rep.Lost != 12 || rep.Moved+rep.Resumed != 0 {
		t.Errorf("Upgrade: %+v, %v; want 12 lost", rep, err)
	}
	if n := len(src.calls); src.calls[n-1] != "resume" || len(src.released) != 12 {
		t.Errorf("source calls %v", src.calls)
	}
	sink.close()
	w.close()
	checkNoLeak(t, base)
}
