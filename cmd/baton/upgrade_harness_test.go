package main

// The traffic harness of the upgrade acceptance tests (upgrade_load_test.go,
// upgrade_fault_test.go; HANDOFF.md §4). Both ends of every proxied
// connection live in this test process: the client end dials baton, the
// upstream end is accepted by an in-test upstream. Each connection carries
// two independent streams, client→upstream and upstream→client. Each is a
// deterministic ChaCha8 byte stream keyed by (run salt, connection ID,
// direction), cut into frames
//
//	{u64 offset, u32 len, payload, u32 crc32c(payload)}
//
// and closed by an end frame {u64 total, u32 0, u32 endMagic}, after which the
// writer half-closes (CloseWrite) and the reader expects EOF and nothing
// else. The reader regenerates the stream and reports the first offset that
// differs, so a lost, duplicated, reordered or corrupted byte fails with
// where it happened; EOF or a reset before the end frame is an early end.
//
// Before its frames the client sends a 12-byte header {"BTNT", u64 id} so
// that the upstream knows which connection (and which traffic shape) it got.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const (
	frameHead = 12 // u64 offset, u32 len
	maxFrame  = 64 << 10
	endMagic  = 0xE0DE0DE0
	helloLen  = 12
	maxLead   = 6 << 20
)

// How one end of a connection writes.
type writeMode int

const (
	writeNone    writeMode = iota // nothing until the test stops, then the end frame
	writePaced                    // a frame of 64..4096 bytes every pace, until stop
	writeUnpaced                  // 16 KiB frames back to back until stop (blocks on a slow reader)
	writeFinite                   // size bytes, then the end frame and CloseWrite at once (half-close)
)

type sideSpec struct {
	write writeMode
	size  int  // writeFinite: bytes to send
	slow  bool // read 4 KiB per 10 ms until the test stops
}

// class is a traffic shape: what the client end (c) and the upstream end (u) do.
type class struct {
	name string
	c, u sideSpec
}

// sideName names the ends: 0 the client, 1 the upstream.
var sideName = [2]string{"client", "upstream"}

// tconn is one test connection, both of its ends.
type tconn struct {
	id   uint64
	cls  *class
	up   chan struct{} // closed when the upstream has accepted it
	done [2]chan struct{}
	err  [2]error // per end, set before done closes
	sock [2]*net.TCPConn
	// written[d]: bytes the writer of direction d (0: c2u, 1: u2c) wrote.
	written [2]atomic.Int64
	// read[d]: bytes the reader of direction d has checked; ended[d]: it
	// has seen the end frame.
	read     [2]atomic.Int64
	ended    [2]atomic.Bool
	progress [2]chan struct{} // a token after the reader of direction d advanced
	badOff   [2]atomic.Int64  // 1 + the stream offset of the first mismatch, or 0
}

// harness holds the streams of one test.
type harness struct {
	t        *testing.T
	salt     uint64
	pace     time.Duration
	stop     chan struct{} // writers end their streams, slow readers speed up
	stopOnce sync.Once
	hard     time.Time    // no socket operation waits past this
	ln       net.Listener // the upstream
	slow     net.Listener // the upstream for slow readers: a small receive buffer from the start
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[uint64]*tconn

	measure  atomic.Bool // record client-observed gaps
	gapMu    sync.Mutex
	maxGap   map[string]time.Duration // per class
	maxGapID map[string]uint64

	verified atomic.Int64 // payload bytes checked at the readers

	errMu  sync.Mutex
	errs   []string
	nerrs  int
	kinds  map[string]int
	closed atomic.Bool
}

