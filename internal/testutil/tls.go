package testutil

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/tlsrec"
)

// TLSClient is a TLS client connection whose record layer is baton's own
// (tlsrec: it can send KeyUpdate, which crypto/tls's client never does) or
// crypto/tls's. Reads and writes go through whichever carries it.
type TLSClient struct {
	io.ReadWriter
	Raw net.Conn
	TC  *tls.Conn
	Rec *tlsrec.Conn // nil on crypto/tls's record layer
}

// DialTLS dials addr and runs crypto/tls's client handshake with cfg
// (certificates not verified); with own, baton's record layer carries the
// connection after it.
func DialTLS(addr string, cfg *tls.Config, own bool) (*TLSClient, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	var kl tlsrec.KeyLog
	cfg = cfg.Clone()
	cfg.InsecureSkipVerify, cfg.KeyLogWriter = true, &kl
	hc := tlsrec.NewHandshakeConn(raw, nil)
	tc := tls.Client(hc, cfg)
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	c := &TLSClient{ReadWriter: tc, Raw: raw, TC: tc}
	if own {
		if c.Rec, err = tlsrec.FromHandshake(raw, hc, tc.ConnectionState(), &kl, false); err != nil {
			raw.Close()
			return nil, err
		}
		c.ReadWriter = c.Rec
	}
	return c, nil
}

// RoundTrip writes p and reads it back (from an echo), within 20 s.
func (c *TLSClient) RoundTrip(p []byte) error {
	c.Raw.SetDeadline(time.Now().Add(20 * time.Second))
	return Echo(c, p)
}

// Echo writes p to rw, an echo path, while it reads it back, and says
// whether all of it came back the same.
func Echo(rw io.ReadWriter, p []byte) error {
	errc := make(chan error, 1)
	go func() { _, err := rw.Write(p); errc <- err }()
	got := make([]byte, len(p))
	if _, err := io.ReadFull(rw, got); err != nil {
		return err
	}
	if !bytes.Equal(got, p) {
		return errors.New("the echo differs")
	}
	return <-errc
}

// Close sends close_notify and closes the connection.
func (c *TLSClient) Close() error {
	if c.Rec != nil {
		return c.Rec.Close()
	}
	return c.TC.Close()
}

// TLSEcho is a TLS echo server on baton's record layer (so that it can
// send KeyUpdate): before the first echo after each change of KeyGen it
// sends a KeyUpdate that asks for one back (TLS 1.3). Resumed counts the
// handshakes that resumed a session.
type TLSEcho struct {
	Addr    string
	KeyGen  atomic.Int64
	Resumed atomic.Int64
}

// StartTLSEcho serves the certificate in crt and key, TLS 1.2 to maxVers,
// until the test ends.
func StartTLSEcho(t testing.TB, crt, key string, maxVers uint16) *TLSEcho {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &TLSEcho{Addr: ln.Addr().String()}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: maxVers}
	var tk [32]byte
	rand.Read(tk[:])
	cfg.SetSessionTicketKeys([][32]byte{tk}) // one key for the clones serve makes
	Serve(t, ln, func(c net.Conn) { srv.serve(c, cfg) })
	return srv
}

func (srv *TLSEcho) serve(raw net.Conn, cfg *tls.Config) {
	defer raw.Close()
	var kl tlsrec.KeyLog
	cfg = cfg.Clone()
	cfg.KeyLogWriter = &kl
	cfg.UnwrapSession = kl.UnwrapSession(cfg, nil) // a TLS 1.2 resumption's secret
	hc := tlsrec.NewHandshakeConn(raw, nil)
	tc := tls.Server(hc, cfg)
	if tc.Handshake() != nil {
		return
	}
	if tc.ConnectionState().DidResume {
		srv.Resumed.Add(1)
	}
	rc, err := tlsrec.FromHandshake(raw, hc, tc.ConnectionState(), &kl, true)
	if err != nil {
		return
	}
	defer rc.Close()
	var gen int64
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if err != nil {
			return
		}
		if g := srv.KeyGen.Load(); g != gen && rc.Version() == tls.VersionTLS13 {
			gen = g
			if rc.KeyUpdate(true) != nil {
				return
			}
		}
		if _, err := rc.Write(buf[:n]); err != nil {
			return
		}
	}
}

// Serve accepts on ln until the test ends and runs handle on each
// connection in a goroutine of its own; at the end ln and every
// connection are closed, and the handlers waited for.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); handle(c) }()
		}
	}()
}
