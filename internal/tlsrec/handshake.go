package tlsrec

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// HandshakeConn is the net.Conn crypto/tls runs a handshake over: its Read
// never returns a byte past the end of the record being read, so when the
// handshake is done nothing after it is inside crypto/tls; and it keeps
// what the record layer needs of the records both ways (the hellos'
// randoms, the last protected record written).
type HandshakeConn struct {
	net.Conn
	pre  []byte // read and not yet served: before the handshake began, or with its records
	rbuf []byte // what pre is read into from the connection

	phase atomic.Int32 // notBegun, then begun (a byte served) or stopped (Stop came first)
	mu    sync.Mutex   // Stop and SetConn: the connection a Stop sets a deadline on

	hdr [hdrLen]byte // the header being read
	hn  int          // its bytes so far
	rem int          // bytes of the record body still to read

	firstIn, firstOut []byte // the first 43 bytes each way: a hello's header and random
	whdr              [hdrLen]byte
	whn               int
	wrem              int
	last              []byte // the last protected (application_data) record written
}

// NewHandshakeConn returns a HandshakeConn over c, whose first bytes are pre.
func NewHandshakeConn(c net.Conn, pre []byte) *HandshakeConn {
	return &HandshakeConn{Conn: c, pre: pre}
}

const helloPrefix = hdrLen + 4 + 2 + 32 // record and message headers, version, random

func (c *HandshakeConn) Read(p []byte) (int, error) {
	limit := c.rem
	if limit == 0 {
		limit = hdrLen - c.hn
	}
	if len(p) > limit {
		p = p[:limit]
	}
	if len(c.pre) == 0 {
		// Read what is there, and serve it a record at a time: what is
		// past the handshake stays in pre for the record layer.
		if c.rbuf == nil {
			c.rbuf = make([]byte, 4<<10)
		}
		k, err := c.Conn.Read(c.rbuf)
		if k == 0 {
			return 0, err
		}
		c.pre = c.rbuf[:k]
	}
	if c.phase.Load() != begun && !c.phase.CompareAndSwap(notBegun, begun) {
		return 0, ErrStopped // what was read stays in pre: Taken
	}
	n := copy(p, c.pre)
	c.pre = c.pre[n:]
	b := p[:n]
	if len(c.firstIn) < helloPrefix {
		c.firstIn = append(c.firstIn, b[:min(len(b), helloPrefix-len(c.firstIn))]...)
	}
	if c.rem > 0 {
		c.rem -= n
	} else {
		c.hn += copy(c.hdr[c.hn:], b)
		if c.hn == hdrLen {
			c.hn, c.rem = 0, int(c.hdr[3])<<8|int(c.hdr[4])
		}
	}
	return n, nil
}

func (c *HandshakeConn) Write(p []byte) (int, error) {
	if len(c.firstOut) < helloPrefix {
		c.firstOut = append(c.firstOut, p[:min(len(p), helloPrefix-len(c.firstOut))]...)
	}
	for b := p; len(b) > 0; {
		if c.wrem == 0 {
			k := copy(c.whdr[c.whn:], b)
			c.whn += k
			b = b[k:]
			if c.whn == hdrLen {
				c.whn, c.wrem = 0, int(c.whdr[3])<<8|int(c.whdr[4])
				if c.whdr[0] == typeAppData {
					c.last = append(c.last[:0], c.whdr[:]...)
				} else {
					c.last = c.last[:0]
				}
			}
			continue
		}
		k := min(c.wrem, len(b))
		if len(c.last) > 0 {
			c.last = append(c.last, b[:k]...)
		}
		c.wrem -= k
		b = b[k:]
	}
	return c.Conn.Write(p)
}

// Started reports whether the handshake has read a byte. Safe to call
// from another goroutine than the handshake's.
func (c *HandshakeConn) Started() bool { return c.phase.Load() == begun }

// A handshake's phases: the first byte served to crypto/tls begins it,
// unless Stop came first.
const (
	notBegun = iota
	begun
	stopped
)

// ErrStopped is what a handshake Stop took back reads.
var ErrStopped = errors.New("tls: the handshake was taken back before it began")