func newHarness(t *testing.T, pace time.Duration, hard time.Duration) *harness {
	h := &harness{
		t: t, salt: rand.Uint64(), pace: pace, stop: make(chan struct{}),
		hard: time.Now().Add(hard), conns: map[uint64]*tconn{},
		maxGap: map[string]time.Duration{}, maxGapID: map[string]uint64{}, kinds: map[string]int{},
	}
	t.Logf("stream salt %#x", h.salt)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln
	lc := net.ListenConfig{Control: smallRcvbuf}
	if h.slow, err = lc.Listen(context.Background(), "tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	h.wg.Add(2)
	go h.acceptLoop(h.ln)
	go h.acceptLoop(h.slow)
	t.Cleanup(func() {
		// Whatever state the test ended in: close every socket, and wait
		// (bounded) for the goroutines, which all wait on sockets or stop.
		h.closed.Store(true)
		ln.Close()
		h.slow.Close()
		h.stopStreams()
		h.mu.Lock()
		for _, tc := range h.conns {
			for _, c := range tc.sock {
				if c != nil {
					c.Close()
				}
			}
		}
		h.mu.Unlock()
		done := make(chan struct{})
		go func() { h.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("harness goroutines still running 10s after the test")
		}
	})
	return h
}

// addr is the upstream's address; slowAddr the one for connections whose
// upstream end reads slowly (SO_RCVBUF must be small before the handshake:
// shrinking it later makes the kernel drop what it advertised room for, and
// the sender then waits out retransmission timeouts).
func (h *harness) addr() string     { return h.ln.Addr().String() }
func (h *harness) slowAddr() string { return h.slow.Addr().String() }

// fail records an error of one end of one connection.
func (h *harness) fail(tc *tconn, side int, kind string, err error) {
	h.errMu.Lock()
	defer h.errMu.Unlock()
	h.nerrs++
	h.kinds[kind]++
	if len(h.errs) < 20 {
		h.errs = append(h.errs, fmt.Sprintf("conn %d (%s) %s end: %s: %v", tc.id, tc.cls.name, sideName[side], kind, err))
	}
}

func (h *harness) errorCount() (int, map[string]int, []string) {
	h.errMu.Lock()
	defer h.errMu.Unlock()
	k := map[string]int{}
	for a, b := range h.kinds {
		k[a] = b
	}
	return h.nerrs, k, append([]string(nil), h.errs...)
}

// kindOf classifies a socket error for the report.
func kindOf(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "ECONNRESET"
	case errors.Is(err, syscall.EPIPE):
		return "EPIPE"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ECONNREFUSED"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "early EOF"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, errMismatch):
		return "stream mismatch"
	}
	return "other"
}

var errMismatch = errors.New("stream mismatch")

// gen is the expected byte stream of one direction of one connection.
func (h *harness) gen(id uint64, d int) *rand.ChaCha8 {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[0:], h.salt)
	binary.LittleEndian.PutUint64(seed[8:], id)
	seed[16] = byte(d)
	copy(seed[17:], "baton-upgrade")
	return rand.NewChaCha8(seed)
}

// deadline is now+d, but never past the harness's hard deadline.
func (h *harness) deadline(d time.Duration) time.Time {
	if t := time.Now().Add(d); t.Before(h.hard) {
		return t
	}
	return h.hard
}

// stopStreams makes every writer end its stream and the slow readers speed up.
func (h *harness) stopStreams() {
	h.stopOnce.Do(func() { close(h.stop) })
}

func (h *harness) stopped() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

// dial opens connection id of class cls through baton at addr, sends the
// header and starts the client end; the upstream end starts when the
// upstream accepts it.
func (h *harness) dial(addr string, id uint64, cls *class) (*tconn, error) {
	tc := &tconn{id: id, cls: cls, up: make(chan struct{}), done: [2]chan struct{}{make(chan struct{}), make(chan struct{})},
		progress: [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}}
	h.mu.Lock()
	h.conns[id] = tc
	h.mu.Unlock()
	d := net.Dialer{Timeout: 5 * time.Second}
	if cls.c.slow {
		d.Control = smallRcvbuf
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		h.mu.Lock()
		delete(h.conns, id)
		h.mu.Unlock()
		return nil, err
	}
	var hello [helloLen]byte
	copy(hello[:], "BTNT")
	binary.LittleEndian.PutUint64(hello[4:], id)
	c.SetWriteDeadline(h.deadline(5 * time.Second))
	if _, err := c.Write(hello[:]); err != nil {
		c.Close()
		return nil, err
	}
	h.run(tc, c.(*net.TCPConn), 0)
	return tc, nil
}

// smallRcvbuf keeps a slow reader's receive buffer small (set before
// connect, so the window is scaled for it), so that baton's writes block
// soon and its pending bytes are non-zero at quiesce.
func smallRcvbuf(network, address string, c syscall.RawConn) error {
	var serr error
	c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10) })
	return serr
}

