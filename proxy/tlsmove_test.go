package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/testutil"
)

// tlsClient is a named testutil.TLSClient.
type tlsClient struct {
	*testutil.TLSClient
	name string
}

func dialTLSClient(t *testing.T, addr, name string, cfg *tls.Config, ownRecords bool) *tlsClient {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = "a.test"
	c, err := testutil.DialTLS(addr, cfg, ownRecords)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { c.Raw.Close() })
	return &tlsClient{c, name}
}

// echoes writes p and reads it back.
func (c *tlsClient) echoes(t *testing.T, p []byte) {
	t.Helper()
	if err := c.RoundTrip(p); err != nil {
		t.Fatalf("%s: echo of %d bytes: %v", c.name, len(p), err)
	}
}

// newProxyText is the new process of an in-process handoff: a proxy
// (generation 1) of the config text, not started.
func newProxyText(t *testing.T, text string) *Proxy {
	t.Helper()
	cfg, err := config.Parse("new.conf", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	nw, _ := newProxyFor(t, cfg, 1)
	return nw
}

// sessionsWhere counts p's sessions for which f is true, each looked at
// on its loop.
func sessionsWhere(p *Proxy, f func(*session) bool) int {
	var n atomic.Int64
	p.eachLoop(func(l *loop) {
		for _, s := range l.sessions {
			if f(s) {
				n.Add(1)
			}
		}
	})
	return int(n.Load())
}

// randomBytes is n random bytes.
func randomBytes(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	return p
}

// echoesOn writes p to rw, an echo path, and reads it back.
func echoesOn(t *testing.T, name string, rw io.ReadWriter, p []byte) {
	t.Helper()
	if err := testutil.Echo(rw, p); err != nil {
		t.Fatalf("%s: echo of %d bytes: %v", name, len(p), err)
	}
}

// Terminated TLS sessions move in an upgrade: TLS 1.3 and TLS 1.2 (AES-GCM
// and ChaCha20), with bytes in flight both ways at the move, KeyUpdate
// before and after it, and their $ssl_* variables in the new process's
// access log. A TLS 1.2 CBC session stays in the old process, which serves
// it until it ends.
func TestTLSSessionsMoveInUpgrade(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	conf := func(addr, log string) string {
		return fmt.Sprintf(`stream {
    log_format tls "$ssl_protocol $ssl_cipher $ssl_server_name $bytes_received";
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA;
        proxy_pass %s;
        access_log %s tls;
    }
}`, addr, crt, key, b.addr(), log)
	}
	oldLog, newLog := filepath.Join(dir, "old.log"), filepath.Join(dir, "new.log")
	old, addrs, _ := startConf(t, conf("127.0.0.1:0", oldLog))
	addr := addrs[0]

	tls12 := func(suite uint16) *tls.Config {
		return &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}}
	}
	var clients []*tlsClient
	for i := 0; i < 6; i++ {
		clients = append(clients, dialTLSClient(t, addr, fmt.Sprintf("tls13 #%d", i), &tls.Config{}, i%2 == 0))
	}
	clients = append(clients,
		dialTLSClient(t, addr, "tls12 aes-gcm", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), true),
		dialTLSClient(t, addr, "tls12 aes256-gcm", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384), false),
		dialTLSClient(t, addr, "tls12 chacha20", tls12(tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256), false))
	cbc := dialTLSClient(t, addr, "tls12 cbc", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA), false)

	for _, c := range append(clients, cbc) {
		c.echoes(t, randomBytes(50_000))
		if c.Rec != nil && c.Rec.Version() == tls.VersionTLS13 {
			if err := c.Rec.KeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			c.echoes(t, randomBytes(1000))
		}
	}
	// Bytes in flight at the move: each client writes 1 MiB and reads
	// nothing until after it, so baton holds bytes both ways.
	const inFlight = 1 << 20
	sent := make([][]byte, len(clients))
	writes := make(chan error, len(clients))
	for i, c := range clients {
		sent[i] = randomBytes(inFlight)
		go func() { _, err := c.Write(sent[i]); writes <- err }()
	}
	waitFor(t, func() bool { return old.Stats().Active == int64(len(clients)+1) })

	nw := newProxyText(t, conf(addr, newLog))
	if moved := handOver(t, old, nw); moved != len(clients) {
		t.Fatalf("moved %d sessions, want %d (all but the CBC one)", moved, len(clients))
	}
	if n := old.TLSSessions(); n != 1 {
		t.Fatalf("%d TLS sessions stayed in the old process, want the CBC one", n)
	}
	cbc.echoes(t, randomBytes(10_000)) // the old process still serves it
	cbc.Close()
	waitFor(t, func() bool { return old.Stats().Active == 0 })
	old.Close()

	for i, c := range clients {
		got := make([]byte, inFlight)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, sent[i]) {
			t.Fatalf("%s: the bytes in flight at the move: %v", c.name, err)
		}
	}
	for range clients {
		if err := <-writes; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		c.echoes(t, randomBytes(30_000))
		if c.Rec != nil && c.Rec.Version() == tls.VersionTLS13 {
			if err := c.Rec.KeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			c.echoes(t, randomBytes(1000))
		}
		c.Close()
	}
	waitFor(t, func() bool { return nw.Stats().Active == 0 })
	data, _ := os.ReadFile(newLog)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != len(clients) {
		t.Fatalf("new process logged %d sessions, want %d:\n%s", len(lines), len(clients), data)
	}
	for _, want := range []string{"TLSv1.3 TLS_AES_128_GCM_SHA256 a.test", "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 a.test", "TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305 a.test"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("new process's log has no %q:\n%s", want, data)
		}
	}
	if old, _ := os.ReadFile(oldLog); strings.Count(string(old), "\n") != 1 || !strings.Contains(string(old), "AES128-SHA") {
		t.Errorf("old process's log, want the CBC session alone:\n%s", old)
	}
}

