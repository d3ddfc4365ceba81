// Package tlsrec is a TLS record layer for connections whose handshake
// crypto/tls has done: it seals and opens application data records with
// the traffic keys the handshake derived, and its state (suite, secrets,
// sequence numbers, a partly received record) can be written out and read
// back in another process, which goes on with the same record stream.
//
// crypto/tls keeps its record state unexported, so a connection it carries
// cannot move. Here crypto/tls runs the handshake only, over a
// HandshakeConn that never reads past the handshake's last record; the
// traffic secrets come from its key log (Config.KeyLogWriter, the NSS
// format: CLIENT/SERVER_TRAFFIC_SECRET_0 for TLS 1.3, CLIENT_RANDOM's
// master secret for TLS 1.2), and a Conn takes over from there.
//
// TLS 1.3 (all three suites) and TLS 1.2 with the AEAD suites (AES-GCM,
// ChaCha20-Poly1305) are supported; Supported says which. A TLS 1.2
// session with a CBC suite stays with crypto/tls.
package tlsrec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// suite is what the record layer needs of a cipher suite.
type suite struct {
	keyLen int
	ivLen  int // TLS 1.2: the implicit part (4 for GCM, 12 for ChaCha20)
	hash   func() hash.Hash
	aead   func(key []byte) (cipher.AEAD, error)
	gcm12  bool // TLS 1.2 AES-GCM: an explicit 8-byte nonce in every record
}

func aesGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var (
	sha256New = func() hash.Hash { return sha256.New() }
	sha384New = func() hash.Hash { return sha512.New384() }
)

// suiteFor returns the suite of id at version, nil when this layer does
// not carry it.
func suiteFor(version, id uint16) *suite {
	switch version {
	case tls.VersionTLS13:
		switch id {
		case tls.TLS_AES_128_GCM_SHA256:
			return &suite{keyLen: 16, ivLen: 12, hash: sha256New, aead: aesGCM}
		case tls.TLS_AES_256_GCM_SHA384:
			return &suite{keyLen: 32, ivLen: 12, hash: sha384New, aead: aesGCM}
		case tls.TLS_CHACHA20_POLY1305_SHA256:
			return &suite{keyLen: 32, ivLen: 12, hash: sha256New, aead: chacha20poly1305.New}
		}
	case tls.VersionTLS12:
		switch id {
		case tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_128_GCM_SHA256:
			return &suite{keyLen: 16, ivLen: 4, hash: sha256New, aead: aesGCM, gcm12: true}
		case tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_AES_256_GCM_SHA384:
			return &suite{keyLen: 32, ivLen: 4, hash: sha384New, aead: aesGCM, gcm12: true}
		case tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:
			return &suite{keyLen: 32, ivLen: 12, hash: sha256New, aead: chacha20poly1305.New}
		}
	}
	return nil
}

// Supported reports whether a connection of this version and cipher suite
// can be carried by this layer.
func Supported(version, suiteID uint16) bool { return suiteFor(version, suiteID) != nil }

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) []byte {
	info := make([]byte, 0, 4+6+len(label))
	info = append(info, byte(n>>8), byte(n), byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		panic("tlsrec: " + err.Error()) // only for lengths no suite has
	}
	return out
}

// prf12 is TLS 1.2's PRF (RFC 5246 section 5): P_hash over label||seed.
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	ls := append([]byte(label), seed...)
	out := make([]byte, 0, n+64)
	mac := hmac.New(h, secret)
	mac.Write(ls)
	a := mac.Sum(nil)
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		mac.Write(ls)
		out = mac.Sum(out)
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
	return out[:n]
}