// Stop takes back a handshake that has not begun (no byte of the client's
// served to crypto/tls): its read returns ErrStopped, and what came meanwhile
// stays unread (Taken). It reports whether the handshake is stopped, now or
// before; false once it has begun. Safe to call from another goroutine
// than the handshake's.
func (c *HandshakeConn) Stop() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase.CompareAndSwap(notBegun, stopped) && c.Conn != nil {
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	return c.phase.Load() == stopped
}

// Stopped reports whether Stop took the handshake back.
func (c *HandshakeConn) Stopped() bool { return c.phase.Load() == stopped }

// Taken is what a stopped handshake's connection had sent: bytes to give
// the next handshake first.
func (c *HandshakeConn) Taken() []byte { return c.pre }

// SetConn sets the connection of a HandshakeConn made before it.
func (c *HandshakeConn) SetConn(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Conn = conn
	if c.phase.Load() == stopped && conn != nil {
		conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// rest is what was read but not consumed: the client's first bytes after
// the handshake, if they came with it. An error if the handshake did not
// end at a record boundary.
func (c *HandshakeConn) rest() ([]byte, error) {
	if c.rem != 0 || c.hn != 0 {
		return nil, errors.New("tls: the handshake ended inside a record")
	}
	return c.pre, nil
}

// KeyLog is a Config.KeyLogWriter for one handshake: it keeps the secrets
// the record layer needs, and passes every line on to Next (ssl_key_log's
// file) if set.
type KeyLog struct {
	Next io.Writer

	mu      sync.Mutex
	secrets map[string][]byte
	session *tls.SessionState // the session offered or resumed: a TLS 1.2 resumption logs no secret
}

func (k *KeyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) == 3 {
		if secret, err := hex.DecodeString(string(f[2])); err == nil {
			k.mu.Lock()
			if k.secrets == nil {
				k.secrets = map[string][]byte{}
			}
			k.secrets[string(f[0])] = secret
			k.mu.Unlock()
		}
	}
	if k.Next != nil {
		return k.Next.Write(line)
	}
	return len(line), nil
}

// wipe forgets the secrets.
func (k *KeyLog) wipe() {
	k.mu.Lock()
	for _, s := range k.secrets {
		clear(s)
	}
	k.secrets = nil
	k.session = nil
	k.mu.Unlock()
}

// A TLS 1.2 resumption writes no key log line: the master secret is the
// session's. The hooks below keep the session crypto/tls offers or
// resumes, and FromHandshake reads its secret only for a resumed TLS 1.2
// connection (masterSecret).
func (k *KeyLog) keep(ss *tls.SessionState) {
	k.mu.Lock()
	k.session = ss
	k.mu.Unlock()
}

// masterSecret reads a TLS 1.2 session's master secret through
// SessionState.Bytes, whose encoding starts with the version (2 bytes),
// the side (1), the suite (2), the creation time (8) and the secret (1
// byte of length). The encoding is crypto/tls's own and may change with
// Go: nil when the bytes do not read so (the connection then stays
// crypto/tls's: FromHandshake says ErrUnsupported).
func masterSecret(ss *tls.SessionState) []byte {
	if ss == nil {
		return nil
	}
	b, err := ss.Bytes()
	if err != nil {
		return nil
	}
	defer clear(b)
	const at = 2 + 1 + 2 + 8
	if len(b) < at+1+48 || uint16(b[0])<<8|uint16(b[1]) != tls.VersionTLS12 || b[at] != 48 {
		return nil
	}
	return clone(b[at+1 : at+1+48])
}

// UnwrapSession is a server's Config.UnwrapSession that keeps the session
// it resumes: next's (nil: cfg's tickets, as crypto/tls's own).
func (k *KeyLog) UnwrapSession(cfg *tls.Config, next func([]byte, tls.ConnectionState) (*tls.SessionState, error)) func([]byte, tls.ConnectionState) (*tls.SessionState, error) {
	return func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		var ss *tls.SessionState
		var err error
		if next != nil {
			ss, err = next(identity, cs)
		} else {
			ss, err = cfg.DecryptTicket(identity, cs)
		}
		k.keep(ss)
		return ss, err
	}
}

