package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The traffic shapes of TestUpgradeManyTimes (HANDOFF.md §4 a-e), and how
// many long-lived connections of each.
var manyTimesShapes = []struct {
	cls class
	n   int
}{
	// (a) bulk both ways, paced.
	{class{name: "bulk", c: sideSpec{write: writePaced}, u: sideSpec{write: writePaced}}, 300},
	// (b) a slow reader at the client: the upstream writes as fast as it
	// can, so baton's writes to the client block and it holds u2c bytes.
	{class{name: "slowC", c: sideSpec{write: writePaced, slow: true}, u: sideSpec{write: writeUnpaced}}, 30},
	// (b) a slow reader at the upstream: baton holds c2u bytes.
	{class{name: "slowU", c: sideSpec{write: writeUnpaced}, u: sideSpec{write: writePaced, slow: true}}, 30},
	// (d) half-closed by the client after 48 KiB, at once: the session is
	// half-closed through every upgrade, the upstream's stream goes on.
	{class{name: "halfC", c: sideSpec{write: writeFinite, size: 48 << 10}, u: sideSpec{write: writePaced}}, 200},
	// ... and by the upstream, the other way round.
	{class{name: "halfU", c: sideSpec{write: writePaced}, u: sideSpec{write: writeFinite, size: 48 << 10}}, 140},
	// (c) idle: the header, then nothing until the end.
	{class{name: "idle", c: sideSpec{write: writeNone}, u: sideSpec{write: writeNone}}, 300},
}

// (e) new connections all the time: a short exchange both ways, then closed.
var churnClass = class{name: "churn", c: sideSpec{write: writeFinite, size: 3000}, u: sideSpec{write: writeFinite, size: 7000}}

