package fdpass

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// flow is one proxied TCP flow of a fake Source, made of real loopback
// sockets: client ↔ proxyC, and proxyU ↔ upstream. The proxy side (proxyC,
// proxyU) is what moves; client and upstream stay with the test.
type flow struct {
	id                               uint64
	client, proxyC, proxyU, upstream *net.TCPConn
	state                            []byte
}

// world owns every socket a handoff test creates, so that the test can close
// them all and compare the descriptor count with its baseline.
type world struct {
	t         *testing.T
	ln        *net.TCPListener // makes the pairs
	listeners []*net.TCPListener
	flows     []*flow
	byID      map[uint64]*flow
}

func newWorld(t *testing.T, nListeners int) *world {
	t.Helper()
	w := &world{t: t, byID: map[uint64]*flow{}}
	w.ln = w.listen()
	for range nListeners {
		w.listeners = append(w.listeners, w.listen())
	}
	return w
}

func (w *world) listen() *net.TCPListener {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		w.t.Fatal(err)
	}
	return ln
}

func (w *world) pair() (a, b *net.TCPConn) {
	a, err := net.DialTCP("tcp", nil, w.ln.Addr().(*net.TCPAddr))
	if err != nil {
		w.t.Fatal(err)
	}
	b, err = w.ln.AcceptTCP()
	if err != nil {
		w.t.Fatal(err)
	}
	return a, b
}

// addFlow adds a flow whose state is size deterministic bytes.
func (w *world) addFlow(id uint64, size int) *flow {
	f := &flow{id: id, state: make([]byte, size)}
	for i := range f.state {
		f.state[i] = byte(uint64(i)*7 + id*13)
	}
	f.client, f.proxyC = w.pair()
	f.proxyU, f.upstream = w.pair()
	w.flows = append(w.flows, f)
	w.byID[id] = f
	return f
}

func (w *world) close() {
	w.ln.Close()
	for _, ln := range w.listeners {
		ln.Close()
	}
	for _, f := range w.flows {
		f.client.Close()
		f.proxyC.Close()
		f.proxyU.Close()
		f.upstream.Close()
	}
}

// fakeSource is a Source over a world. It logs every call in order.
type fakeSource struct {
	w          *world
	next       int   // flows[next:] are not quiesced yet
	quiesceErr error // returned by Quiesce once every flow is quiesced

	mu       sync.Mutex
	calls    []string
	released []uint64
	restored []uint64
}