// gatedConn writes its first 10 bytes at once and the rest once gate is
// closed: a handshake that has begun and waits for the client.
type gatedConn struct {
	net.Conn
	gate  chan struct{}
	begun bool
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if !c.begun {
		c.begun = true
		if _, err := c.Conn.Write(p[:10]); err != nil {
			return 0, err
		}
		<-c.gate
		n, err := c.Conn.Write(p[10:])
		return n + 10, err
	}
	return c.Conn.Write(p)
}

// terminatingEcho returns the config of a server that terminates TLS on
// addr in front of an echo backend: the old process's, on a free port,
// and the new one's, on the same.
func terminatingEcho(t *testing.T) func(addr string) string {
	crt, key := selfSigned(t, t.TempDir(), "a", "a.test")
	b := startBackend(t, "echo", echo)
	return func(addr string) string {
		return fmt.Sprintf("stream { server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; } }", addr, crt, key, b.addr())
	}
}

// An upgrade waits for a TLS handshake under way, and the session moves
// once it is done.
func TestTLSHandshakeUnderWayMovesWhenDone(t *testing.T) {
	conf := terminatingEcho(t)
	old, addrs, _ := startConf(t, conf("127.0.0.1:0"))
	raw, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	gc := &gatedConn{Conn: raw, gate: make(chan struct{})}
	tc := tls.Client(gc, &tls.Config{InsecureSkipVerify: true})
	hs := make(chan error, 1)
	go func() { hs <- tc.Handshake() }()
	waitFor(t, func() bool { return sessionsWhere(old, (*session).handshakeBegun) > 0 })

	nw := newProxyText(t, conf(addrs[0]))
	old.PauseAccepting()
	if conns, done, err := old.Quiesce(126); len(conns) != 0 || done || err != nil {
		t.Fatalf("quiesce during a handshake: %d sessions, done %v, %v (want it waited for)", len(conns), done, err)
	}
	close(gc.gate)
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	if moved := handOver(t, old, nw); moved != 1 {
		t.Fatalf("moved %d, want the session whose handshake finished", moved)
	}
	old.Close()
	echoesOn(t, "after the move", tc, []byte("after the move\n"))
}

