package tlsrec

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// pair returns a loopback TCP connection's two ends.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// handshake runs crypto/tls's handshake on both ends and returns the
// record layers: a side given as nil config stays crypto/tls (returned as
// the *tls.Conn instead).
type end struct {
	rec *Conn
	tc  *tls.Conn
}

func (e end) rw() io.ReadWriter {
	if e.rec != nil {
		return e.rec
	}
	return e.tc
}

func handshake(t *testing.T, ccfg, scfg *tls.Config, recClient, recServer bool, early []byte) (end, end) {
	t.Helper()
	craw, sraw := pair(t)
	side := func(raw net.Conn, cfg *tls.Config, server, rec bool, pre []byte, out chan<- end, errs chan<- error) {
		var kl KeyLog
		cfg = cfg.Clone()
		cfg.KeyLogWriter = &kl
		hc := NewHandshakeConn(raw, pre)
		var tc *tls.Conn
		if server {
			tc = tls.Server(hc, cfg)
		} else {
			tc = tls.Client(hc, cfg)
		}
		if err := tc.Handshake(); err != nil {
			errs <- err
			return
		}
		if !rec {
			out <- end{tc: tc}
			return
		}
		c, err := FromHandshake(raw, hc, tc.ConnectionState(), &kl, server)
		if err != nil {
			errs <- err
			return
		}
		out <- end{rec: c}
	}
	cch, sch := make(chan end, 1), make(chan end, 1)
	errs := make(chan error, 2)
	if early != nil {
		// The server's first bytes were read before its handshake began.
		go func() {
			buf := make([]byte, len(early))
			io.ReadFull(sraw, buf)
			side(sraw, scfg, true, recServer, buf, sch, errs)
		}()
	} else {
		go side(sraw, scfg, true, recServer, nil, sch, errs)
	}
	go side(craw, ccfg, false, recClient, nil, cch, errs)
	var c, s end
	for got := 0; got < 2; got++ {
		select {
		case c = <-cch:
		case s = <-sch:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("handshake timed out")
		}
	}
	return c, s
}

// exchange sends n bytes each way at once and checks them.
func exchange(t *testing.T, a, b io.ReadWriter, n int) {
	t.Helper()
	data := func(seed byte) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7) + seed
		}
		return p
	}
	ab, ba := data(1), data(2)
	errs := make(chan error, 4)
	send := func(w io.Writer, p []byte) { _, err := w.Write(p); errs <- err }
	recv := func(r io.Reader, want []byte) {
		got := make([]byte, len(want))
		_, err := io.ReadFull(r, got)
		if err == nil && !bytes.Equal(got, want) {
			err = errors.New("bytes differ")
		}
		errs <- err
	}
	go send(a, ab)
	go send(b, ba)
	go recv(b, ab)
	go recv(a, ba)
	for i := 0; i < 4; i++ {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("exchange timed out")
		}
	}
}

func TestRecordLayerAgainstCryptoTLS(t *testing.T) {
	cert := testCert(t)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	cases := []struct {
		name   string
		vers   uint16
		suite  uint16
		tix    bool
		client bool // ask for a client certificate
	}{
		{"tls13", tls.VersionTLS13, 0, true, false},
		{"tls13 no tickets", tls.VersionTLS13, 0, false, false},
		{"tls13 client cert", tls.VersionTLS13, 0, true, true},
		{"tls12 aes128gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true, false},
		{"tls12 aes256gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true, true},
		{"tls12 chacha20", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scfg := &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: !tc.tix, MaxVersion: tc.vers}
			ccfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tc.vers}
			if tc.suite != 0 {
				ccfg.CipherSuites = []uint16{tc.suite}
			}
			if tc.client {
				scfg.ClientAuth = tls.RequireAnyClientCert
				ccfg.Certificates = []tls.Certificate{cert}
			}
			// baton's side as a server, crypto/tls the client.
			c, s := handshake(t, ccfg, scfg, false, true, nil)
			if st := c.tc.ConnectionState(); st.Version != tc.vers || (tc.suite != 0 && st.CipherSuite != tc.suite) {
				t.Fatalf("negotiated %x %x", st.Version, st.CipherSuite)
			}
			exchange(t, c.rw(), s.rw(), 100_000)
			exchange(t, c.rw(), s.rw(), 10)
			// close_notify ends crypto/tls's reads.
			s.rec.CloseWrite()
			if n, err := c.tc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after close_notify: %d %v", n, err)
			}
			c.tc.Close()
			if n, err := s.rec.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after the client's close: %d %v", n, err)
			}
			// And as a client, with crypto/tls the server.
			c, s = handshake(t, ccfg, scfg, true, false, nil)
			exchange(t, c.rw(), s.rw(), 70_000)
			if tc.vers == tls.VersionTLS13 {
				// crypto/tls answers a KeyUpdate that asks for one.
				if err := c.rec.KeyUpdate(true); err != nil {
					t.Fatal(err)
				}
				exchange(t, c.rw(), s.rw(), 20_000)
			}
		})
	}
}

