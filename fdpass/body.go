package fdpass

import (
	"encoding/binary"
	"fmt"
	"math"
)

// An Encoder builds a record body from fixed-width little-endian fields and
// length-prefixed strings. Errors are sticky: after the first one every call is
// a no-op, and Body reports it. The zero value is an empty body ready to use,
// of at most MaxBody bytes (one record's).
type Encoder struct {
	b   []byte
	err error
	max int // 0: MaxBody
}

// NewEncoder returns an Encoder whose body may grow to max bytes: for data
// the protocol carries in pieces over several records, as a Conn's State
// (at most MaxState).
func NewEncoder(max int) *Encoder { return &Encoder{max: max} }

func (e *Encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// grow reports whether n more bytes fit in a body, recording ErrTooLarge if not.
func (e *Encoder) grow(n int) bool {
	if e.err != nil {
		return false
	}
	limit := e.max
	if limit == 0 {
		limit = MaxBody
	}
	if n > limit-len(e.b) {
		e.fail(fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit))
		return false
	}
	return true
}

// Uint8 appends v.
func (e *Encoder) Uint8(v uint8) {
	if e.grow(1) {
		e.b = append(e.b, v)
	}
}

// Uint16 appends v.
func (e *Encoder) Uint16(v uint16) {
	if e.grow(2) {
		e.b = binary.LittleEndian.AppendUint16(e.b, v)
	}
}

// Uint32 appends v.
func (e *Encoder) Uint32(v uint32) {
	if e.grow(4) {
		e.b = binary.LittleEndian.AppendUint32(e.b, v)
	}
}

// Uint64 appends v.
func (e *Encoder) Uint64(v uint64) {
	if e.grow(8) {
		e.b = binary.LittleEndian.AppendUint64(e.b, v)
	}
}

// Bool appends v as one byte, 0 or 1.
func (e *Encoder) Bool(v bool) {
	var b uint8
	if v {
		b = 1
	}
	e.Uint8(b)
}

// Text appends s with a u16 length prefix; s must be shorter than 64 KiB.
// (Not named String: Decoder.String would make a Decoder a fmt.Stringer that
// consumes its input when printed.)
func (e *Encoder) Text(s string) {
	if len(s) > math.MaxUint16 {
		e.fail(fmt.Errorf("%w: string of %d bytes", ErrTooLarge, len(s)))
		return
	}
	if e.grow(2 + len(s)) {
		e.b = binary.LittleEndian.AppendUint16(e.b, uint16(len(s)))
		e.b = append(e.b, s...)
	}
}

// Bytes appends p with a u32 length prefix.
func (e *Encoder) Bytes(p []byte) {
	if e.grow(4 + len(p)) {
		e.b = binary.LittleEndian.AppendUint32(e.b, uint32(len(p)))
		e.b = append(e.b, p...)
	}
}

// FD appends a reference to the descriptor at index i of the files sent with
// this record, as a u16.
func (e *Encoder) FD(i int) {
	if i < 0 || i >= MaxFDs {
		e.fail(fmt.Errorf("%w: %d not in [0,%d)", ErrFDIndex, i, MaxFDs))
		return
	}
	e.Uint16(uint16(i))
}

// Len returns the number of bytes encoded so far, so a caller can close a
// batch before it would exceed MaxBody.
func (e *Encoder) Len() int { return len(e.b) }

// Body returns the encoded body, or the first error.
func (e *Encoder) Body() ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	return e.b, nil
}

// A Decoder reads a body written by an Encoder, received with nfds descriptors.
// It never panics: reading past the end or a bad value records ErrMalformed,
// a bad descriptor index records ErrFDIndex, and every later call returns the
// zero value. Check Err (or Finish) before acting on anything decoded.
type Decoder struct {
	b    []byte
	used []bool // used[i]: descriptor i has been referenced
	err  error
}

// NewDecoder returns a Decoder over body, whose record carried nfds descriptors.
func NewDecoder(body []byte, nfds int) *Decoder {
	return &Decoder{b: body, used: make([]bool, max(nfds, 0))}
}

func (d *Decoder) fail(err error) {
	if d.err == nil {
		d.err = err
		d.b = nil
	}
}

// take returns the next n bytes, or nil after recording an error.
func (d *Decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(fmt.Errorf("%w: %s needs %d bytes, %d left", ErrMalformed, what, n, len(d.b)))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// Uint8 reads a byte.
func (d *Decoder) Uint8() uint8 {
	if p := d.take(1, "u8"); p != nil {
		return p[0]
	}
	return 0
}

// Uint16 reads a u16.
func (d *Decoder) Uint16() uint16 {
	if p := d.take(2, "u16"); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

// Uint32 reads a u32.
func (d *Decoder) Uint32() uint32 {
	if p := d.take(4, "u32"); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// Uint64 reads a u64.
func (d *Decoder) Uint64() uint64 {
	if p := d.take(8, "u64"); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// Bool reads a byte that must be 0 or 1.
func (d *Decoder) Bool() bool {
	switch v := d.Uint8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(fmt.Errorf("%w: bool byte %d", ErrMalformed, v))
		return false
	}
}

// Text reads a u16-length-prefixed string.
func (d *Decoder) Text() string {
	n := d.Uint16()
	return string(d.take(int(n), "string"))
}

// Bytes reads a u32-length-prefixed byte string. The result aliases the body.
func (d *Decoder) Bytes() []byte {
	n := d.Uint32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.b)) {
		d.fail(fmt.Errorf("%w: bytes of length %d, %d left", ErrMalformed, n, len(d.b)))
		return nil
	}
	return d.take(int(n), "bytes")
}

// FD reads a descriptor index and returns it. The index must be below the
// record's descriptor count and not returned before by this Decoder; otherwise
// FD records ErrFDIndex and returns -1.
func (d *Decoder) FD() int {
	v := d.Uint16()
	if d.err != nil {
		return -1
	}
	i := int(v)
	switch {
	case i >= len(d.used):
		d.fail(fmt.Errorf("%w: %d, record has %d", ErrFDIndex, i, len(d.used)))
		return -1
	case d.used[i]:
		d.fail(fmt.Errorf("%w: %d used twice", ErrFDIndex, i))
		return -1
	}
	d.used[i] = true
	return i
}

// Len returns the number of unread bytes.
func (d *Decoder) Len() int { return len(d.b) }

// Err returns the first error, or nil.
func (d *Decoder) Err() error { return d.err }

// Finish returns the first error; failing that, ErrMalformed if bytes are left
// unread, or ErrFDIndex if a received descriptor was never referenced. A record
// whose body passes Finish accounts for every descriptor that came with it.
func (d *Decoder) Finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) > 0 {
		d.fail(fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b)))
		return d.err
	}
	for i, u := range d.used {
		if !u {
			d.fail(fmt.Errorf("%w: descriptor %d not referenced", ErrFDIndex, i))
			return d.err
		}
	}
	return nil
}