func (h *harness) acceptLoop(ln net.Listener) {
	defer h.wg.Done()
	for n := 0; n < 10_000_000; n++ {
		c, err := ln.Accept()
		if err != nil {
			if h.closed.Load() {
				return
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		h.wg.Add(1)
		go h.upstreamConn(c.(*net.TCPConn))
	}
}

// upstreamConn reads the header of an accepted connection and starts its
// upstream end.
func (h *harness) upstreamConn(c *net.TCPConn) {
	defer h.wg.Done()
	var hello [helloLen]byte
	c.SetReadDeadline(h.deadline(10 * time.Second))
	if _, err := io.ReadFull(c, hello[:]); err != nil || string(hello[:4]) != "BTNT" {
		h.errMu.Lock()
		h.nerrs++
		h.kinds["bad upstream header"]++
		h.errs = append(h.errs, fmt.Sprintf("upstream: bad header %q: %v", hello, err))
		h.errMu.Unlock()
		c.Close()
		return
	}
	id := binary.LittleEndian.Uint64(hello[4:])
	h.mu.Lock()
	tc := h.conns[id]
	h.mu.Unlock()
	if tc == nil {
		h.errMu.Lock()
		h.nerrs++
		h.kinds["unknown connection"]++
		h.errMu.Unlock()
		c.Close()
		return
	}
	h.run(tc, c, 1)
	close(tc.up)
}

// run starts one end (side 0: client, 1: upstream) of tc on c: a writer
// and a reader; c is closed once both have finished.
func (h *harness) run(tc *tconn, c *net.TCPConn, side int) {
	spec := tc.cls.c
	if side == 1 {
		spec = tc.cls.u
	}
	h.mu.Lock()
	tc.sock[side] = c
	h.mu.Unlock()
	var werr, rerr error
	wdone := make(chan struct{})
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		defer close(wdone)
		werr = h.writer(tc, c, spec, side)
		if werr != nil {
			h.fail(tc, side, kindOf(werr), fmt.Errorf("writing: %w", werr))
		}
	}()
	go func() {
		defer h.wg.Done()
		rerr = h.reader(tc, c, spec, side)
		if rerr != nil {
			h.fail(tc, side, kindOf(rerr), fmt.Errorf("reading: %w", rerr))
		}
		<-wdone
		c.Close()
		tc.err[side] = errors.Join(werr, rerr)
		close(tc.done[side])
	}()
}

// writer sends this end's stream (direction side: 0 c2u, 1 u2c).
func (h *harness) writer(tc *tconn, c *net.TCPConn, spec sideSpec, side int) error {
	g := h.gen(tc.id, side)
	var off uint64
	buf := make([]byte, frameHead+maxFrame+4)
	send := func(n int) error {
		binary.LittleEndian.PutUint64(buf[0:], off)
		binary.LittleEndian.PutUint32(buf[8:], uint32(n))
		p := buf[frameHead : frameHead+n]
		if n == 0 {
			binary.LittleEndian.PutUint32(buf[frameHead:], endMagic)
		} else {
			g.Read(p)
			binary.LittleEndian.PutUint32(buf[frameHead+n:], crc32.Checksum(p, crcTable))
		}
		c.SetWriteDeadline(h.deadline(30 * time.Second))
		_, err := c.Write(buf[:frameHead+n+4])
		off += uint64(n)
		tc.written[side].Store(int64(off))
		return err
	}
	rnd := rand.New(rand.NewPCG(tc.id, uint64(side)))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	hardStop := time.NewTimer(time.Until(h.hard))
	defer hardStop.Stop()
	switch spec.write {
	case writeFinite:
		for left := spec.size; left > 0; {
			n := min(left, 1+rnd.IntN(8192))
			if err := send(n); err != nil {
				return err
			}
			left -= n
		}
	case writePaced:
	paced:
		for i := 0; i < 1_000_000; i++ {
			timer.Reset(h.pace/2 + rand.N(h.pace))
			select {
			case <-h.stop:
				break paced
			case <-hardStop.C:
				return errors.New("hard deadline reached before the test stopped the streams")
			case <-timer.C:
				if err := send(64 + rnd.IntN(4096-64)); err != nil {
					return err
				}
			}
		}
	case writeUnpaced:
		// As fast as the path takes it, but at most maxLead bytes ahead
		// of the reader: enough to fill every buffer on the way, so that
		// baton's writes block, without piling up more to check at the end.
	unpaced:
		for i := 0; i < 10_000_000 && !h.stopped(); i++ {
			for int64(off)-tc.read[side].Load() > maxLead {
				select {
				case <-tc.progress[side]:
				case <-h.stop:
					break unpaced
				case <-hardStop.C:
					return errors.New("hard deadline reached before the test stopped the streams")
				}
			}
			if err := send(16 << 10); err != nil {
				return err
			}
		}
	case writeNone:
		select {
		case <-h.stop:
		case <-hardStop.C:
			return errors.New("hard deadline reached before the test stopped the streams")
		}
	}
	if err := send(0); err != nil {
		return err
	}
	return c.CloseWrite()
}

// paceReader is the socket as the reader sees it: a deadline on every read,
// slow while the test runs if asked, and client-observed gaps recorded.
type paceReader struct {
	h    *harness
	tc   *tconn
	c    *net.TCPConn
	slow bool
	gaps bool
	idle bool
	last time.Time
}

func (r *paceReader) Read(p []byte) (int, error) {
	h := r.h
	if r.slow && !h.stopped() {
		if len(p) > 4096 {
			p = p[:4096]
		}
	}
	// An idle end reads nothing until the test stops: only the hard deadline.
	if r.idle && !h.stopped() {
		r.c.SetReadDeadline(h.hard)
	} else {
		r.c.SetReadDeadline(h.deadline(20 * time.Second))
	}
	n, err := r.c.Read(p)
	if n > 0 && r.gaps {
		now := time.Now()
		if !r.last.IsZero() && h.measure.Load() {
			gap := now.Sub(r.last)
			h.gapMu.Lock()
			if gap > h.maxGap[r.tc.cls.name] {
				h.maxGap[r.tc.cls.name] = gap
				h.maxGapID[r.tc.cls.name] = r.tc.id
			}
			h.gapMu.Unlock()
		}
		r.last = now
	}
	if n > 0 && r.slow && !h.stopped() {
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-t.C:
		case <-h.stop:
			t.Stop()
		}
	}
	return n, err
}