// Both ends baton's: KeyUpdate either way, with and without a request.
func TestKeyUpdate(t *testing.T) {
	cert := testCert(t)
	scfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	ccfg := &tls.Config{InsecureSkipVerify: true}
	// The server's first 10 bytes were read before its handshake began.
	c, s := handshake(t, ccfg, scfg, true, true, make([]byte, 10))
	for i := 0; i < 3; i++ {
		if err := c.rec.KeyUpdate(i%2 == 0); err != nil {
			t.Fatal(err)
		}
		exchange(t, c.rw(), s.rw(), 5000)
		if err := s.rec.KeyUpdate(i == 1); err != nil {
			t.Fatal(err)
		}
		exchange(t, c.rw(), s.rw(), 5000)
	}
	if c.rec.out.seq > 10 || s.rec.out.seq > 10 {
		t.Fatalf("sequence numbers not reset by the updates: %d %d", c.rec.out.seq, s.rec.out.seq)
	}
}

// The client's first application data sent with its Finished, and bytes
// the server read before its handshake, are not lost.
func TestBytesAfterTheHandshake(t *testing.T) {
	cert := testCert(t)
	scfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	craw, sraw := pair(t)
	done := make(chan *Conn, 1)
	go func() {
		var kl KeyLog
		cfg := scfg.Clone()
		cfg.KeyLogWriter = &kl
		hc := NewHandshakeConn(sraw, nil)
		tc := tls.Server(hc, cfg)
		if tc.Handshake() != nil {
			done <- nil
			return
		}
		c, err := FromHandshake(sraw, hc, tc.ConnectionState(), &kl, true)
		if err != nil {
			done <- nil
			return
		}
		done <- c
	}()
	cc := tls.Client(craw, &tls.Config{InsecureSkipVerify: true})
	if _, err := cc.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("server handshake failed")
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "first" {
		t.Fatalf("%q %v", got, err)
	}
}

// A connection moves: stopped mid-stream, its state written and read back,
// and a new Conn over a duplicate of the socket goes on; the peer sees one
// unbroken stream both ways, through a KeyUpdate after the move.
func TestMove(t *testing.T) {
	cert := testCert(t)
	for _, vers := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		scfg := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: vers}
		ccfg := &tls.Config{InsecureSkipVerify: true, MaxVersion: vers}
		c, s := handshake(t, ccfg, scfg, false, true, nil)
		exchange(t, c.rw(), s.rw(), 30_000)
		// A record in flight towards the server, half of it read.
		if _, err := c.tc.Write(bytes.Repeat([]byte("x"), 3000)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1000)
		if _, err := io.ReadFull(s.rec, buf); err != nil {
			t.Fatal(err)
		}
		s.rec.Stop()
		st := s.rec.State(buf[500:]) // 500 bytes the old side had read and not passed on
		enc, _ := st.MarshalBinary()
		var back State
		if err := back.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		f, err := s.rec.raw.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		s.rec.Wipe()
		s.rec.raw.Close()
		raw2, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		moved, err := NewConn(raw2, &back)
		if err != nil {
			t.Fatal(err)
		}
		if err := moved.Flush(); err != nil {
			t.Fatal(err)
		}
		rest := make([]byte, 2500)
		if _, err := io.ReadFull(moved, rest); err != nil || !bytes.Equal(rest, bytes.Repeat([]byte("x"), 2500)) {
			t.Fatalf("%x after the move: %v", vers, err)
		}
		exchange(t, c.rw(), moved, 40_000)
		if vers == tls.VersionTLS13 {
			if err := moved.KeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			exchange(t, c.rw(), moved, 4_000)
		}
		moved.Close()
		if _, err := c.tc.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("close_notify after the move: %v", err)
		}
	}
}

