package fdpass

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// Defaults for UpgradeOptions.
const (
	DefaultHelloTimeout = 60 * time.Second
	DefaultBatchTimeout = 5 * time.Second
	MaxBatchSize        = MaxFDs / 2 // 126 TCP pairs
)

// drainTimeout bounds the reading of what a dead child left on the channel.
// Its records are all queued already and EOF follows them; the bound only
// matters if something else still holds the child's end.
const drainTimeout = time.Second

// Upgrade runs the old process's side of a handoff over c, its end of the
// socketpair, once the child has been started with the other end. It reads
// HELLO, hands over src's listeners, and after READY pauses accepting and
// moves src's flows batch by batch until src has none left; then it sends
// DONE and returns after DONE_OK, with Report.NewPID set from HELLO. The
// caller then exits; it must keep c open until it does, so that the child
// reads DONE_OK and sees EOF only when this process is gone.
//
// On any failure (an ERROR, a bad record, a timeout, the child exiting) Upgrade
// kills the child, waits for opts.ChildExited, and only then rolls back
// (HANDOFF.md §2.7): flows of a batch the dead child had answered with
// ACCEPTED are lost and given to src.Release; every other quiesced flow goes
// to src.Restore; then src.ResumeAccepting if it had paused. The error wraps
// ErrRolledBack and the cause, and the Report counts every quiesced flow once:
// Resumed, or Lost (with Moved zero, as the flows moved earlier died with the
// child). Before READY nothing has changed and there is nothing to undo.
//
// All Source methods are called on the caller's goroutine. Upgrade closes every
// file src gives it, on every path, and leaves no goroutine behind. c's
// deadlines are Upgrade's to set while it runs.
func Upgrade(c *net.UnixConn, src Source, opts UpgradeOptions) (Report, error) {
	if opts.ChildExited == nil || opts.Kill == nil {
		return Report{}, errors.New("fdpass: upgrade: UpgradeOptions.ChildExited and Kill are required")
	}
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = DefaultHelloTimeout
	}
	if opts.BatchTimeout <= 0 {
		opts.BatchTimeout = DefaultBatchTimeout
	}
	if opts.BatchSize <= 0 || opts.BatchSize > MaxBatchSize {
		opts.BatchSize = MaxBatchSize
	}
	u := &upgrader{peer: peer{c: c}, src: src, opts: opts, stop: make(chan struct{}), pending: map[uint64]bool{}}
	u.wg.Add(1)
	go u.watch()
	err := u.run()
	if err != nil {
		err = u.rollback(err)
	}
	u.stopWatch()
	return u.rep, err
}

// upgrader is the state of one Upgrade.
type upgrader struct {
	peer
	src  Source
	opts UpgradeOptions
	rep  Report

	stop     chan struct{} // closed to end watch
	stopOnce sync.Once
	wg       sync.WaitGroup

	paused   bool            // PauseAccepting was called
	pending  map[uint64]bool // quiesced flows not yet released or restored
	batch    uint64          // id of the last batch sent
	inflight []uint64        // flows of a batch sent but not answered, or nil
	// inflightLost: an ACCEPTED for the batch in flight arrived but did not
	// parse, so the child may have started any of its flows.
	inflightLost bool
	said         string // reason of an ERROR found by drain
}

// watch cuts any wait on c short when the child exits.
func (u *upgrader) watch() {
	defer u.wg.Done()
	select {
	case <-u.opts.ChildExited:
		u.c.SetDeadline(time.Unix(1, 0))
	case <-u.stop:
	}
}

func (u *upgrader) stopWatch() {
	u.stopOnce.Do(func() { close(u.stop) })
	u.wg.Wait()
}

// deadline gives the next step d. It checks for the child's exit after
// setting the deadline, so that watch's past deadline is never overwritten
// unseen.
func (u *upgrader) deadline(d time.Duration) error {
	u.c.SetDeadline(time.Now().Add(d))
	select {
	case <-u.opts.ChildExited:
		return ErrChildExited
	default:
		return nil
	}
}

