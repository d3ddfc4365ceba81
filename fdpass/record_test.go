package fdpass

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestHeaderLayout pins the wire format of HANDOFF.md §2.3 byte by byte.
func TestHeaderLayout(t *testing.T) {
	b, err := appendRecord(nil, Record{Type: TypeAccepted, Seq: 0x0102030405060708, Ack: 9, Flags: 0xbeef, Body: []byte("hi")}, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := "42544e31" + "0100" + "0800" + "0807060504030201" + "0900000000000000" + "0500" + "efbe" + "02000000" + "6869"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("wire:\n got %s\nwant %s", got, want)
	}
	rec, nfds, err := parseRecord(b)
	if err != nil || nfds != 5 || rec.Type != TypeAccepted || rec.Seq != 0x0102030405060708 ||
		rec.Ack != 9 || rec.Flags != 0xbeef || string(rec.Body) != "hi" {
		t.Fatalf("parse: %v, %d, %v", rec, nfds, err)
	}
}

func TestTypeString(t *testing.T) {
	var names []string
	for ty := TypeHello; ty <= TypeError; ty++ {
		names = append(names, ty.String())
	}
	want := "HELLO HELLO_OK LISTENERS READY BATCH DATA BATCH_END ACCEPTED UDP_BATCH DONE DONE_OK ERROR"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("types: %s", got)
	}
	if s := Type(0).String(); s != "Type(0)" {
		t.Errorf("Type(0): %s", s)
	}
}