// TestUpgradeManyTimes is issue 6's end-to-end check: the real binary, with
// proxy_half_close on, 1,000 live connections of every shape plus new ones
// arriving all the time, through 20 "baton upgrade" in a row, back to back.
// Zero bytes lost, duplicated or reordered, zero resets or early EOFs at
// either end, zero refused connections, every old process gone, no socket
// leaked, and pending bytes actually carried.
func TestUpgradeManyTimes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 1,000 connections through 20 upgrades")
	}
	// Under -race everything runs several times slower: a quarter of the
	// connections and half the upgrades keep it within a minute.
	upgrades, scale := 20, 1
	if raceEnabled {
		upgrades, scale = 10, 4
	}
	const churnWorkers = 4
	testStart := time.Now()
	h := newHarness(t, 25*time.Millisecond, 110*time.Second)
	listen, slowListen := freePort(t), freePort(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	pidFile := filepath.Join(dir, "baton.pid")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf(`
pid %s;
error_log stderr notice;
baton { control_socket %s; }
stream {
    proxy_half_close on;
    server { listen %s backlog=4096; proxy_pass %s; }
    server { listen %s backlog=4096; proxy_pass %s; }
}
`, pidFile, sock, listen, h.addr(), slowListen, h.slowAddr()))
	p := startBaton(t, "run", "-c", conf, "--control-socket", sock)
	first := p.cmd.Process.Pid
	killPidFile(t, pidFile, first)
	baseSockets, basePipes, baseTotal := fdCounts(first)

	// The long-lived connections, dialled 16 at a time.
	var long []*tconn
	{
		type job struct {
			id  uint64
			cls *class
		}
		jobs := make(chan job)
		var mu sync.Mutex
		var dialErr error
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					addr := listen
					if j.cls.u.slow {
						addr = slowListen
					}
					tc, err := h.dial(addr, j.id, j.cls)
					mu.Lock()
					if err != nil && dialErr == nil {
						dialErr = fmt.Errorf("connection %d (%s): %w", j.id, j.cls.name, err)
					}
					if tc != nil {
						long = append(long, tc)
					}
					mu.Unlock()
				}
			}()
		}
		id := uint64(0)
		for i := range manyTimesShapes {
			for k := 0; k < manyTimesShapes[i].n/scale; k++ {
				jobs <- job{id, &manyTimesShapes[i].cls}
				id++
			}
		}
		close(jobs)
		wg.Wait()
		if dialErr != nil {
			t.Fatalf("setting up: %v", dialErr)
		}
	}
	waitUp(t, long, 20*time.Second)
	nlong := len(long)
	want := 0
	for _, sh := range manyTimesShapes {
		want += sh.n / scale
	}
	if nlong != want || (scale == 1 && nlong < 1000) {
		t.Fatalf("%d long-lived connections, want %d (at least 1,000 without -race)", nlong, want)
	}
	// Let the slow readers fall behind: each slow connection's fast writer
	// has filled the buffers on its path (bounded wait).
	backlogged := func() bool {
		for _, tc := range long {
			if (tc.cls.name == "slowC" && tc.written[1].Load() < 1<<20) || (tc.cls.name == "slowU" && tc.written[0].Load() < 1<<20) {
				return false
			}
		}
		return true
	}
	if !eventually(10*time.Second, 5*time.Millisecond, backlogged) {
		t.Logf("the slow connections have not all backed up 1 MiB after 10s; going on")
	}
	setup := time.Since(testStart)

	// Churn: new connections all the time, each checked end to end.
	churnStop := make(chan struct{})
	var churned, refused atomic.Int64
	var churnWG sync.WaitGroup
	var churnID atomic.Uint64
	churnID.Store(1 << 32)
	for w := 0; w < churnWorkers; w++ {
		churnWG.Add(1)
		go func() {
			defer churnWG.Done()
			pace := time.NewTimer(0)
			defer pace.Stop()
			for i := 0; i < 100_000; i++ {
				select {
				case <-churnStop:
					return
				case <-pace.C:
				}
				tc, err := h.dial(listen, churnID.Add(1), &churnClass)
				if err != nil {
					refused.Add(1)
					h.fail(&tconn{id: 0, cls: &churnClass}, 0, kindOf(err), fmt.Errorf("dialling: %w", err))
					pace.Reset(10 * time.Millisecond)
					continue
				}
				churned.Add(1)
				limit := time.NewTimer(20 * time.Second)
				for side := 0; side < 2; side++ {
					select {
					case <-tc.done[side]:
					case <-limit.C:
						h.fail(tc, side, "timeout", fmt.Errorf("a churn connection has not finished in 20s"))
						side = 2
					}
				}
				limit.Stop()
				pace.Reset(30 * time.Millisecond)
			}
		}()
	}

	// 20 upgrades back to back.
	type step struct {
		// where each long-lived stream was when it was triggered and
		// when it returned: [conn][direction] read and written offsets
		before, after [][2][2]int64
		r             upgradeResult
		old           int
		exitTook      atomic.Int64 // ns from the trigger to the old process's exit; -1: still running
	}
	steps := make([]*step, upgrades)
	cur := openPid(t, first)
	var exitWG sync.WaitGroup
	resumed := 0
	h.measure.Store(true)
	upStart := time.Now()
	for i := range steps {
		s := &step{old: cur.pid}
		steps[i] = s
		s.before = snapshot(long)
		trigger := time.Now()
		s.r = runUpgrade(sock)
		s.after = snapshot(long)
		if s.r.err != nil || !s.r.reported {
			t.Fatalf("upgrade %d of %d (from pid %d): %v\n%s", i+1, upgrades, cur.pid, s.r.err, s.r.out)
		}
		// A new connection that has ended both ways but that baton has
		// not closed yet is not a connected socket any more: the new
		// process rejects it and the old one finishes it (its exit below
		// shows it did at once). Only those may stay behind.
		if s.r.lost != 0 || s.r.resumed > churnWorkers || s.r.moved < nlong {
			t.Errorf("upgrade %d: moved %d (want at least %d), resumed %d (want at most %d new connections), lost %d (want 0)",
				i+1, s.r.moved, nlong, s.r.resumed, churnWorkers, s.r.lost)
		}
		resumed += s.r.resumed
		next := openPid(t, s.r.newPid)
		exitWG.Add(1)
		go func(w *pidWaiter) {
			defer exitWG.Done()
			if w.wait(20 * time.Second) {
				s.exitTook.Store(int64(time.Since(trigger)))
			} else {
				s.exitTook.Store(-1)
			}
		}(cur)
		cur = next
	}
	upTook := time.Since(upStart)
	h.measure.Store(false)
	final := cur.pid
	close(churnStop)
	churnWG.Wait() // each worker is bounded by its 20s per connection

	// No socket leaked: the final process holds the long-lived pairs, its
	// listener and its control socket, and a small baseline.
	liveSockets := -1
	{
		want := 2*nlong + baseSockets
		eventually(5*time.Second, 5*time.Millisecond, func() bool {
			liveSockets, _, _ = fdCounts(final)
			return liveSockets <= want+4
		})
		if liveSockets < 2*nlong || liveSockets > want+4 {
			t.Errorf("the final process (pid %d) holds %d sockets with %d live connections, want %d..%d (2 per connection + %d at start)",
				final, liveSockets, nlong, 2*nlong, want+4, baseSockets)
		}
	}

	// End every stream; each end checks its whole stream and EOF.
	h.stopStreams()
	endStart := time.Now()
	h.waitAll(t, long, 60*time.Second)
	endTook := time.Since(endStart)

	// Once the connections are gone, so are their sockets.
	var endSockets, endPipes, endTotal int
	{
		eventually(10*time.Second, 5*time.Millisecond, func() bool {
			endSockets, endPipes, endTotal = fdCounts(final)
			return endSockets <= baseSockets
		})
		if endSockets > baseSockets {
			t.Errorf("the final process (pid %d) holds %d sockets after every connection ended, %d at start", final, endSockets, baseSockets)
		}
	}
	exitWG.Wait() // bounded: 20s each, in parallel
	if exited(final) {
		t.Errorf("the final process %d is gone", final)
	}

	// The figures.
	var pending int64
	var worstExit time.Duration
	var worstTook time.Duration
	for i, s := range steps {
		pending += s.r.pending
		ex := time.Duration(s.exitTook.Load())
		exs := ex.Round(time.Millisecond).String()
		if ex < 0 {
			exs = "STILL RUNNING"
			t.Errorf("upgrade %d: the old process %d was still running 20s after the trigger", i+1, s.old)
		}
		worstExit = max(worstExit, ex)
		worstTook = max(worstTook, s.r.took)
		t.Logf("upgrade %2d: pid %d -> %d in %s: moved %d, pending bytes carried %d; old process exited %s after the trigger",
			i+1, s.old, s.r.newPid, s.r.took.Round(time.Millisecond), s.r.moved, s.r.pending, exs)
	}
	h.gapMu.Lock()
	var names []string
	for n := range h.maxGap {
		names = append(names, n)
	}
	sort.Strings(names)
	var gaps []string
	var worstGap time.Duration
	for _, n := range names {
		gaps = append(gaps, fmt.Sprintf("%s %s (conn %d)", n, h.maxGap[n].Round(time.Millisecond), h.maxGapID[n]))
		worstGap = max(worstGap, h.maxGap[n])
	}
	h.gapMu.Unlock()
	t.Logf("%d long-lived connections (%s), %d new connections during the upgrades, %d refused; %d resumed in an old process",
		nlong, shapeSummary(scale), churned.Load(), refused.Load(), resumed)
	t.Logf("%d upgrades took %s (slowest %s); old processes exited at most %s after their trigger",
		upgrades, upTook.Round(time.Millisecond), worstTook.Round(time.Millisecond), worstExit.Round(time.Millisecond))
	t.Logf("longest client-observed pause during the upgrades: %s; per shape: %s", worstGap.Round(time.Millisecond), strings.Join(gaps, ", "))
	t.Logf("pending bytes carried over all upgrades: %d; payload bytes verified: %d", pending, h.verified.Load())
	t.Logf("final pid %d: sockets %d with %d live connections, then %d (pipes %d, fds %d) after they ended; at start sockets %d, pipes %d, fds %d",
		final, liveSockets, nlong, endSockets, endPipes, endTotal, baseSockets, basePipes, baseTotal)
	t.Logf("setup %s, streams ended in %s, whole test %s", setup.Round(time.Millisecond), endTook.Round(time.Millisecond), time.Since(testStart).Round(time.Millisecond))

	if n, kinds, first := h.errorCount(); n > 0 {
		t.Errorf("%d stream errors %v; first ones:\n%s", n, kinds, strings.Join(first, "\n"))
	}
	// For a stream that broke: which upgrades had its broken byte in
	// flight (written by the test, not yet read back)?
	for ci, tc := range long {
		for d := 0; d < 2; d++ {
			bad := tc.badOff[d].Load() - 1
			if bad < 0 {
				continue
			}
			var during []string
			for i, s := range steps {
				if s == nil || s.before == nil {
					continue
				}
				b, a := s.before[ci][d], s.after[ci][d]
				// in flight at some moment of the upgrade: written before it ended, not read before it began
				if b[0] <= bad && bad < a[1] {
					during = append(during, fmt.Sprintf("upgrade %d (read %d..%d, written %d..%d, %d pending bytes carried in all)",
						i+1, b[0], a[0], b[1], a[1], s.r.pending))
				}
			}
			t.Errorf("conn %d (%s) %s: the first bad byte, at stream offset %d, was in flight during: %s",
				tc.id, tc.cls.name, []string{"c2u", "u2c"}[d], bad, strings.Join(during, "; "))
		}
	}
	if refused.Load() > 0 {
		t.Errorf("%d new connections refused", refused.Load())
	}
	if churned.Load() == 0 {
		t.Errorf("no new connection was made during the upgrades")
	}
	if pending == 0 {
		t.Errorf("no pending bytes were carried in %d upgrades: the slow readers did not make baton hold bytes at quiesce", upgrades)
	}
}

// snapshot records where each stream of conns is: [conn][dir]{read, written}.
func snapshot(conns []*tconn) [][2][2]int64 {
	out := make([][2][2]int64, len(conns))
	for i, tc := range conns {
		for d := 0; d < 2; d++ {
			out[i][d] = [2]int64{tc.read[d].Load(), tc.written[d].Load()}
		}
	}
	return out
}

func shapeSummary(scale int) string {
	var s []string
	for _, sh := range manyTimesShapes {
		s = append(s, fmt.Sprintf("%d %s", sh.n/scale, sh.cls.name))
	}
	return strings.Join(s, ", ")
}