// reader checks this end's incoming stream (direction 1-side) to its end
// frame and EOF.
func (h *harness) reader(tc *tconn, c *net.TCPConn, spec sideSpec, side int) error {
	d := 1 - side
	g := h.gen(tc.id, d)
	other := tc.cls.u
	if side == 1 {
		other = tc.cls.c
	}
	pr := &paceReader{h: h, tc: tc, c: c, slow: spec.slow,
		gaps: side == 0 && tc.cls.name != "idle" && tc.cls.name != "churn",
		idle: other.write == writeNone}
	br := bufio.NewReaderSize(pr, 64<<10)
	var off uint64
	head := make([]byte, frameHead)
	payload := make([]byte, maxFrame+4)
	want := make([]byte, maxFrame)
	for i := 0; i < 100_000_000; i++ {
		if _, err := io.ReadFull(br, head); err != nil {
			return fmt.Errorf("at offset %d, before the end frame: %w", off, err)
		}
		at, n := binary.LittleEndian.Uint64(head), binary.LittleEndian.Uint32(head[8:])
		if at != off || n > maxFrame {
			tc.badOff[d].Store(int64(off) + 1)
			return fmt.Errorf("%w: at stream offset %d a frame header {offset %d, len %d} (lost, duplicated or reordered bytes); %s",
				errMismatch, off, at, n, h.resync(tc.id, d, head, br, off))
		}
		if _, err := io.ReadFull(br, payload[:n+4]); err != nil {
			return fmt.Errorf("inside the frame at offset %d: %w", off, err)
		}
		if n == 0 {
			tc.ended[d].Store(true)
			if m := binary.LittleEndian.Uint32(payload); m != endMagic {
				return fmt.Errorf("%w: at offset %d an empty frame without the end mark (%#x)", errMismatch, off, m)
			}
			// Nothing may follow the end frame but EOF.
			var one [1]byte
			k, err := br.Read(one[:])
			if k != 0 || err != io.EOF {
				return fmt.Errorf("after the end frame at offset %d: %d bytes, %v (want EOF)", off, k, err)
			}
			if w := tc.written[d].Load(); int64(off) != w {
				return fmt.Errorf("%w: end frame at %d, the writer wrote %d", errMismatch, off, w)
			}
			return nil
		}
		p := payload[:n]
		g.Read(want[:n])
		if !bytes.Equal(p, want[:n]) {
			i := 0
			for i < int(n) && p[i] == want[i] {
				i++
			}
			tc.badOff[d].Store(int64(off) + int64(i) + 1)
			return fmt.Errorf("%w: first differing byte at stream offset %d", errMismatch, off+uint64(i))
		}
		if crc := binary.LittleEndian.Uint32(payload[n:]); crc != crc32.Checksum(p, crcTable) {
			tc.badOff[d].Store(int64(off) + 1)
			return fmt.Errorf("%w: crc of the frame at offset %d", errMismatch, off)
		}
		off += uint64(n)
		tc.read[d].Store(int64(off))
		select {
		case tc.progress[d] <- struct{}{}:
		default:
		}
		h.verified.Add(int64(n))
	}
	return errors.New("too many frames")
}