// A state of an unknown encoding version, or truncated, is refused.
func TestStateDecodeRefuses(t *testing.T) {
	st := &State{Version: tls.VersionTLS13, Suite: tls.TLS_AES_128_GCM_SHA256, InSecret: make([]byte, 32), OutSecret: make([]byte, 32), In: []byte{1, 2}}
	enc, _ := st.MarshalBinary()
	var back State
	if err := back.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(enc)
	bad[0] = 99
	if back.UnmarshalBinary(bad) == nil {
		t.Fatal("unknown version accepted")
	}
	for i := 0; i < len(enc); i++ {
		if back.UnmarshalBinary(enc[:i]) == nil {
			t.Fatalf("truncated to %d accepted", i)
		}
	}
}

func FuzzStateDecode(f *testing.F) {
	st := &State{Version: tls.VersionTLS12, Suite: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, InSecret: make([]byte, 20), OutSecret: make([]byte, 20), Plain: []byte("p")}
	enc, _ := st.MarshalBinary()
	f.Add(enc)
	f.Fuzz(func(t *testing.T, b []byte) {
		var s State
		if s.UnmarshalBinary(b) != nil {
			return
		}
		again, _ := s.MarshalBinary()
		var s2 State
		if err := s2.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("what decoded does not decode the same encoded again: %v", err)
		}
		if c, err := NewConn(&net.TCPConn{}, &s); err == nil {
			c.Wipe()
		}
	})
}

// A client on the record layer keeps TLS 1.3 resumption: the tickets
// that come after the handshake reach crypto/tls's session cache.
func TestClientTicketsResume(t *testing.T) {
	cert := testCert(t)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	scfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	cache := tls.NewLRUClientSessionCache(4)
	ccfg := &tls.Config{RootCAs: pool, ServerName: "localhost", ClientSessionCache: cache}
	dial := func(feed bool) (*Conn, *tls.Conn) {
		craw, sraw := pair(t)
		srv := tls.Server(sraw, scfg)
		go func() {
			if srv.Handshake() == nil {
				io.Copy(srv, srv) // echo
			}
		}()
		var kl KeyLog
		cfg := ccfg.Clone()
		cfg.KeyLogWriter = &kl
		hc := NewHandshakeConn(craw, nil)
		tc := tls.Client(hc, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c, err := FromHandshake(craw, hc, tc.ConnectionState(), &kl, false)
		if err != nil {
			t.Fatal(err)
		}
		if feed {
			c.TicketsTo(tc, hc)
		}
		msg := []byte("past the tickets")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %q %v", got, err)
		}
		if c.tickets != nil {
			t.Fatal("still handing records to crypto/tls after application data")
		}
		return c, tc
	}
	_, tc := dial(false)
	if tc.ConnectionState().DidResume {
		t.Fatal("resumed the first connection")
	}
	// Without TicketsTo the tickets are dropped: no resumption.
	if _, tc = dial(false); tc.ConnectionState().DidResume {
		t.Fatal("resumed without a ticket")
	}
	dial(true)
	if _, tc = dial(true); !tc.ConnectionState().DidResume {
		t.Fatal("not resumed: the tickets did not reach the cache")
	}
}