func TestBodyRoundTrip(t *testing.T) {
	var e Encoder
	e.Uint8(0xfe)
	e.Uint16(0xbeef)
	e.Uint32(0xdeadbeef)
	e.Uint64(1 << 60)
	e.Bool(true)
	e.Bool(false)
	e.Text("listen/tcp/0.0.0.0:443")
	e.Text("")
	e.Bytes([]byte{1, 2, 3})
	e.FD(1)
	e.FD(0)
	body, err := e.Body()
	if err != nil || e.Len() != len(body) {
		t.Fatal(err)
	}
	d := NewDecoder(body, 2)
	if d.Uint8() != 0xfe || d.Uint16() != 0xbeef || d.Uint32() != 0xdeadbeef || d.Uint64() != 1<<60 ||
		!d.Bool() || d.Bool() || d.Text() != "listen/tcp/0.0.0.0:443" || d.Text() != "" ||
		!bytes.Equal(d.Bytes(), []byte{1, 2, 3}) || d.FD() != 1 || d.FD() != 0 {
		t.Fatalf("decoded differently, err %v", d.Err())
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestDecoderErrors(t *testing.T) {
	enc := func(f func(e *Encoder)) []byte {
		var e Encoder
		f(&e)
		b, err := e.Body()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		body []byte
		nfds int
		read func(d *Decoder)
		want error
	}{
		{"short u64", []byte{1, 2, 3}, 0, func(d *Decoder) { d.Uint64() }, ErrMalformed},
		{"string past end", []byte{5, 0, 'a'}, 0, func(d *Decoder) { d.Text() }, ErrMalformed},
		{"bytes past end", []byte{0xff, 0xff, 0xff, 0xff, 'a'}, 0, func(d *Decoder) { d.Bytes() }, ErrMalformed},
		{"bad bool", []byte{2}, 0, func(d *Decoder) { d.Bool() }, ErrMalformed},
		{"trailing bytes", []byte{1, 2}, 0, func(d *Decoder) { d.Uint8() }, ErrMalformed},
		{"fd out of range", enc(func(e *Encoder) { e.FD(2) }), 2, func(d *Decoder) { d.FD() }, ErrFDIndex},
		{"fd with none sent", enc(func(e *Encoder) { e.FD(0) }), 0, func(d *Decoder) { d.FD() }, ErrFDIndex},
		{"fd used twice", enc(func(e *Encoder) { e.FD(1); e.FD(1) }), 2, func(d *Decoder) { d.FD(); d.FD() }, ErrFDIndex},
		{"fd unreferenced", enc(func(e *Encoder) { e.FD(0) }), 2, func(d *Decoder) { d.FD() }, ErrFDIndex},
		{"negative nfds", nil, -1, func(d *Decoder) {}, nil},
		{"error is sticky", []byte{1}, 0, func(d *Decoder) { d.Uint16(); d.Uint8() }, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(tt.body, tt.nfds)
			tt.read(d)
			if err := d.Finish(); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Finish: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEncoderErrors(t *testing.T) {
	tests := []struct {
		name string
		f    func(e *Encoder)
		want error
	}{
		{"fd index negative", func(e *Encoder) { e.FD(-1) }, ErrFDIndex},
		{"fd index too big", func(e *Encoder) { e.FD(MaxFDs) }, ErrFDIndex},
		{"string too long", func(e *Encoder) { e.Text(strings.Repeat("x", 1<<16)) }, ErrTooLarge},
		{"body too large", func(e *Encoder) { e.Bytes(make([]byte, MaxBody-4)); e.Uint8(0) }, ErrTooLarge},
		{"sticky", func(e *Encoder) { e.FD(-1); e.Uint8(1) }, ErrFDIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Encoder
			tt.f(&e)
			if _, err := e.Body(); !errors.Is(err, tt.want) {
				t.Fatalf("Body: %v, want %v", err, tt.want)
			}
		})
	}
	var e Encoder
	e.Bytes(make([]byte, MaxBody-4))
	if _, err := e.Body(); err != nil {
		t.Fatalf("a body of exactly MaxBody: %v", err)
	}
}

func TestParseRecord(t *testing.T) {
	good, _ := appendRecord(nil, Record{Type: TypeHello, Body: []byte("x")}, 0)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short", good[:HeaderSize-1], ErrMalformed},
		{"magic", append([]byte("BTN2"), good[4:]...), ErrMalformed},
		{"bodylen", good[:HeaderSize], ErrMalformed},
		{"too long", make([]byte, MaxRecord+1), ErrTruncated},
		{"good", good, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := parseRecord(tt.b); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("parseRecord: %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzDecode feeds arbitrary bytes to the record parser and, when a header
// parses, drives a Decoder over the body with a program taken from the input.
// Neither may panic, a parsed record must re-encode to the same bytes, and a
// Decoder must never hand out a descriptor index twice or out of range.
func FuzzDecode(f *testing.F) {
	var e Encoder
	e.Uint16(2)
	e.Text("listen/tcp/0.0.0.0:443")
	e.FD(1)
	e.Bytes([]byte("pending"))
	e.FD(0)
	body, _ := e.Body()
	for _, r := range []struct {
		rec  Record
		nfds int
	}{
		{Record{Type: TypeBatch, Seq: 1, Body: body}, 2},
		{Record{Type: TypeHello}, 0},
		{Record{Type: TypeError, Body: []byte{3, 0, 'b', 'a', 'd'}}, 0},
	} {
		b, _ := appendRecord(nil, r.rec, r.nfds)
		f.Add(b, []byte{3, 4, 7, 5, 7})
	}
	f.Add([]byte("BTN1"), []byte{})
	f.Fuzz(func(t *testing.T, wire, prog []byte) {
		rec, nfds, err := parseRecord(wire)
		if err != nil {
			return
		}
		again, err := appendRecord(nil, rec, nfds)
		if err != nil || !bytes.Equal(again, wire) {
			t.Fatalf("re-encode: %v\n got %x\nwant %x", err, again, wire)
		}
		d := NewDecoder(rec.Body, nfds)
		seen := make(map[int]bool)
		for _, op := range prog {
			switch op % 8 {
			case 0:
				d.Uint8()
			case 1:
				d.Uint16()
			case 2:
				d.Uint32()
			case 3:
				d.Uint64()
			case 4:
				d.Text()
			case 5:
				d.Bytes()
			case 6:
				d.Bool()
			case 7:
				i := d.FD()
				if d.Err() != nil {
					continue
				}
				if i < 0 || i >= nfds || seen[i] {
					t.Fatalf("FD returned %d (nfds %d, seen %v)", i, nfds, seen[i])
				}
				seen[i] = true
			}
		}
		if err := d.Finish(); err == nil && len(seen) != nfds {
			t.Fatalf("Finish passed with %d of %d descriptors referenced", len(seen), nfds)
		}
	})
}

// TestEncoderLimit: a zero Encoder holds one record's body at most; one from
// NewEncoder holds what it was given (a Conn's State travels in pieces).
func TestEncoderLimit(t *testing.T) {
	big := make([]byte, MaxBody)
	var e Encoder
	e.Bytes(big)
	if _, err := e.Body(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("zero Encoder took %d bytes: %v", len(big)+4, err)
	}
	e2 := NewEncoder(4 * MaxBody)
	e2.Bytes(big)
	e2.Bytes(big)
	if b, err := e2.Body(); err != nil || len(b) != 2*(len(big)+4) {
		t.Fatalf("NewEncoder(4*MaxBody): %d bytes, %v", len(b), err)
	}
	e2.Bytes(big)
	e2.Bytes(big)
	if _, err := e2.Body(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("NewEncoder(4*MaxBody) took more: %v", err)
	}
}
