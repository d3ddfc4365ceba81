package tlshello

// Helpers that make ClientHellos for the tests: real ones from crypto/tls, and hand-built ones in the
// shapes nginx's own tests send (stream_ssl_preread.t, stream_ssl_preread_protocol.t).

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// captureConn keeps what is written to it and fails every read, so that a tls.Client writes its
// ClientHello and then gives up.
type captureConn struct{ out bytes.Buffer }

func (c *captureConn) Read([]byte) (int, error)         { return 0, errors.New("capture only") }
func (c *captureConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// goHello returns the bytes crypto/tls sends first as a client with cfg: one record holding the
// ClientHello.
func goHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	cfg = cfg.Clone()
	cfg.InsecureSkipVerify = true
	c := &captureConn{}
	if err := tls.Client(c, cfg).Handshake(); err == nil {
		t.Fatal("handshake against a capture conn succeeded")
	}
	b := c.out.Bytes()
	if len(b) < 5 || b[0] != 22 || len(b) != 5+int(binary.BigEndian.Uint16(b[3:5])) {
		t.Fatalf("crypto/tls wrote %x, want one handshake record", b)
	}
	return bytes.Clone(b)
}

// handshake returns the handshake bytes carried by the records in b (which must be whole).
func handshake(t testing.TB, b []byte) []byte {
	t.Helper()
	var msg []byte
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("%d bytes after the last record", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[3:5]))
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
	}
	return msg
}

// frame wraps the handshake bytes msg in handshake records of version 3.minor, cutting it at cuts
// (offsets into msg, in increasing order).
func frame(msg []byte, minor byte, cuts ...int) []byte {
	var out []byte
	last := 0
	for _, c := range append(cuts, len(msg)) {
		out = append(out, 22, 3, minor, byte((c-last)>>8), byte(c-last))
		out = append(out, msg[last:c]...)
		last = c
	}
	return out
}

// frameEvery wraps msg in records of at most n bytes each.
func frameEvery(msg []byte, n int) []byte {
	var cuts []int
	for c := n; c < len(msg); c += n {
		cuts = append(cuts, c)
	}
	return frame(msg, 1, cuts...)
}

// withoutExt returns the ClientHello message msg without its extensions of type typ, its lengths
// mended. It knows the ClientHello layout only as far as crypto/tls writes it.
func withoutExt(t testing.TB, msg []byte, typ uint16) []byte {
	t.Helper()
	p := 4 + 2 + 32
	p += 1 + int(msg[p])                           // session_id
	p += 2 + int(binary.BigEndian.Uint16(msg[p:])) // cipher_suites
	p += 1 + int(msg[p])                           // compression_methods
	extLen := int(binary.BigEndian.Uint16(msg[p:]))
	if p+2+extLen != len(msg) {
		t.Fatalf("extensions end at %d, message at %d", p+2+extLen, len(msg))
	}
	out := bytes.Clone(msg[:p+2])
	for e := msg[p+2:]; len(e) > 0; {
		n := 4 + int(binary.BigEndian.Uint16(e[2:]))
		if binary.BigEndian.Uint16(e) != typ {
			out = append(out, e[:n]...)
		}
		e = e[n:]
	}
	binary.BigEndian.PutUint16(out[p:], uint16(len(out)-p-2))
	putLen24(out[1:], len(out)-4)
	return out
}

func putLen24(b []byte, n int) { b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n) }

// clientHello builds a ClientHello message with client_version vers, a fixed random, an empty
// session id, one cipher suite, the null compression method and exts (from ext). With no exts it
// has no extensions block at all, as an SSLv3 client would send.
func clientHello(vers uint16, exts ...[]byte) []byte {
	b := []byte{1, 0, 0, 0, byte(vers >> 8), byte(vers)}
	for i := range 32 {
		b = append(b, byte(i*7+1))
	}
	b = append(b, 0)                // session_id
	b = append(b, 0, 2, 0x00, 0x2f) // cipher_suites: TLS_RSA_WITH_AES_128_CBC_SHA
	b = append(b, 1, 0)             // compression_methods: null
	if len(exts) > 0 {
		all := bytes.Join(exts, nil)
		b = binary.BigEndian.AppendUint16(b, uint16(len(all)))
		b = append(b, all...)
	}
	putLen24(b[1:], len(b)-4)
	return b
}

// ext encodes one extension.
func ext(typ uint16, body []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// sni is a server_name extension with a host_name entry for each of names.
func sni(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = binary.BigEndian.AppendUint16(list, uint16(len(n)))
		list = append(list, n...)
	}
	return ext(0, append(binary.BigEndian.AppendUint16(nil, uint16(len(list))), list...))
}

// alpn is an ALPN extension listing protos.
func alpn(protos ...string) []byte {
	var list []byte
	for _, p := range protos {
		list = append(list, byte(len(p)))
		list = append(list, p...)
	}
	return ext(16, append(binary.BigEndian.AppendUint16(nil, uint16(len(list))), list...))
}

// supportedVersions is a ClientHello supported_versions extension listing vers.
func supportedVersions(vers ...uint16) []byte {
	body := []byte{byte(2 * len(vers))}
	for _, v := range vers {
		body = binary.BigEndian.AppendUint16(body, v)
	}
	return ext(43, body)
}

// sslv2Hello is an SSLv2-format ClientHello offering version vers, as
// stream_ssl_preread_protocol.t sends it: one cipher spec and a 16-byte challenge.
func sslv2Hello(vers uint16) []byte {
	body := []byte{1, byte(vers >> 8), byte(vers)} // msg_type CLIENT-HELLO, version
	body = append(body, 0, 3, 0, 0, 0, 16)         // cipher_specs, session_id, challenge lengths
	body = append(body, 0x01, 0x00, 0x80)          // SSL_CK_RC4_128_WITH_MD5
	for i := range 16 {
		body = append(body, byte(0x30+i))
	}
	return append([]byte{0x80 | byte(len(body)>>8), byte(len(body))}, body...)
}