// ClientCache is a client's Config.ClientSessionCache that keeps the
// session it offers to resume: c's.
func (k *KeyLog) ClientCache(c tls.ClientSessionCache) tls.ClientSessionCache {
	return keepingCache{c, k}
}

type keepingCache struct {
	tls.ClientSessionCache
	k *KeyLog
}

func (c keepingCache) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := c.ClientSessionCache.Get(key)
	if ok && cs != nil {
		if _, ss, err := cs.ResumptionState(); err == nil {
			c.k.keep(ss)
		}
	}
	return cs, ok
}

// ErrUnsupported is returned for a connection this layer does not carry
// (a TLS 1.2 CBC suite, say): crypto/tls goes on with it.
var ErrUnsupported = errors.New("tls: record layer: version or cipher suite not supported")

// FromHandshake returns the record layer of a connection whose handshake
// crypto/tls has just done over hc (with kl as its key log), on raw (hc's
// own connection). server says which side this is. The key log's secrets
// are wiped. On ErrUnsupported the connection is crypto/tls's still.
func FromHandshake(raw net.Conn, hc *HandshakeConn, cs tls.ConnectionState, kl *KeyLog, server bool) (*Conn, error) {
	defer kl.wipe()
	s := suiteFor(cs.Version, cs.CipherSuite)
	if s == nil {
		return nil, ErrUnsupported
	}
	pre, err := hc.rest()
	if err != nil {
		return nil, err
	}
	st := &State{Version: cs.Version, Suite: cs.CipherSuite, Server: server, In: pre}
	kl.mu.Lock()
	defer kl.mu.Unlock()
	if cs.Version == tls.VersionTLS13 {
		cl, sv := kl.secrets["CLIENT_TRAFFIC_SECRET_0"], kl.secrets["SERVER_TRAFFIC_SECRET_0"]
		if cl == nil || sv == nil {
			return nil, errors.New("tls: record layer: no traffic secrets in the key log")
		}
		st.InSecret, st.OutSecret = clone(cl), clone(sv)
		if !server {
			st.InSecret, st.OutSecret = st.OutSecret, st.InSecret
		} else if len(hc.last) > 0 {
			// A server's session ticket goes out under the application
			// key before the handshake ends: if the last protected
			// record written opens with it, that key's first record is
			// spent.
			h := half{s: s, vers: cs.Version, secret: clone(st.OutSecret)}
			if err := h.setKeys(); err != nil {
				return nil, err
			}
			if _, _, err := h.open(bytes.Clone(hc.last)); err == nil {
				st.OutSeq = 1
			}
			h.wipe()
		}
	} else {
		master := kl.secrets["CLIENT_RANDOM"]
		if cs.DidResume {
			if master = masterSecret(kl.session); master == nil {
				return nil, ErrUnsupported
			}
			defer clear(master)
		}
		ch, sh := hc.firstIn, hc.firstOut // the hellos, for their randoms
		if !server {
			ch, sh = sh, ch
		}
		if master == nil || !isHello(ch, 1) || !isHello(sh, 2) {
			return nil, errors.New("tls: record layer: no master secret or hello randoms")
		}
		seed := append(clone(sh[helloPrefix-32:helloPrefix]), ch[helloPrefix-32:helloPrefix]...)
		kb := prf12(s.hash, master, "key expansion", seed, 2*(s.keyLen+s.ivLen))
		ck, sk := kb[:s.keyLen], kb[s.keyLen:2*s.keyLen]
		civ, siv := kb[2*s.keyLen:2*s.keyLen+s.ivLen], kb[2*s.keyLen+s.ivLen:]
		cl := append(clone(ck), civ...)
		sv := append(clone(sk), siv...)
		clear(kb)
		st.InSecret, st.OutSecret = cl, sv
		if !server {
			st.InSecret, st.OutSecret = sv, cl
		}
		st.InSeq, st.OutSeq = 1, 1 // each side's Finished was record 0
	}
	return NewConn(raw, st)
}

// isHello reports whether b begins with a handshake record of a hello of
// type typ (1 client, 2 server) whose random it holds.
func isHello(b []byte, typ byte) bool {
	return len(b) >= helloPrefix && b[0] == typeHandshake && b[hdrLen] == typ
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
