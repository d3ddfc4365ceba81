package fdpass

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
)

// Takeover runs the new process's side of a handoff over c (from AdoptEnv).
// It says HELLO, gives the listeners to sink.AdoptListeners and answers READY,
// then takes each batch of flows: it checks the batch whole (every descriptor,
// every state byte, the CRC), gives it to sink.Import, sends ACCEPTED, and only
// then calls sink.Start for the accepted flows. On DONE it calls opts.Done and
// sends DONE_OK, and returns nil; the caller keeps serving, and later sees EOF
// on c when the old process exits, and closes c. Takeover does not close c.
//
// If the old process dies before DONE (EOF on c), Takeover returns an error
// wrapping ErrParentGone: the flows sink already accepted stay with it; the
// files of a batch not yet complete are closed, as their pending bytes are
// gone. If sink or the wire fails, Takeover sends ERROR and returns the cause;
// the old process will then kill this one. Before READY was sent the caller
// has nothing to serve and should exit.
//
// Sink methods are called on the caller's goroutine; Start must not block on
// the network, since the next batch waits for it. Every file Takeover receives
// goes to sink or is closed, on every path.
func Takeover(c *net.UnixConn, sink Sink, opts TakeoverOptions) error {
	t := &taker{peer: peer{c: c}, sink: sink, opts: opts}
	err := t.run()
	if err != nil && !errors.Is(err, ErrPeer) && !errors.Is(err, ErrParentGone) {
		t.sendError(err)
	}
	return err
}

// taker is the state of one Takeover.
type taker struct {
	peer
	sink  Sink
	opts  TakeoverOptions
	moved int // flows accepted so far
}

// gone turns a failed receive into ErrParentGone on EOF.
// step tells opts.Step that the protocol reached the named step.
func (t *taker) step(name string) {
	if t.opts.Step != nil {
		t.opts.Step(name)
	}
}

func (t *taker) gone(step string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w (%s; keeping %d accepted flows)", ErrParentGone, step, t.moved)
	}
	return fmt.Errorf("fdpass: takeover: %s: %w", step, err)
}

func (t *taker) run() error {
	var e Encoder
	e.Uint16(ProtoVersion)
	e.Text(t.opts.Build)
	e.Uint32(uint32(os.Getpid()))
	if err := t.send(TypeHello, &e); err != nil {
		return t.gone("HELLO", err)
	}
	d, err := t.expect(TypeHelloOK)
	if err != nil {
		return t.gone("HELLO_OK", err)
	}
	d.Uint64() // generation
	d.Uint32() // old pid
	if err := d.Finish(); err != nil {
		return t.gone("HELLO_OK", err)
	}
	t.step("after-hello")

	lns, err := t.receiveListeners()
	if err != nil {
		return err
	}
	adopted, err := t.sink.AdoptListeners(lns)
	if err != nil {
		return fmt.Errorf("fdpass: takeover: adopt listeners: %w", err)
	}
	e = Encoder{}
	e.Uint16(uint16(len(adopted)))
	for _, n := range adopted {
		e.Text(n)
	}
	if err := t.send(TypeReady, &e); err != nil {
		return t.gone("READY", err)
	}
	t.step("after-listeners")

	for {
		rec, files, err := t.receive()
		if err != nil {
			return t.gone("waiting for a batch", err)
		}
		switch {
		case rec.Type == TypeBatch:
			if err := t.takeBatch(rec, files); err != nil {
				return err
			}
		case rec.Type == TypeDone && len(files) == 0 && len(rec.Body) == 0:
			if t.opts.Done != nil {
				if err := t.opts.Done(); err != nil {
					return fmt.Errorf("fdpass: takeover: done: %w", err)
				}
			}
			t.step("before-done-ok")
			var e Encoder
			e.Uint32(uint32(os.Getpid()))
			if err := t.send(TypeDoneOK, &e); err != nil {
				return t.gone("DONE_OK", err)
			}
			return nil
		default:
			closeAll(files)
			return fmt.Errorf("%w: got %v with %d descriptors, want BATCH or DONE", ErrProtocol, rec, len(files))
		}
	}
}

// receiveListeners reads LISTENERS records up to the one flagged last.
func (t *taker) receiveListeners() ([]NamedFile, error) {
	var lns []NamedFile
	for {
		rec, files, err := t.receive()
		if err != nil {
			closeListeners(lns)
			return nil, t.gone("LISTENERS", err)
		}
		if rec.Type != TypeListeners {
			closeAll(files)
			closeListeners(lns)
			return nil, fmt.Errorf("%w: got %v, want LISTENERS", ErrProtocol, rec)
		}
		d := NewDecoder(rec.Body, len(files))
		last := d.Bool()
		part := make([]NamedFile, d.Uint16())
		for i := range part {
			part[i].Name = d.Text()
			if fd := d.FD(); fd >= 0 {
				part[i].File = files[fd]
			}
		}
		if err := d.Finish(); err != nil {
			closeAll(files)
			closeListeners(lns)
			return nil, fmt.Errorf("fdpass: takeover: LISTENERS: %w", err)
		}
		lns = append(lns, part...)
		if last {
			return lns, nil
		}
	}
}

func closeListeners(lns []NamedFile) {
	for _, l := range lns {
		closeAll([]*os.File{l.File})
	}
}

// incoming is a batch being received.
type incoming struct {
	id    uint64
	conns []Conn
	want  []uint32       // want[i]: state length of conns[i]
	index map[uint64]int // flow id → index in conns
	files []*os.File     // every file of the batch, closed unless given to sink
}