// A TLS 1.2 resumption logs no master secret: the KeyLog's hooks take it
// from the session resumed, on either side, and the record layer carries
// the resumed connection (tickets, and a server's session cache).
func TestTLS12Resumption(t *testing.T) {
	cert := testCert(t)
	for _, withCache := range []bool{false, true} {
		scfg := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12}
		var tk [32]byte
		scfg.SetSessionTicketKeys([][32]byte{tk})
		if withCache {
			var mu sync.Mutex
			store := map[string]*tls.SessionState{}
			scfg.WrapSession = func(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
				mu.Lock()
				defer mu.Unlock()
				id := fmt.Sprint(len(store))
				store[id] = ss
				return []byte(id), nil
			}
			scfg.UnwrapSession = func(id []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
				mu.Lock()
				defer mu.Unlock()
				return store[string(id)], nil
			}
		}
		cache := tls.NewLRUClientSessionCache(4)
		for i := range 3 {
			craw, sraw := pair(t)
			type side struct {
				rc  *Conn
				res bool
				err error
			}
			sch := make(chan side, 1)
			go func() {
				var kl KeyLog
				cfg := scfg.Clone()
				cfg.KeyLogWriter = &kl
				cfg.UnwrapSession = kl.UnwrapSession(cfg, cfg.UnwrapSession)
				hc := NewHandshakeConn(sraw, nil)
				tc := tls.Server(hc, cfg)
				if err := tc.Handshake(); err != nil {
					sch <- side{err: err}
					return
				}
				rc, err := FromHandshake(sraw, hc, tc.ConnectionState(), &kl, true)
				sch <- side{rc, tc.ConnectionState().DidResume, err}
			}()
			var kl KeyLog
			ccfg := &tls.Config{InsecureSkipVerify: true, ServerName: "x", ClientSessionCache: kl.ClientCache(cache), KeyLogWriter: &kl}
			hc := NewHandshakeConn(craw, nil)
			tc := tls.Client(hc, ccfg)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			c, err := FromHandshake(craw, hc, tc.ConnectionState(), &kl, false)
			if err != nil {
				t.Fatalf("cache %v #%d client: %v", withCache, i, err)
			}
			s := <-sch
			if s.err != nil {
				t.Fatalf("cache %v #%d server: %v", withCache, i, s.err)
			}
			if want := i > 0; s.res != want || tc.ConnectionState().DidResume != want {
				t.Fatalf("cache %v #%d: resumed %v/%v, want %v", withCache, i, s.res, tc.ConnectionState().DidResume, want)
			}
			exchange(t, c, s.rc, 50_000)
		}
	}
}

// wireConn is a net.Conn over a byte buffer: what one side wrote, the
// other reads, as much as it asks for at once.
type wireConn struct {
	net.Conn
	w *bytes.Buffer
	r *bytes.Reader
}

func (c wireConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c wireConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c wireConn) Close() error                { return nil }

// A read returns the application data of every whole record the socket
// gave at once (a KeyUpdate between them handled), and close_notify after
// them ends the stream only once they are read.
func TestReadBatchesRecords(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	var wire bytes.Buffer
	w, err := NewConn(wireConn{w: &wire}, &State{Version: tls.VersionTLS13, Suite: tls.TLS_AES_128_GCM_SHA256, Server: true, OutSecret: clone(a), InSecret: clone(b)})
	if err != nil {
		t.Fatal(err)
	}
	bulk := bytes.Repeat([]byte("x"), 40000) // three records
	w.Write([]byte("first "))
	w.KeyUpdate(false)
	w.Write(bulk)
	w.Close() // close_notify
	r, err := NewConn(wireConn{r: bytes.NewReader(wire.Bytes())}, &State{Version: tls.VersionTLS13, Suite: tls.TLS_AES_128_GCM_SHA256, InSecret: clone(a), OutSecret: clone(b)})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	reads := 0
	for {
		p, err := r.ReadPlain()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p...)
		reads++
	}
	if want := append([]byte("first "), bulk...); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d", len(got), len(want))
	}
	// The first read's small buffer holds the first record and the
	// KeyUpdate; the next takes the three bulk records at once.
	if reads != 2 {
		t.Fatalf("%d reads, want 2", reads)
	}
}

// bufConn is a nonblocking net.Conn over two byte buffers: Read takes
// from r (EAGAIN when it is empty), Write appends to w, or takes nothing
// (EAGAIN) while *full: a socket whose peer does not read.
type bufConn struct {
	net.Conn
	r, w *bytes.Buffer
	full *bool
}

func (c bufConn) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		return 0, syscall.EAGAIN
	}
	return c.r.Read(p)
}

