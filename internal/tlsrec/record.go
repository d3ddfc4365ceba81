package tlsrec

import (
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"slices"
)

// Record sizes (RFC 8446 section 5, RFC 5246 section 6.2).
const (
	hdrLen      = 5
	maxPlain    = 1 << 14
	maxCipher13 = maxPlain + 256
	maxCipher12 = maxPlain + 2048
)

// Content types.
const (
	typeCCS       = 20
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23
)

var (
	errBadRecord = errors.New("tls: bad record MAC")
	errOverflow  = errors.New("tls: oversized record received")
)

// half is one direction's record protection.
type half struct {
	s      *suite
	vers   uint16
	secret []byte // TLS 1.3: the traffic secret, from which KeyUpdate derives the next; TLS 1.2: key || implicit IV
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
	// Scratch for each record's nonce and TLS 1.2 additional data: they
	// go to the AEAD through an interface, so on the stack they would
	// escape, an allocation per record. A half is used by one goroutine
	// at a time (the reader's, or the writer's under wmu).
	nbuf [12]byte
	abuf [13]byte
}

// setKeys derives the key and IV from h.secret.
func (h *half) setKeys() error {
	var key []byte
	if h.vers == tls.VersionTLS13 {
		key = expandLabel(h.s.hash, h.secret, "key", h.s.keyLen)
		defer clear(key) // derived; TLS 1.2's is the secret's own
		copy(h.iv[:], expandLabel(h.s.hash, h.secret, "iv", 12))
	} else {
		if len(h.secret) != h.s.keyLen+h.s.ivLen {
			return errors.New("tls: bad key length")
		}
		key = h.secret[:h.s.keyLen]
		copy(h.iv[:], h.secret[h.s.keyLen:])
	}
	a, err := h.s.aead(key)
	if err != nil {
		return err
	}
	h.aead = a
	return nil
}

// update is TLS 1.3's KeyUpdate: the next generation of the secret.
func (h *half) update() error {
	next := expandLabel(h.s.hash, h.secret, "traffic upd", h.s.hash().Size())
	clear(h.secret)
	h.secret, h.seq = next, 0
	return h.setKeys()
}

// nonce is the per-record nonce: the IV with the sequence number XORed in,
// or for TLS 1.2 AES-GCM the implicit salt and explicit (the record's).
func (h *half) nonce(n *[12]byte, explicit []byte) []byte {
	if h.s.gcm12 {
		copy(n[:4], h.iv[:4])
		copy(n[4:], explicit)
		return n[:]
	}
	*n = h.iv
	for i := 0; i < 8; i++ {
		n[4+i] ^= byte(h.seq >> (56 - 8*i))
	}
	return n[:]
}

// open decrypts rec (a whole record, header included) in place and returns
// its content type and plaintext.
func (h *half) open(rec []byte) (byte, []byte, error) {
	payload := rec[hdrLen:]
	n := &h.nbuf
	var plain []byte
	var err error
	if h.vers == tls.VersionTLS13 {
		if rec[0] != typeAppData {
			return 0, nil, errors.New("tls: unexpected plaintext record")
		}
		plain, err = h.aead.Open(payload[:0], h.nonce(n, nil), payload, rec[:hdrLen])
		if err != nil {
			return 0, nil, errBadRecord
		}
		h.seq++
		i := len(plain) - 1
		for i >= 0 && plain[i] == 0 {
			i--
		}
		if i < 0 {
			return 0, nil, errors.New("tls: record without a content type")
		}
		return plain[i], plain[:i], nil
	}
	explicit := []byte(nil)
	if h.s.gcm12 {
		if len(payload) < 8 {
			return 0, nil, errBadRecord
		}
		explicit, payload = payload[:8], payload[8:]
	}
	if len(payload) < h.aead.Overhead() {
		return 0, nil, errBadRecord
	}
	aad := &h.abuf
	binary.BigEndian.PutUint64(aad[:8], h.seq)
	aad[8], aad[9], aad[10] = rec[0], 3, 3
	binary.BigEndian.PutUint16(aad[11:], uint16(len(payload)-h.aead.Overhead()))
	plain, err = h.aead.Open(payload[:0], h.nonce(n, explicit), payload, aad[:])
	if err != nil {
		return 0, nil, errBadRecord
	}
	h.seq++
	return rec[0], plain, nil
}

// seal appends plain (at most maxPlain bytes) to dst as one protected
// record of type typ.
func (h *half) seal(dst []byte, typ byte, plain []byte) []byte {
	over := h.aead.Overhead()
	n := &h.nbuf
	if h.vers == tls.VersionTLS13 {
		size := len(plain) + 1 + over
		dst = slices.Grow(dst, hdrLen+size)
		start := len(dst)
		dst = append(dst, typeAppData, 3, 3, byte(size>>8), byte(size))
		dst = append(dst, plain...)
		dst = append(dst, typ)
		body := dst[start+hdrLen:]
		out := h.aead.Seal(body[:0], h.nonce(n, nil), body, dst[start:start+hdrLen])
		h.seq++
		return dst[:start+hdrLen+len(out)]
	}
	size := len(plain) + over
	var explicit [8]byte
	binary.BigEndian.PutUint64(explicit[:], h.seq)
	if h.s.gcm12 {
		size += 8
	}
	dst = slices.Grow(dst, hdrLen+size)
	dst = append(dst, typ, 3, 3, byte(size>>8), byte(size))
	if h.s.gcm12 {
		dst = append(dst, explicit[:]...)
	}
	body := len(dst)
	dst = append(dst, plain...)
	aad := &h.abuf
	binary.BigEndian.PutUint64(aad[:8], h.seq)
	aad[8], aad[9], aad[10] = typ, 3, 3
	binary.BigEndian.PutUint16(aad[11:], uint16(len(plain)))
	out := h.aead.Seal(dst[body:body], h.nonce(n, explicit[:]), dst[body:], aad[:])
	h.seq++
	return dst[:body+len(out)]
}

// wipe forgets the keys.
func (h *half) wipe() {
	clear(h.secret)
	clear(h.iv[:])
	h.secret, h.aead = nil, nil
}