func (s *fakeSource) log(format string, args ...any) {
	s.mu.Lock()
	s.calls = append(s.calls, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

func (s *fakeSource) Listeners() ([]NamedFile, error) {
	var out []NamedFile
	for _, ln := range s.w.listeners {
		f, err := Dup(ln, "tcp/"+ln.Addr().String())
		if err != nil {
			return out, err
		}
		out = append(out, NamedFile{Name: f.Name(), File: f})
	}
	return out, nil
}

func (s *fakeSource) PauseAccepting()  { s.log("pause") }
func (s *fakeSource) ResumeAccepting() { s.log("resume") }

func (s *fakeSource) Quiesce(max int) ([]Conn, bool, error) {
	s.log("quiesce")
	if s.next == len(s.w.flows) {
		return nil, s.quiesceErr == nil, s.quiesceErr
	}
	var conns []Conn
	for ; s.next < len(s.w.flows) && len(conns) < max; s.next++ {
		f := s.w.flows[s.next]
		cf, err := Dup(f.proxyC, "conn/client")
		if err != nil {
			return conns, false, err
		}
		uf, err := Dup(f.proxyU, "conn/upstream")
		if err != nil {
			cf.Close()
			return conns, false, err
		}
		conns = append(conns, Conn{ID: f.id, Files: []*os.File{cf, uf}, State: f.state})
	}
	return conns, false, nil
}

// Release closes the old process's copies, as package proxy does.
func (s *fakeSource) Release(ids []uint64) {
	s.log("release %d", len(ids))
	s.mu.Lock()
	s.released = append(s.released, ids...)
	s.mu.Unlock()
	for _, id := range ids {
		f := s.w.byID[id]
		f.proxyC.Close()
		f.proxyU.Close()
	}
}

func (s *fakeSource) Restore(ids []uint64) {
	s.log("restore %d", len(ids))
	s.mu.Lock()
	s.restored = append(s.restored, ids...)
	s.mu.Unlock()
}

// fakeSink is a Sink that adopts real sockets. Start writes a flow's state
// to its client-side socket and its id to its upstream-side socket, then
// closes both, so the test reads exactly what moved.
type fakeSink struct {
	t        *testing.T
	adoptErr error
	reject   func(id uint64) bool

	mu        sync.Mutex
	listeners []net.Listener
	adopted   []string
	conns     map[uint64][2]net.Conn
	states    map[uint64][]byte
	imports   int
	started   []uint64
	wg        sync.WaitGroup
}

func newFakeSink(t *testing.T) *fakeSink {
	return &fakeSink{t: t, conns: map[uint64][2]net.Conn{}, states: map[uint64][]byte{}}
}

func (s *fakeSink) AdoptListeners(files []NamedFile) ([]string, error) {
	defer func() {
		for _, nf := range files {
			nf.File.Close()
		}
	}()
	if s.adoptErr != nil {
		return nil, s.adoptErr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, nf := range files {
		if err := Check(nf.File, TCPListener, nf.Name[len("tcp/"):]); err != nil {
			return nil, err
		}
		ln, err := net.FileListener(nf.File)
		if err != nil {
			return nil, err
		}
		s.listeners = append(s.listeners, ln)
		s.adopted = append(s.adopted, nf.Name)
	}
	return s.adopted, nil
}

func (s *fakeSink) Import(conns []Conn) ([]uint64, map[uint64]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.imports++
	var ok []uint64
	rejected := map[uint64]string{}
	for _, c := range conns {
		if len(c.Files) != 2 || (s.reject != nil && s.reject(c.ID)) {
			closeAll(c.Files)
			rejected[c.ID] = "rejected by the test"
			continue
		}
		var pair [2]net.Conn
		for i, f := range c.Files {
			if err := Check(f, TCPConn, ""); err != nil {
				s.t.Errorf("flow %d file %d: %v", c.ID, i, err)
			}
			nc, err := net.FileConn(f)
			f.Close()
			if err != nil {
				s.t.Errorf("flow %d: FileConn: %v", c.ID, err)
			}
			pair[i] = nc
		}
		s.conns[c.ID] = pair
		s.states[c.ID] = c.State
		ok = append(ok, c.ID)
	}
	return ok, rejected
}

func (s *fakeSink) Start(ids []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = append(s.started, ids...)
	for _, id := range ids {
		pair, state := s.conns[id], s.states[id]
		delete(s.conns, id)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer pair[0].Close()
			defer pair[1].Close()
			pair[0].SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := pair[0].Write(state); err != nil {
				s.t.Errorf("flow %d: write state: %v", id, err)
			}
			pair[1].Write(binary.LittleEndian.AppendUint64(nil, id))
		}()
	}
}

// close waits for Start's writers and closes what the sink still holds.
func (s *fakeSink) close() {
	s.wg.Wait()
	for _, ln := range s.listeners {
		ln.Close()
	}
	for _, pair := range s.conns {
		pair[0].Close()
		pair[1].Close()
	}
}

// checkMoved reads, at the test's ends of each flow in ids, what the new
// process wrote: the state at the client, the id at the upstream, then EOF,
// which proves the old process closed its copies too.
func checkMoved(t *testing.T, w *world, ids []uint64) {
	t.Helper()
	var wg sync.WaitGroup
	for _, id := range ids {
		f := w.byID[id]
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			f.upstream.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(f.client)
			if err != nil || !slices.Equal(got, f.state) {
				t.Errorf("flow %d: client read %d bytes (%v), want its %d state bytes exactly", id, len(got), err, len(f.state))
			}
			got, err = io.ReadAll(f.upstream)
			if err != nil || len(got) != 8 || binary.LittleEndian.Uint64(got) != id {
				t.Errorf("flow %d: upstream read %x (%v), want its id", id, got, err)
			}
		}()
	}
	wg.Wait()
}

// inProcessChild runs Takeover on end in a goroutine, standing in for the
// child process: Kill closes end, and ChildExited is closed once Takeover has
// returned and the "process" is gone (at once if Takeover failed, else after Kill).
type inProcessChild struct {
	end    *net.UnixConn
	exited chan struct{}
	killed chan struct{}
	once   sync.Once
	err    error
}

func startChild(end *net.UnixConn, run func(end *net.UnixConn) error) *inProcessChild {
	ch := &inProcessChild{end: end, exited: make(chan struct{}), killed: make(chan struct{})}
	go func() {
		defer close(ch.exited)
		defer end.Close()
		if ch.err = run(end); ch.err == nil {
			<-ch.killed // a healthy child lives on
		}
	}()
	return ch
}

func (ch *inProcessChild) kill() {
	ch.once.Do(func() {
		close(ch.killed)
		ch.end.Close()
	})
}

// handoffChannel returns both ends of a socketpair as conns, with a deadline
// on the child's end that turns a hang into a failure.
func handoffChannel(t *testing.T) (parent, child *net.UnixConn) {
	t.Helper()
	parent, f, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	child = c.(*net.UnixConn)
	child.SetDeadline(time.Now().Add(20 * time.Second))
	return parent, child
}

// sorted returns a sorted copy of ids.
func sorted(ids []uint64) []uint64 {
	s := slices.Clone(ids)
	slices.Sort(s)
	return s
}