func (c bufConn) Write(p []byte) (int, error) {
	if *c.full {
		return 0, syscall.EAGAIN
	}
	return c.w.Write(p)
}

func (c bufConn) Close() error { return nil }

// bufPair is a peer and the Conn v it writes to, over bufConns, in step
// (each one's out secret the other's in): what peer writes goes to toV,
// which v reads, and v's writes reach peer while *full is false. v is
// the server unless client.
func bufPair(t testing.TB, vers, suite uint16, secretLen int, full *bool, client bool) (peer, v *Conn, toV *bytes.Buffer) {
	t.Helper()
	a, b := bytes.Repeat([]byte{1}, secretLen), bytes.Repeat([]byte{2}, secretLen)
	toV, toPeer := new(bytes.Buffer), new(bytes.Buffer)
	never := false
	peer, err := NewConn(bufConn{r: toPeer, w: toV, full: &never}, &State{Version: vers, Suite: suite, Server: client, OutSecret: clone(a), InSecret: clone(b)})
	if err != nil {
		t.Fatal(err)
	}
	v, err = NewConn(bufConn{r: toV, w: toPeer, full: full}, &State{Version: vers, Suite: suite, Server: !client, InSecret: clone(a), OutSecret: clone(b)})
	if err != nil {
		t.Fatal(err)
	}
	return peer, v, toV
}

// A peer that asks for KeyUpdates and does not read gets one answer
// until it reads, not one each (RFC 8446 4.6.3): its requests cannot
// grow the sealed bytes waiting for it without bound. The keys stay in
// step: what is written after the answer opens on the peer's side.
func TestKeyUpdateRequestsWhileTheSocketIsFull(t *testing.T) {
	full := true
	peer, v, _ := bufPair(t, tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, 32, &full, false)
	const requests = 10000
	for range requests {
		if err := peer.KeyUpdate(true); err != nil {
			t.Fatal(err)
		}
	}
	peer.Write([]byte("hello"))
	got := make([]byte, 16)
	n, err := v.Read(got)
	if err != nil || string(got[:n]) != "hello" {
		t.Fatalf("read %q, %v after %d KeyUpdates", got[:n], err, requests)
	}
	if len(v.wbuf) > 64 {
		t.Fatalf("%d requests left %d sealed bytes waiting, want one answer (27 bytes)", requests, len(v.wbuf))
	}
	full = false
	if _, err := v.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	n, err = peer.Read(got)
	if err != nil || string(got[:n]) != "after" {
		t.Fatalf("the peer read %q, %v: the keys are out of step", got[:n], err)
	}
	// Once the answer is written, the next request is answered again.
	peer.KeyUpdate(true)
	peer.Write([]byte("x"))
	if n, err := v.Read(got); err != nil || string(got[:n]) != "x" {
		t.Fatalf("read %q, %v", got[:n], err)
	}
	v.Write([]byte("y"))
	if n, err := peer.Read(got); err != nil || string(got[:n]) != "y" || peer.in.seq != 1 {
		t.Fatalf("the peer read %q, %v, at sequence %d: want y at 1 (after a second answer)", got[:n], err, peer.in.seq)
	}
}

// A post-handshake message this side never takes is refused at its
// header, before the rest of it comes: a peer cannot make a connection
// hold up to 64 KiB of a message it will refuse anyway.
func TestUnexpectedHandshakeMessageRefusedAtItsHeader(t *testing.T) {
	for _, typ := range []byte{1, 4, 13, 24} {
		full := false
		peer, v, toV := bufPair(t, tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, 32, &full, false)
		// The first 1,000 bytes of a 60,000-byte message.
		frag := append([]byte{typ, 0, 0xea, 0x60}, make([]byte, 996)...)
		toV.Write(peer.out.seal(nil, typeHandshake, frag))
		_, err := v.Read(make([]byte, 16))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("unexpected handshake message %d", typ)) {
			t.Fatalf("type %d: read gave %v, want the message refused", typ, err)
		}
		if len(v.hs) > 1000 {
			t.Fatalf("type %d: %d bytes of it held", typ, len(v.hs))
		}
	}
}