func (u *upgrader) progress(format string, args ...any) {
	if u.opts.Progress != nil {
		u.opts.Progress(format, args...)
	}
}

// fail turns a channel error into one that says what this side was doing,
// and names the child's exit rather than a bare timeout when that is the cause.
func (u *upgrader) fail(step string, err error) error {
	select {
	case <-u.opts.ChildExited:
		err = fmt.Errorf("%w (%w)", ErrChildExited, err)
	default:
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: channel closed", ErrChildExited)
		}
	}
	return fmt.Errorf("%s: %w", step, err)
}

func (u *upgrader) run() error {
	u.progress("waiting for HELLO from the new process")
	if err := u.deadline(u.opts.HelloTimeout); err != nil {
		return u.fail("HELLO", err)
	}
	d, err := u.expect(TypeHello)
	if err != nil {
		return u.fail("HELLO", err)
	}
	proto, build, pid := d.Uint16(), d.Text(), d.Uint32()
	if err := d.Finish(); err != nil {
		return u.fail("HELLO", err)
	}
	u.rep.NewPID = int(pid)
	if proto != ProtoVersion {
		err := fmt.Errorf("%w: new process speaks handoff protocol %d, this one %d", ErrProtocol, proto, ProtoVersion)
		u.sendError(err)
		return err
	}
	u.progress("new process %d (%s) said HELLO", pid, build)
	var e Encoder
	e.Uint64(u.opts.Generation)
	e.Uint32(uint32(os.Getpid()))
	if err := u.send(TypeHelloOK, &e); err != nil {
		return u.fail("HELLO_OK", err)
	}

	if err := u.sendListeners(); err != nil {
		return err
	}
	if err := u.deadline(u.opts.HelloTimeout); err != nil {
		return u.fail("READY", err)
	}
	if d, err = u.expect(TypeReady); err != nil {
		return u.fail("READY", err)
	}
	var names []string
	for n := d.Uint16(); n > 0 && d.Err() == nil; n-- {
		names = append(names, d.Text())
	}
	if err := d.Finish(); err != nil {
		return u.fail("READY", err)
	}
	u.progress("new process adopted %d listeners and is accepting: %v", len(names), names)

	u.src.PauseAccepting()
	u.paused = true
	u.progress("stopped accepting; moving connections")
	for {
		conns, done, err := u.src.Quiesce(u.opts.BatchSize)
		for _, c := range conns {
			u.pending[c.ID] = true
		}
		if err != nil {
			closeConns(conns)
			return fmt.Errorf("quiesce: %w", err)
		}
		if err := u.sendConns(conns); err != nil {
			return err
		}
		if done {
			break
		}
	}

	if err := u.deadline(u.opts.BatchTimeout); err != nil {
		return u.fail("DONE", err)
	}
	if err := u.send(TypeDone, nil); err != nil {
		return u.fail("DONE", err)
	}
	if d, err = u.expect(TypeDoneOK); err != nil {
		return u.fail("DONE_OK", err)
	}
	if pid := d.Uint32(); d.Finish() != nil || int(pid) != u.rep.NewPID {
		return u.fail("DONE_OK", fmt.Errorf("%w: DONE_OK from pid %d, HELLO from %d", ErrProtocol, pid, u.rep.NewPID))
	}
	u.c.SetDeadline(time.Time{})
	u.progress("new process %d took over: %d flows moved, %d resumed here", u.rep.NewPID, u.rep.Moved, u.rep.Resumed)
	return nil
}