// Sessions with TLS to their upstream (proxy_ssl) move in an upgrade too,
// plain or TLS on the client's side: TLS 1.3 and 1.2 upstreams, bytes in
// flight both ways at the move, the upstream's KeyUpdate before and after
// it, and TLS 1.3 sessions resumed (proxy_ssl_session_reuse: the tickets
// come after the handshake, on baton's record layer).
func TestTLSOriginatedSessionsMoveInUpgrade(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	up13 := testutil.StartTLSEcho(t, crt, key, tls.VersionTLS13)
	up12 := testutil.StartTLSEcho(t, crt, key, tls.VersionTLS12)
	up13.KeyGen.Store(1)
	up12.KeyGen.Store(1)
	plain13, both, plain12 := deadAddr(t).String(), deadAddr(t).String(), deadAddr(t).String()
	text := fmt.Sprintf(`stream {
    proxy_ssl on;
    proxy_ssl_name a.test;
    proxy_ssl_server_name on;
    server { listen %s; proxy_pass %s; }
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; }
    server { listen %s; proxy_pass %s; proxy_ssl_protocols TLSv1.2; proxy_ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384; }
}`, plain13, up13.Addr, both, crt, key, up13.Addr, plain12, up12.Addr)
	old, _, _ := startConf(t, text)

	type client struct {
		name string
		rw   io.ReadWriter
		raw  net.Conn
	}
	echoes := func(c client, p []byte) {
		t.Helper()
		echoesOn(t, c.name, c.rw, p)
	}
	dialPlain := func(addr, name string) client {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		return client{name, c, c}
	}
	var clients []client
	for i := range 3 {
		clients = append(clients, dialPlain(plain13, fmt.Sprintf("plain to tls13 #%d", i)))
		echoes(clients[i], randomBytes(1000)) // one after the other: the next resumes
	}
	for i := range 2 {
		c := dialTLSClient(t, both, fmt.Sprintf("tls both sides #%d", i), &tls.Config{}, i == 0)
		c.Raw.SetDeadline(time.Now().Add(60 * time.Second))
		clients = append(clients, client{c.name, c, c.Raw})
		echoes(clients[len(clients)-1], randomBytes(1000))
	}
	clients = append(clients, dialPlain(plain12, "plain to tls12"))
	for _, c := range clients {
		echoes(c, randomBytes(50_000)) // and a KeyUpdate from a TLS 1.3 upstream
	}
	if n := up13.Resumed.Load(); n < 3 {
		t.Errorf("%d of 5 TLS 1.3 upstream sessions resumed, want all but the first of each server{}", n)
	}

	const inFlight = 1 << 20
	sent := make([][]byte, len(clients))
	writes := make(chan error, len(clients))
	for i, c := range clients {
		sent[i] = randomBytes(inFlight)
		go func() { _, err := c.rw.Write(sent[i]); writes <- err }()
	}
	waitFor(t, func() bool { return old.Stats().Active == int64(len(clients)) })

	nw := newProxyText(t, text)
	if moved := handOver(t, old, nw); moved != len(clients) {
		t.Fatalf("moved %d sessions, want %d", moved, len(clients))
	}
	if n := old.TLSSessions(); n != 0 {
		t.Fatalf("%d TLS sessions stayed in the old process", n)
	}
	old.Close()
	up13.KeyGen.Add(1) // a KeyUpdate from the upstream after the move
	for i, c := range clients {
		got := make([]byte, inFlight)
		if _, err := io.ReadFull(c.rw, got); err != nil || !bytes.Equal(got, sent[i]) {
			t.Fatalf("%s: the bytes in flight at the move: %v", c.name, err)
		}
	}
	for range clients {
		if err := <-writes; err != nil {
			t.Fatal(err)
		}
	}
	up13.KeyGen.Add(1)
	for _, c := range clients {
		echoes(c, randomBytes(30_000))
		if tc, ok := c.rw.(*tlsClient); ok && tc.Rec != nil {
			if err := tc.Rec.KeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			echoes(c, randomBytes(1000))
		}
		c.raw.Close()
	}
	waitFor(t, func() bool { return nw.Stats().Active == 0 })
}

