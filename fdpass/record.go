package fdpass

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants (HANDOFF.md §2.3).
const (
	// Magic opens every record.
	Magic = "BTN1"
	// Version is the only header version this package reads and writes.
	Version = 1
	// HeaderSize is the fixed size of a record header.
	HeaderSize = 32
	// MaxRecord bounds a whole record, header included. Receive reads into a
	// buffer one byte larger, so any larger record is seen as such.
	MaxRecord = 64 << 10
	// MaxBody is the largest body that fits a record.
	MaxBody = MaxRecord - HeaderSize
	// MaxFDs is the most descriptors one record may carry. The kernel refuses
	// more than SCM_MAX_FD (253) with EINVAL; 252 is what HAProxy sends
	// (MAX_SEND_FD), and it leaves room for 126 TCP pairs.
	MaxFDs = 252
)

// Errors. Each error from this package wraps one of these, so test with errors.Is.
var (
	// ErrNotSupported is returned by the socket functions on platforms other than Linux.
	ErrNotSupported = errors.New("fdpass: not supported on this platform")
	// ErrTruncated means a record or its descriptors did not arrive whole
	// (MSG_TRUNC or MSG_CTRUNC, or a record over MaxRecord): an oversize record,
	// more descriptors than the receive buffer holds, or descriptors the kernel
	// dropped at the receiver's RLIMIT_NOFILE (unix(7); HANDOFF.md P7).
	ErrTruncated = errors.New("fdpass: record or control message truncated")
	// ErrMalformed means a record or body does not parse: short, bad magic,
	// version or type, a length that disagrees with the data, or trailing bytes.
	ErrMalformed = errors.New("fdpass: malformed record")
	// ErrFDCount means the descriptors received are not the number the header announces.
	ErrFDCount = errors.New("fdpass: descriptor count does not match header")
	// ErrFDIndex means a body refers to a descriptor index that is out of range
	// or already used, or leaves a received descriptor unreferenced.
	ErrFDIndex = errors.New("fdpass: bad descriptor index")
	// ErrFDType means a descriptor is not the kind of socket it was claimed to be.
	ErrFDType = errors.New("fdpass: descriptor of the wrong type")
	// ErrTooManyFDs is returned by Send for more than MaxFDs files.
	ErrTooManyFDs = errors.New("fdpass: too many descriptors for one record")
	// ErrTooLarge is returned when a body would exceed MaxBody.
	ErrTooLarge = errors.New("fdpass: body too large for one record")
)

// Type is the message type of a record. The sequence is in HANDOFF.md §2.4;
// "old" is the process handing off, "new" the one it spawned.
type Type uint16

// Message types. The values are part of the wire format: append, never renumber.
const (
	TypeHello     Type = 1 + iota // new → old: proto version, build, pid, config hash
	TypeHelloOK                   // old → new: generation, old pid
	TypeListeners                 // old → new: listening sockets, by name
	TypeReady                     // new → old: adopted listener names; new is accepting
	TypeBatch                     // old → new: ≤126 quiesced TCP pairs
	TypeData                      // old → new: pending bytes of one pair and direction
	TypeBatchEnd                  // old → new: end of a batch, with its crc32c
	TypeAccepted                  // new → old: pairs adopted and rejected in a batch
	TypeUDPBatch                  // old → new: one UDP listener with its sessions
	TypeDone                      // old → new: nothing more to hand off
	TypeDoneOK                    // new → old: PID file written; old may exit
	TypeError                     // either way: the sender gives up, with a reason
)

var typeNames = [...]string{
	TypeHello: "HELLO", TypeHelloOK: "HELLO_OK", TypeListeners: "LISTENERS",
	TypeReady: "READY", TypeBatch: "BATCH", TypeData: "DATA", TypeBatchEnd: "BATCH_END",
	TypeAccepted: "ACCEPTED", TypeUDPBatch: "UDP_BATCH", TypeDone: "DONE",
	TypeDoneOK: "DONE_OK", TypeError: "ERROR",
}

// Valid reports whether t is a known message type.
func (t Type) Valid() bool { return t >= TypeHello && t <= TypeError }

func (t Type) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint16(t))
}

// Record is one message on the handoff channel, without its descriptors: Send
// takes those as files and Receive returns them next to the Record. The header's
// nfds and bodylen come from those files and from Body.
type Record struct {
	Type  Type
	Seq   uint64 // sender's record number
	Ack   uint64 // highest peer Seq this sender has processed
	Flags uint16 // reserved for the protocol; carried as is
	Body  []byte // at most MaxBody bytes
}

func (r Record) String() string {
	return fmt.Sprintf("%v seq=%d ack=%d flags=%#x body=%dB", r.Type, r.Seq, r.Ack, r.Flags, len(r.Body))
}

// appendRecord appends r's wire form, announcing nfds descriptors, to dst.
func appendRecord(dst []byte, r Record, nfds int) ([]byte, error) {
	if !r.Type.Valid() {
		return dst, fmt.Errorf("%w: type %v", ErrMalformed, r.Type)
	}
	if len(r.Body) > MaxBody {
		return dst, fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, len(r.Body), MaxBody)
	}
	if nfds < 0 || nfds > MaxFDs {
		return dst, fmt.Errorf("%w: %d, max %d", ErrTooManyFDs, nfds, MaxFDs)
	}
	le := binary.LittleEndian
	dst = append(dst, Magic...)
	dst = le.AppendUint16(dst, Version)
	dst = le.AppendUint16(dst, uint16(r.Type))
	dst = le.AppendUint64(dst, r.Seq)
	dst = le.AppendUint64(dst, r.Ack)
	dst = le.AppendUint16(dst, uint16(nfds))
	dst = le.AppendUint16(dst, r.Flags)
	dst = le.AppendUint32(dst, uint32(len(r.Body)))
	return append(dst, r.Body...), nil
}

// parseRecord decodes one whole record b (exactly what one recvmsg returned)
// and the descriptor count its header announces. The Body aliases b.
func parseRecord(b []byte) (Record, int, error) {
	if len(b) < HeaderSize {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(b))
	}
	if len(b) > MaxRecord {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, max %d", ErrTruncated, len(b), MaxRecord)
	}
	if string(b[:4]) != Magic {
		return Record{}, 0, fmt.Errorf("%w: bad magic %q", ErrMalformed, b[:4])
	}
	le := binary.LittleEndian
	if v := le.Uint16(b[4:]); v != Version {
		return Record{}, 0, fmt.Errorf("%w: version %d, want %d", ErrMalformed, v, Version)
	}
	r := Record{
		Type:  Type(le.Uint16(b[6:])),
		Seq:   le.Uint64(b[8:]),
		Ack:   le.Uint64(b[16:]),
		Flags: le.Uint16(b[26:]),
	}
	if !r.Type.Valid() {
		return Record{}, 0, fmt.Errorf("%w: unknown type %d", ErrMalformed, uint16(r.Type))
	}
	nfds := int(le.Uint16(b[24:]))
	if nfds > MaxFDs {
		return Record{}, 0, fmt.Errorf("%w: header announces %d, max %d", ErrFDCount, nfds, MaxFDs)
	}
	if n := le.Uint32(b[28:]); uint64(n) != uint64(len(b)-HeaderSize) {
		return Record{}, 0, fmt.Errorf("%w: bodylen %d, got %d bytes", ErrMalformed, n, len(b)-HeaderSize)
	}
	r.Body = b[HeaderSize:]
	return r, nfds, nil
}