// takeBatch receives the rest of the batch that rec opens, imports it and
// answers ACCEPTED.
func (t *taker) takeBatch(rec Record, files []*os.File) error {
	b := &incoming{files: files}
	defer func() { closeAll(b.files) }()
	if err := b.header(rec, files); err != nil {
		return fmt.Errorf("fdpass: takeover: BATCH: %w", err)
	}
	t.step("mid-batch")
	for {
		rec, files, err := t.receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w (batch %d incomplete, its %d flows closed; keeping %d accepted flows)",
					ErrParentGone, b.id, len(b.conns), t.moved)
			}
			return fmt.Errorf("fdpass: takeover: batch %d: %w", b.id, err)
		}
		if len(files) > 0 {
			closeAll(files)
			return fmt.Errorf("%w: %v carries descriptors", ErrProtocol, rec)
		}
		d := NewDecoder(rec.Body, 0)
		if rec.Type == TypeData {
			err = b.data(d)
		} else if rec.Type == TypeBatchEnd {
			err = b.end(d)
			if err == nil {
				break
			}
		} else {
			err = fmt.Errorf("%w: got %v in batch %d", ErrProtocol, rec, b.id)
		}
		if err != nil {
			return fmt.Errorf("fdpass: takeover: batch %d: %w", b.id, err)
		}
	}

	b.files = nil // the sink owns them now, also those it rejects
	imported, rejected := t.sink.Import(b.conns)
	// Answer for each flow of the batch once, in batch order, whatever the
	// sink returned: an id it names twice or that is not in the batch would
	// make the old process roll back.
	a := accepted{batch: b.id}
	isImported := make(map[uint64]bool, len(imported))
	for _, id := range imported {
		isImported[id] = true
	}
	for _, c := range b.conns {
		if isImported[c.ID] {
			a.ok = append(a.ok, c.ID)
			continue
		}
		why, ok := rejected[c.ID]
		if !ok {
			why = "not imported"
		}
		a.rejected = append(a.rejected, c.ID)
		a.reasons = append(a.reasons, why)
	}
	ok := a.ok
	var e Encoder
	a.encode(&e)
	err := t.send(TypeAccepted, &e)
	// Start even if the send failed: the old process is then gone (it never
	// closes c while this process lives), so nobody else will serve them.
	t.sink.Start(ok)
	t.moved += len(ok)
	if err != nil {
		return t.gone(fmt.Sprintf("ACCEPTED for batch %d", b.id), err)
	}
	t.step("after-accepted")
	return nil
}

// header decodes the BATCH record.
func (b *incoming) header(rec Record, files []*os.File) error {
	d := NewDecoder(rec.Body, len(files))
	b.id = d.Uint64()
	n := int(d.Uint16())
	b.index = make(map[uint64]int, n)
	for i := 0; i < n && d.Err() == nil; i++ {
		c := Conn{ID: d.Uint64()}
		for k := d.Uint8(); k > 0 && d.Err() == nil; k-- {
			if fd := d.FD(); fd >= 0 {
				c.Files = append(c.Files, files[fd])
			}
		}
		size := d.Uint32()
		if _, dup := b.index[c.ID]; dup && d.Err() == nil {
			return fmt.Errorf("%w: flow %d twice", ErrProtocol, c.ID)
		}
		b.index[c.ID] = len(b.conns)
		b.conns = append(b.conns, c)
		b.want = append(b.want, size)
	}
	return d.Finish()
}

// data appends the chunks of one DATA record to their flows' states.
func (b *incoming) data(d *Decoder) error {
	batch := d.Uint64()
	if batch != b.id && d.Err() == nil {
		return fmt.Errorf("%w: DATA for batch %d in batch %d", ErrProtocol, batch, b.id)
	}
	for n := 0; d.Len() > 0 && d.Err() == nil; n++ {
		id, off, chunk := d.Uint64(), d.Uint32(), d.Bytes()
		if d.Err() != nil {
			break
		}
		if err := b.chunk(batch, id, off, chunk); err != nil {
			return err
		}
	}
	if err := d.Finish(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	return nil
}

// chunk appends one (flow, offset, bytes) entry of a DATA record.
func (b *incoming) chunk(batch, id uint64, off uint32, chunk []byte) error {
	i, ok := b.index[id]
	if batch != b.id || !ok {
		return fmt.Errorf("%w: DATA for batch %d flow %d", ErrProtocol, batch, id)
	}
	c := &b.conns[i]
	if int(off) != len(c.State) || uint64(len(c.State))+uint64(len(chunk)) > uint64(b.want[i]) || len(chunk) == 0 {
		return fmt.Errorf("%w: DATA for flow %d at %d+%d, have %d of %d bytes",
			ErrProtocol, id, off, len(chunk), len(c.State), b.want[i])
	}
	if c.State == nil {
		c.State = make([]byte, 0, b.want[i])
	}
	c.State = append(c.State, chunk...)
	return nil
}

// end checks BATCH_END against what arrived.
func (b *incoming) end(d *Decoder) error {
	batch, n, sum := d.Uint64(), d.Uint16(), d.Uint32()
	if err := d.Finish(); err != nil {
		return fmt.Errorf("BATCH_END: %w", err)
	}
	if batch != b.id || int(n) != len(b.conns) {
		return fmt.Errorf("%w: BATCH_END for batch %d of %d flows", ErrProtocol, batch, n)
	}
	crc := uint32(0)
	for i, c := range b.conns {
		if len(c.State) != int(b.want[i]) {
			return fmt.Errorf("%w: flow %d has %d of %d state bytes", ErrProtocol, c.ID, len(c.State), b.want[i])
		}
		crc = crc32.Update(crc, castagnoli, c.State)
	}
	if crc != sum {
		return fmt.Errorf("%w: batch %d crc32c %#x, want %#x", ErrMalformed, b.id, crc, sum)
	}
	return nil
}