// A TLS session whose handshake has not begun (the client sent nothing
// yet, or part of a record that came meanwhile) moves as a plain session,
// and its handshake runs in the new process: the old one keeps nothing.
// If the upgrade is over without it, the handshake begins again in the old
// process.
func TestTLSHandshakeNotBegunMoves(t *testing.T) {
	conf := terminatingEcho(t)
	old, addrs, _ := startConf(t, conf("127.0.0.1:0"))
	var raws []net.Conn
	for range 3 {
		raw, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(30 * time.Second))
		raws = append(raws, raw)
	}
	waitFor(t, func() bool {
		return sessionsWhere(old, func(s *session) bool { return s.state == stateHandshake }) == len(raws)
	})
	nw := newProxyText(t, conf(addrs[0]))
	startHandOver(t, old, nw)
	// One pass takes every such handshake back, not one a pass (each
	// pass may wait 5 ms, and the upgrade waits 3 s at most).
	if conns, done, err := old.Quiesce(126); len(conns) != 0 || done || err != nil {
		t.Fatalf("first pass: %d sessions, done %v, %v; want it to wait for the handshakes taken back", len(conns), done, err)
	}
	waitFor(t, func() bool {
		return sessionsWhere(old, func(s *session) bool { return s.state == stateTLSPending }) == len(raws)
	})
	if moved := moveSessions(t, old, nw); moved != len(raws) {
		t.Fatalf("moved %d, want the %d sessions whose handshake had not begun", moved, len(raws))
	}
	if n := old.Stats().Active; n != 0 {
		t.Fatalf("%d sessions stayed in the old process", n)
	}
	old.Close()
	for i, raw := range raws {
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
		echoesOn(t, fmt.Sprintf("handshake in the new process #%d", i), tc, randomBytes(1000))
	}

	// An upgrade that ends without it (nothing takes it: the sink is
	// never asked) leaves it to begin here again.
	p, addrs2, _ := startConf(t, conf("127.0.0.1:0"))
	raw, err := net.DialTimeout("tcp", addrs2[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	waitFor(t, func() bool { return p.Stats().Active == 1 })
	p.PauseAccepting()
	waitFor(t, func() bool {
		return sessionsWhere(p, func(s *session) bool { s.takeHandshakeBack(); return s.state == stateTLSPending }) > 0
	})
	p.ResumeAccepting() // the upgrade failed
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	echoesOn(t, "after a failed upgrade", tc, []byte("here again\n"))
}

// A new process that does not know a TLS session's record state version
// refuses the session, and the old process, restoring it, serves it on:
// the client sees nothing. The upstream's record state likewise.
func TestTLSStateRefusedStaysInOldProcess(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	up := testutil.StartTLSEcho(t, crt, key, tls.VersionTLS13)
	term, orig := deadAddr(t).String(), deadAddr(t).String()
	text := fmt.Sprintf(`stream {
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; }
    server { listen %s; proxy_pass %s; proxy_ssl on; }
}`, term, crt, key, b.addr(), orig, up.Addr)
	old, _, _ := startConf(t, text)
	tc := dialTLSClient(t, term, "terminated", &tls.Config{}, true)
	tc.echoes(t, []byte("before\n"))
	pc, err := net.DialTimeout("tcp", orig, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(30 * time.Second))
	echoesOn(t, "proxy_ssl", pc, randomBytes(1000))

	nw := newProxyText(t, text)
	startHandOver(t, old, nw)
	conns, _, err := old.Quiesce(126)
	if err != nil || len(conns) != 2 {
		t.Fatalf("quiesced %d sessions, %v; want both", len(conns), err)
	}
	// A record state of a version this build does not know (a newer one).
	for i := range conns {
		m, err := decodeState(conns[i].State)
		if err != nil {
			t.Fatal(err)
		}
		if m.upTLS != nil {
			m.upTLS[0] = 99
		}
		if m.tls != nil {
			m.tls.rec[0] = 99
		}
		conns[i].State = m.encode()
	}
	accepted, rejected := nw.Sink().Import(conns)
	if len(accepted) != 0 || len(rejected) != 2 {
		t.Fatalf("accepted %v, rejected %v: want both refused", accepted, rejected)
	}
	for _, why := range rejected {
		if !strings.Contains(why, "unknown version") {
			t.Errorf("refused for %q, want the unknown record state version", why)
		}
	}
	var ids []uint64
	for _, c := range conns {
		ids = append(ids, c.ID)
	}
	old.Restore(ids)
	old.ResumeAccepting()
	tc.echoes(t, []byte("after, still the old process\n"))
	if err := tc.Rec.KeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	tc.echoes(t, []byte("and after a KeyUpdate\n"))
	echoesOn(t, "proxy_ssl", pc, randomBytes(100_000))
	if n := old.Stats().Active; n != 2 {
		t.Fatalf("the old process has %d sessions, want both", n)
	}
}