// suiteCases are the record layer's AEAD suites, each with the length of
// its State secret (TLS 1.2: key and implicit IV).
var suiteCases = []struct {
	name        string
	vers, suite uint16
	secret      int
}{
	{"TLS1.3-AES-128-GCM", tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, 32},
	{"TLS1.3-ChaCha20", tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, 32},
	{"TLS1.2-AES-128-GCM", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 20},
	{"TLS1.2-ChaCha20", tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, 44},
}

// FuzzPeerRecords: whatever records a peer sends after the handshake,
// sealed with the right keys (so that they reach the record layer's
// parsing of alerts, handshake messages and data, not only its MAC
// check), followed by raw bytes, the layer neither panics nor holds more
// than it must: a handshake message is kept up to its 64 KiB limit, the
// sealed answers waiting for a socket that takes nothing stay one, and
// reading ends (data, EAGAIN or an error) in a bounded number of calls.
//
// The input: byte 0 picks the version and suite and whether the reader's
// socket is full; then records as [type][length, 2 bytes][plaintext],
// and whatever does not parse as one goes to the wire raw.
func FuzzPeerRecords(f *testing.F) {
	f.Add([]byte{0, typeAppData, 0, 5, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{1, typeHandshake, 0, 5, 24, 0, 0, 1, 1, typeHandshake, 0, 5, 24, 0, 0, 1, 1, typeAppData, 0, 1, 'x'})
	f.Add([]byte{2, typeAlert, 0, 2, 1, 0, typeAppData, 0, 0})
	f.Add([]byte{3, typeHandshake, 0, 4, 4, 0, 1, 0, typeHandshake, 0, 3, 0, 0, 0})
	f.Add([]byte{4, typeHandshake, 0, 3, 1, 0, 0, typeAlert, 0, 2, 2, 40, 23, 3, 3, 0x40, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		c := suiteCases[int(in[0])%len(suiteCases)]
		full := in[0]&0x10 != 0
		client := in[0]&0x20 != 0 // the reader is a client: it takes tickets
		in = in[1:]
		peer, v, toV := bufPair(t, c.vers, c.suite, c.secret, &full, client)
		for len(in) >= 3 {
			n := int(in[1])<<8 | int(in[2])
			if len(in) < 3+n {
				break
			}
			toV.Write(peer.out.seal(nil, in[0], in[3:3+n]))
			if in[0] == typeHandshake && n == 5 && in[3] == 24 && in[4] == 0 && in[5] == 0 && in[6] == 1 && in[7] <= 1 {
				peer.out.update() // the peer's own KeyUpdate moves its keys on
			}
			in = in[3+n:]
		}
		toV.Write(in)
		buf := make([]byte, 1<<14)
		for calls := 0; ; calls++ {
			if calls > 1<<16 {
				t.Fatal("reading does not end")
			}
			if len(v.hs) > 1<<16+4 {
				t.Fatalf("%d bytes of a handshake message held", len(v.hs))
			}
			if full && len(v.wbuf) > 64 {
				t.Fatalf("%d sealed bytes wait for a full socket", len(v.wbuf))
			}
			if _, err := v.Read(buf); err != nil {
				break
			}
		}
		v.Wipe()
	})
}

// discardConn takes every write whole.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkWrite seals and writes application data through a socket that
// takes it all: the record layer's own cost per Write.
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{100, 16 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			c, err := NewConn(discardConn{}, &State{Version: tls.VersionTLS13, Suite: tls.TLS_AES_128_GCM_SHA256, Server: true, InSecret: make([]byte, 32), OutSecret: make([]byte, 32)})
			if err != nil {
				b.Fatal(err)
			}
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealOpen writes application data through one Conn and reads it
// through its peer: both halves of the record layer, per record.
func BenchmarkSealOpen(b *testing.B) {
	for _, st := range suiteCases {
		b.Run(st.name, func(b *testing.B) {
			full := false
			peer, v, _ := bufPair(b, st.vers, st.suite, st.secret, &full, false)
			p, got := make([]byte, 100), make([]byte, 100)
			b.SetBytes(100)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := peer.Write(p); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(v, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