// resync explains a broken frame boundary at stream offset off: it looks
// for the expected stream's bytes (the next 32 bytes after off, and each
// frame start nearby) in what arrived, to tell lost bytes from duplicated
// ones and say how many.
func (h *harness) resync(id uint64, d int, head []byte, br *bufio.Reader, off uint64) string {
	// What arrived from the broken header on: up to 1 MiB more.
	got := append([]byte(nil), head...)
	more := make([]byte, 1<<20)
	n, _ := io.ReadAtLeast(br, more, len(more))
	got = append(got, more[:n]...)
	// The expected stream's payload bytes around off (payload only: the
	// frame headers depend on how the writer cut it).
	const span = 8 << 20
	from := uint64(0)
	if off > span/2 {
		from = off - span/2
	}
	g := h.gen(id, d)
	skip := make([]byte, 64<<10)
	for left := from; left > 0; {
		k := min(left, uint64(len(skip)))
		g.Read(skip[:k])
		left -= k
	}
	want := make([]byte, span)
	g.Read(want)
	// Find the first 64-byte run of arrived bytes that is in the expected
	// payload, and where.
	for i := 0; i+64 <= len(got); i += 16 {
		if j := bytes.Index(want, got[i:i+64]); j >= 0 {
			at := from + uint64(j)
			// got[i] is payload byte at; payload-wise the receiver had
			// consumed off bytes before the broken header, and the wire
			// bytes got[0:i] hold headers and payload.
			return fmt.Sprintf("%d wire bytes after the broken header, the stream resumes at payload offset %d (%+d from where it broke)",
				i, at, int64(at)-int64(off))
		}
	}
	return fmt.Sprintf("none of the next %d bytes is in the expected stream within ±%d of offset %d", len(got), span/2, off)
}

// waitAll waits (bounded) until every end of conns has finished.
func (h *harness) waitAll(t *testing.T, conns []*tconn, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for _, tc := range conns {
		for side := 0; side < 2; side++ {
			select {
			case <-tc.done[side]:
			case <-deadline.C:
				t.Fatalf("connection %d (%s): the %s end has not finished %s after the streams were stopped; %s",
					tc.id, tc.cls.name, sideName[side], within, h.describe(tc))
			}
		}
	}
}

// describe says where each stream of tc is, and of the others not done.
func (h *harness) describe(tc *tconn) string {
	one := func(tc *tconn) string {
		return fmt.Sprintf("conn %d (%s): c2u written %d read %d end %v, u2c written %d read %d end %v",
			tc.id, tc.cls.name, tc.written[0].Load(), tc.read[0].Load(), tc.ended[0].Load(),
			tc.written[1].Load(), tc.read[1].Load(), tc.ended[1].Load())
	}
	out := []string{one(tc)}
	h.mu.Lock()
	defer h.mu.Unlock()
	stuck := 0
	for _, o := range h.conns {
		select {
		case <-o.done[0]:
			select {
			case <-o.done[1]:
				continue
			default:
			}
		default:
		}
		stuck++
		if o != tc && len(out) < 10 {
			out = append(out, one(o))
		}
	}
	return fmt.Sprintf("%d connections not done:\n%s", stuck, strings.Join(out, "\n"))
}

