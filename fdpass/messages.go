package fdpass

import (
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
)

// ProtoVersion is the handoff protocol a child announces in HELLO; a parent
// refuses any other with ERROR. It versions the bodies below, not the header.
const ProtoVersion = 1

// Bodies of the handoff records (HANDOFF.md §2.4), written with an Encoder.
// "fd" is a u16 index into the record's descriptors; text is u16-prefixed,
// bytes u32-prefixed.
//
//	HELLO      u16 proto | text build | u32 pid
//	HELLO_OK   u64 generation | u32 parent pid
//	ERROR      text reason
//	LISTENERS  bool last | u16 n | n × (text name | fd)
//	READY      u16 n | n × text name
//	BATCH      u64 batch | u16 n | n × (u64 id | u8 nfiles | nfiles × fd | u32 state length)
//	DATA       u64 batch | (u64 id | u32 offset | bytes chunk)+   as many entries as fit
//	BATCH_END  u64 batch | u16 n | u32 crc32c of the states, concatenated in BATCH order
//	ACCEPTED   u64 batch | u16 n | n × u64 id | u16 m | m × (u64 id | text reason)
//	DONE       empty
//	DONE_OK    u32 pid
//
// Each record's Seq is one more than the sender's previous record (the first
// is 1), and Ack is the Seq of the last record the sender received; a
// receiver refuses anything else as ErrProtocol.

// Handoff errors, in addition to the wire errors of record.go. Test with errors.Is.
var (
	// ErrProtocol means the peer sent a well-formed record that does not fit
	// the sequence: an unexpected type, a wrong seq, an unknown batch or flow id.
	ErrProtocol = errors.New("fdpass: handoff protocol violation")
	// ErrPeer means the peer gave up and said why in an ERROR record.
	ErrPeer = errors.New("fdpass: peer gave up")
	// ErrChildExited means the new process exited (or was killed) before DONE_OK.
	ErrChildExited = errors.New("fdpass: new process exited")
	// ErrParentGone means the old process closed the channel (it died) before DONE.
	ErrParentGone = errors.New("fdpass: old process gone before DONE")
	// ErrRolledBack wraps the cause of a failed Upgrade after its rollback.
	ErrRolledBack = errors.New("fdpass: upgrade rolled back")
)

// castagnoli is the CRC-32C table for BATCH_END.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maxReason bounds a reason sent in ERROR or ACCEPTED, so that 126 of them
// fit one record.
const maxReason = 400

func clip(s string) string {
	if len(s) > maxReason {
		return s[:maxReason]
	}
	return s
}

// peer is one end of the handoff channel: it numbers what it sends and
// checks the numbering of what it receives.
type peer struct {
	c    *net.UnixConn
	seq  uint64 // Seq of the last record sent
	recv uint64 // Seq of the last record received
}

// send sends a record of type t with e's body and files as its descriptors.
// It neither closes nor keeps files.
func (p *peer) send(t Type, e *Encoder, files ...*os.File) error {
	var body []byte
	if e != nil {
		var err error
		if body, err = e.Body(); err != nil {
			return fmt.Errorf("fdpass: encode %v: %w", t, err)
		}
	}
	p.seq++
	return Send(p.c, Record{Type: t, Seq: p.seq, Ack: p.recv, Body: body}, files...)
}

// sendError tells the peer why this side gives up. It is best effort: the
// peer may be gone already.
func (p *peer) sendError(cause error) {
	var e Encoder
	e.Text(clip(cause.Error()))
	p.send(TypeError, &e)
}

// receive reads the next record. An ERROR record becomes an error wrapping
// ErrPeer, a closed channel io.EOF. On any error no descriptor is left open;
// otherwise the caller owns the files.
func (p *peer) receive() (Record, []*os.File, error) {
	rec, files, err := Receive(p.c)
	if err != nil {
		return rec, nil, err
	}
	if rec.Seq != p.recv+1 || rec.Ack > p.seq {
		closeAll(files)
		return rec, nil, fmt.Errorf("%w: %v, want seq %d and ack ≤ %d", ErrProtocol, rec, p.recv+1, p.seq)
	}
	p.recv = rec.Seq
	if rec.Type == TypeError {
		closeAll(files)
		d := NewDecoder(rec.Body, 0)
		reason := d.Text()
		if d.Finish() != nil {
			reason = "(unreadable reason)"
		}
		return rec, nil, fmt.Errorf("%w: %s", ErrPeer, reason)
	}
	return rec, files, nil
}

// expect reads the next record and requires type t and no descriptors.
func (p *peer) expect(t Type) (*Decoder, error) {
	rec, files, err := p.receive()
	if err != nil {
		return nil, err
	}
	if rec.Type != t || len(files) > 0 {
		closeAll(files)
		return nil, fmt.Errorf("%w: got %v with %d descriptors, want %v", ErrProtocol, rec, len(files), t)
	}
	return NewDecoder(rec.Body, 0), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

func closeConns(conns []Conn) {
	for _, c := range conns {
		closeAll(c.Files)
	}
}

func connIDs(conns []Conn) []uint64 {
	ids := make([]uint64, len(conns))
	for i, c := range conns {
		ids[i] = c.ID
	}
	return ids
}

// accepted is the body of an ACCEPTED record.
type accepted struct {
	batch    uint64
	ok       []uint64
	rejected []uint64
	reasons  []string // reasons[i] is why rejected[i]
}

func (a *accepted) encode(e *Encoder) {
	e.Uint64(a.batch)
	e.Uint16(uint16(len(a.ok)))
	for _, id := range a.ok {
		e.Uint64(id)
	}
	e.Uint16(uint16(len(a.rejected)))
	for i, id := range a.rejected {
		e.Uint64(id)
		e.Text(clip(a.reasons[i]))
	}
}

// decodeAccepted decodes an ACCEPTED body and checks that it answers for
// each of ids (the flows of batch) exactly once.
func decodeAccepted(d *Decoder, batch uint64, ids []uint64) (accepted, error) {
	var a accepted
	a.batch = d.Uint64()
	for n := d.Uint16(); n > 0 && d.Err() == nil; n-- {
		a.ok = append(a.ok, d.Uint64())
	}
	for n := d.Uint16(); n > 0 && d.Err() == nil; n-- {
		a.rejected = append(a.rejected, d.Uint64())
		a.reasons = append(a.reasons, d.Text())
	}
	if err := d.Finish(); err != nil {
		return a, fmt.Errorf("ACCEPTED: %w", err)
	}
	if a.batch != batch {
		return a, fmt.Errorf("%w: ACCEPTED for batch %d, want %d", ErrProtocol, a.batch, batch)
	}
	left := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		left[id] = true
	}
	for _, id := range append(a.ok[:len(a.ok):len(a.ok)], a.rejected...) {
		if !left[id] {
			return a, fmt.Errorf("%w: ACCEPTED names flow %d twice or not in batch %d", ErrProtocol, id, batch)
		}
		delete(left, id)
	}
	if len(left) > 0 {
		return a, fmt.Errorf("%w: ACCEPTED for batch %d leaves %d flows unanswered", ErrProtocol, batch, len(left))
	}
	return a, nil
}