// sendListeners sends src's listeners in LISTENERS records of at most
// MaxFDs descriptors, the last one flagged, and closes them.
func (u *upgrader) sendListeners() error {
	lns, err := u.src.Listeners()
	defer func() {
		for _, l := range lns {
			closeAll([]*os.File{l.File})
		}
	}()
	if err != nil {
		return fmt.Errorf("listeners: %w", err)
	}
	if err := u.deadline(u.opts.HelloTimeout); err != nil {
		return u.fail("LISTENERS", err)
	}
	for start := 0; start == 0 || start < len(lns); start += MaxFDs {
		part := lns[start:min(start+MaxFDs, len(lns))]
		var e Encoder
		e.Bool(start+len(part) == len(lns))
		e.Uint16(uint16(len(part)))
		files := make([]*os.File, len(part))
		for i, l := range part {
			e.Text(l.Name)
			e.FD(i)
			files[i] = l.File
		}
		if err := u.send(TypeListeners, &e, files...); err != nil {
			return u.fail("LISTENERS", err)
		}
	}
	u.progress("sent %d listeners", len(lns))
	return nil
}

// sendConns moves conns in as many batches as their descriptors need, and
// closes their files. A flow with more files than a record carries cannot
// move and is restored at once.
func (u *upgrader) sendConns(conns []Conn) error {
	for len(conns) > 0 {
		n, nfds := 0, 0
		for n < len(conns) && n < u.opts.BatchSize && nfds+len(conns[n].Files) <= MaxFDs {
			nfds += len(conns[n].Files)
			n++
		}
		if n == 0 {
			closeAll(conns[0].Files)
			u.resolve(nil, []uint64{conns[0].ID})
			conns = conns[1:]
			continue
		}
		err := u.sendBatch(conns[:n])
		conns = conns[n:]
		if err != nil {
			closeConns(conns)
			return err
		}
	}
	return nil
}

// sendBatch sends one BATCH with its DATA and BATCH_END, closes the files,
// and handles the ACCEPTED that answers it.
func (u *upgrader) sendBatch(conns []Conn) error {
	var files []*os.File
	for _, c := range conns {
		files = append(files, c.Files...)
	}
	defer closeAll(files) // the kernel holds its own references in flight
	u.batch++
	id := u.batch
	step := fmt.Sprintf("batch %d", id)
	if err := u.deadline(u.opts.BatchTimeout); err != nil {
		return u.fail(step, err)
	}
	var e Encoder
	e.Uint64(id)
	e.Uint16(uint16(len(conns)))
	crc, fd := uint32(0), 0
	for _, c := range conns {
		e.Uint64(c.ID)
		e.Uint8(uint8(len(c.Files)))
		for range c.Files {
			e.FD(fd)
			fd++
		}
		e.Uint32(uint32(len(c.State)))
		crc = crc32.Update(crc, castagnoli, c.State)
	}
	u.inflight = connIDs(conns)
	if err := u.send(TypeBatch, &e, files...); err != nil {
		return u.fail(step, err)
	}
	closeAll(files)
	files = nil
	// DATA records carry the states as (flow, offset, bytes) entries, as
	// many as fit in a record: small states travel many to a record.
	const entryHead = 8 + 4 + 4
	var d Encoder
	d.Uint64(id)
	flush := func() error {
		if d.Len() == 8 {
			return nil
		}
		err := u.send(TypeData, &d)
		d = Encoder{}
		d.Uint64(id)
		return err
	}
	for _, c := range conns {
		for off := 0; off < len(c.State); {
			room := MaxBody - d.Len() - entryHead
			if room < 1 {
				if err := flush(); err != nil {
					return u.fail(step, err)
				}
				continue
			}
			n := min(room, len(c.State)-off)
			d.Uint64(c.ID)
			d.Uint32(uint32(off))
			d.Bytes(c.State[off : off+n])
			off += n
		}
	}
	if err := flush(); err != nil {
		return u.fail(step, err)
	}
	e = Encoder{}
	e.Uint64(id)
	e.Uint16(uint16(len(conns)))
	e.Uint32(crc)
	if err := u.send(TypeBatchEnd, &e); err != nil {
		return u.fail(step, err)
	}
	rec, rfiles, err := u.receive()
	closeAll(rfiles)
	if err != nil {
		if rec.Type == TypeAccepted {
			u.inflightLost = true // out of sequence, but the child may have started them
		}
		return u.fail(step, err)
	}
	if rec.Type != TypeAccepted {
		return u.fail(step, fmt.Errorf("%w: got %v, want ACCEPTED", ErrProtocol, rec))
	}
	a, err := decodeAccepted(NewDecoder(rec.Body, len(rfiles)), id, u.inflight)
	if err != nil {
		u.inflightLost = true // the child may have started any of them
		return u.fail(step, err)
	}
	u.inflight = nil
	u.resolve(a.ok, a.rejected)
	u.progress("batch %d: %d flows moved, %d rejected and resumed here", id, len(a.ok), len(a.rejected))
	for i, rid := range a.rejected {
		if i < len(a.reasons) {
			u.progress("rejected flow %d, resumed here: %s", rid, a.reasons[i])
		}
	}
	return nil
}