// eventually checks cond every `every` until it holds or `within` has
// passed, and reports whether it held.
func eventually(within, every time.Duration, cond func() bool) bool {
	tick := time.NewTicker(every)
	defer tick.Stop()
	limit := time.NewTimer(within)
	defer limit.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-limit.C:
			return cond()
		}
	}
	return true
}

// waitUp waits (bounded) until the upstream has accepted every one of conns.
func waitUp(t *testing.T, conns []*tconn, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for _, tc := range conns {
		select {
		case <-tc.up:
		case <-deadline.C:
			t.Fatalf("connection %d never reached the upstream", tc.id)
		}
	}
}

// --- processes ---

// procStat returns pid's state letter and parent pid from /proc.
func procStat(pid int) (state byte, ppid int, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

// childrenOf lists the processes whose parent is ppid.
func childrenOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, pp, ok := procStat(pid); ok && pp == ppid {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// waitStoppedChild waits (bounded) for a child of ppid stopped by a signal
// (the test hook) and returns its pid.
func waitStoppedChild(t *testing.T, ppid int, within time.Duration, cliDone <-chan struct{}) int {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		for _, pid := range childrenOf(ppid) {
			if st, _, _ := procStat(pid); st == 'T' {
				return pid
			}
		}
		select {
		case <-tick.C:
		case <-cliDone:
			t.Fatalf("baton upgrade returned before any new process stopped at the hook")
		case <-deadline.C:
			t.Fatalf("no stopped child of %d after %s (children: %v)", ppid, within, childrenOf(ppid))
		}
	}
}

// pidWaiter waits for a process that is not our child to exit, with a pidfd.
type pidWaiter struct {
	pid int
	fd  int
}

func openPid(t *testing.T, pid int) *pidWaiter {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	w := &pidWaiter{pid: pid, fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	return w
}

// wait returns true if the process exited within d.
func (w *pidWaiter) wait(d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		ms := int(time.Until(end).Milliseconds())
		if ms < 0 {
			ms = 0
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			return true
		}
		return exited(w.pid) // a zombie nobody reaps counts as gone
	}
}

// fdCounts counts pid's open descriptors by kind.
func fdCounts(pid int) (sockets, pipes, total int) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		total++
		switch {
		case strings.HasPrefix(l, "socket:"):
			sockets++
		case strings.HasPrefix(l, "pipe:"):
			pipes++
		}
	}
	return
}

// --- baton upgrade ---

var upgradeReport = regexp.MustCompile(`new pid (\d+): moved (\d+) connections, resumed (\d+) in the old process, lost (\d+); (\d+) pending bytes carried`)

type upgradeResult struct {
	out                          string
	err                          error
	took                         time.Duration
	newPid, moved, resumed, lost int
	pending                      int64
	reported                     bool
}

// runUpgrade runs "baton upgrade" against sock and parses its report.
func runUpgrade(sock string, extra ...string) upgradeResult {
	start := time.Now()
	cmd := batonCmd(append([]string{"upgrade", "--control-socket", sock, "--timeout", "60s"}, extra...)...)
	out, err := cmd.CombinedOutput()
	r := upgradeResult{out: strings.TrimSpace(string(out)), err: err, took: time.Since(start)}
	if m := upgradeReport.FindStringSubmatch(r.out); m != nil {
		r.reported = true
		r.newPid, _ = strconv.Atoi(m[1])
		r.moved, _ = strconv.Atoi(m[2])
		r.resumed, _ = strconv.Atoi(m[3])
		r.lost, _ = strconv.Atoi(m[4])
		r.pending, _ = strconv.ParseInt(m[5], 10, 64)
	}
	return r
}

// killPidFile ends the generation named in the pid file when the test ends
// (it is not our child).
func killPidFile(t *testing.T, pidFile string, first int) {
	t.Cleanup(func() {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid != first {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}