// resolve hands moved flows to Release and rejected ones to Restore.
func (u *upgrader) resolve(moved, rejected []uint64) {
	for _, id := range moved {
		delete(u.pending, id)
	}
	for _, id := range rejected {
		delete(u.pending, id)
	}
	if len(moved) > 0 {
		u.src.Release(moved)
		u.rep.Moved += len(moved)
	}
	if len(rejected) > 0 {
		u.src.Restore(rejected)
		u.rep.Resumed += len(rejected)
	}
}

// rollback undoes a failed upgrade after the child is dead (HANDOFF.md §2.7,
// I1) and returns cause wrapped with the counts.
func (u *upgrader) rollback(cause error) error {
	u.progress("upgrade failed, rolling back: %v", cause)
	u.opts.Kill()
	<-u.opts.ChildExited
	u.stopWatch() // watch must not cut the drain short
	lost := u.drain()
	for _, id := range lost {
		delete(u.pending, id)
	}
	if len(lost) > 0 {
		u.src.Release(lost)
	}
	restore := make([]uint64, 0, len(u.pending))
	for id := range u.pending {
		restore = append(restore, id)
	}
	clear(u.pending)
	slices.Sort(restore)
	if len(restore) > 0 {
		u.src.Restore(restore)
	}
	if u.paused {
		u.src.ResumeAccepting()
	}
	u.rep.Lost = u.rep.Moved + len(lost)
	u.rep.Moved = 0
	u.rep.Resumed += len(restore)
	u.progress("rolled back: %d flows resumed here, %d lost with the new process", u.rep.Resumed, u.rep.Lost)
	if u.said != "" && !errors.Is(cause, ErrPeer) {
		cause = fmt.Errorf("%w; before that it sent %w: %s", cause, ErrPeer, u.said)
	}
	return fmt.Errorf("%w (resumed %d, lost %d): %w", ErrRolledBack, u.rep.Resumed, u.rep.Lost, cause)
}

// drain reads what the dead child left on the channel, closing every
// descriptor, and returns the in-flight flows it had accepted: an ACCEPTED
// for the batch in flight means the child may have started them, so they are
// lost; its rejected flows stay pending and are restored. An ACCEPTED that
// does not parse loses the whole batch, as the child may have started any.
// It keeps the reason of an ERROR, which the child may have sent just
// before it exited.
func (u *upgrader) drain() (lost []uint64) {
	if u.inflightLost {
		lost, u.inflight = u.inflight, nil
	}
	u.c.SetReadDeadline(time.Now().Add(drainTimeout))
	for {
		rec, files, err := Receive(u.c)
		closeAll(files)
		if err != nil {
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrFDCount) {
				continue // a bad record was consumed; read on
			}
			return lost // EOF, deadline, or a closed c
		}
		if rec.Type == TypeError && u.said == "" {
			d := NewDecoder(rec.Body, 0)
			u.said = d.Text()
		}
		if rec.Type != TypeAccepted || u.inflight == nil {
			continue
		}
		a, err := decodeAccepted(NewDecoder(rec.Body, len(files)), u.batch, u.inflight)
		if err != nil {
			lost = u.inflight
		} else {
			lost = a.ok
		}
		u.inflight = nil
	}
}
