package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testutil"
	"github.com/batonproxy/baton/internal/tlsrec"
)

// tlsStream is a client of the TLS upgrade test: TLS (rw is a
// testutil.TLSClient, whose Rec is set when baton's record layer carries
// it) or plain (towards a proxy_ssl server).
type tlsStream struct {
	io.ReadWriter
	Raw    net.Conn
	Rec    *tlsrec.Conn
	name   string
	slow   bool // a small receive window, read 1 KiB at a time
	rounds atomic.Int64
}

func dialTLSStream(name, addr string, cfg *tls.Config, own bool) (*tlsStream, error) {
	c, err := testutil.DialTLS(addr, cfg, own)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &tlsStream{ReadWriter: c, Raw: c.Raw, Rec: c.Rec, name: name}, nil
}

func dialPlainStream(name, addr string) (*tlsStream, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &tlsStream{ReadWriter: c, Raw: c, name: name}, nil
}

// roundTrip writes p and reads it back (from an echo), within 20 s; a slow
// stream reads it 1 KiB at a time.
func (s *tlsStream) roundTrip(p []byte) error {
	s.Raw.SetDeadline(time.Now().Add(20 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := s.Write(p); errc <- err }()
	got := make([]byte, len(p))
	for n := 0; n < len(got); {
		end := len(got)
		if s.slow {
			end = min(end, n+1<<10)
		}
		k, err := s.Read(got[n:end])
		if err != nil {
			return err
		}
		n += k
	}
	if !bytes.Equal(got, p) {
		return errors.New("the echo differs")
	}
	return <-errc
}

// TLS sessions move in "baton upgrade" as plain ones do: terminated ones
// (TLS 1.3 and 1.2), ones with TLS to the upstream (proxy_ssl; TLS 1.3
// and 1.2), and ones with both, stream checksummed round trips through
// several upgrades, some of them with small receive windows and 1 KiB
// reads. After every upgrade the clients on baton's own record layer send
// a KeyUpdate, and so does the TLS 1.3 upstream; the old process is gone
// within 2 s of each. A TLS 1.2 CBC session cannot move: the upgrade says
// so, the old process serves it until it ends, and then exits.
//
// BATON_TLS_UPGRADE_SCALE=issue runs it at issue 19's scale: 200 TLS 1.3
// and 50 TLS 1.2 sessions through 10 upgrades.
func TestUpgradeMovesTLSSessions(t *testing.T) {
	backend := echoServer(t)
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-nodes", "-subj", "/CN=a.test/", "-keyout", key, "-out", crt).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	up13 := testutil.StartTLSEcho(t, crt, key, tls.VersionTLS13)
	up12 := testutil.StartTLSEcho(t, crt, key, tls.VersionTLS12)
	term, both, orig13, orig12 := freePort(t), freePort(t), freePort(t), freePort(t)
	p, sock, pidFile := upgradable(t, fmt.Sprintf(`stream {
    ssl_certificate %s;
    ssl_certificate_key %s;
    proxy_ssl_name a.test;
    server {
        listen %s ssl;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA;
        proxy_pass %s;
    }
    server { listen %s ssl; proxy_pass %s; proxy_ssl on; }
    server { listen %s; proxy_pass %s; proxy_ssl on; }
    server { listen %s; proxy_pass %s; proxy_ssl on; proxy_ssl_protocols TLSv1.2; }
}`, crt, key, term, backend, both, up13.Addr, orig13, up13.Addr, orig12, up12.Addr))
	killPidFile(t, pidFile, p.cmd.Process.Pid)

	// How many of each: TLS 1.3 terminated on baton's record layer and on
	// crypto/tls's at the client, TLS 1.3 both sides, TLS 1.3 to the
	// upstream only, TLS 1.2 terminated, TLS 1.2 to the upstream only.
	upgrades, own13, plain13, both13, orig13n, term12, orig12n := 5, 20, 6, 6, 6, 8, 4
	switch {
	case os.Getenv("BATON_TLS_UPGRADE_SCALE") == "issue":
		upgrades, own13, plain13, both13, orig13n, term12, orig12n = 10, 90, 30, 40, 40, 30, 20
	case raceEnabled:
		upgrades, own13, plain13, both13, orig13n, term12, orig12n = 3, 8, 3, 3, 3, 3, 2
	}
	tls12 := func(suite uint16) *tls.Config {
		return &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}}
	}
	var streams []*tlsStream
	add := func(s *tlsStream, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Raw.Close() })
		if len(streams)%5 == 4 {
			s.slow = true
			s.Raw.(*net.TCPConn).SetReadBuffer(4 << 10)
		}
		streams = append(streams, s)
	}
	for i := range own13 + plain13 {
		add(dialTLSStream(fmt.Sprintf("tls13 #%d", i), term, &tls.Config{}, i < own13))
	}
	for i := range both13 {
		add(dialTLSStream(fmt.Sprintf("tls13 both sides #%d", i), both, &tls.Config{}, i%2 == 0))
	}
	for i := range orig13n {
		add(dialPlainStream(fmt.Sprintf("plain to tls13 #%d", i), orig13))
	}
	for i := range term12 {
		suite := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}[i%2]
		add(dialTLSStream(fmt.Sprintf("tls12 #%d", i), term, tls12(suite), i%3 == 0))
	}
	for i := range orig12n {
		add(dialPlainStream(fmt.Sprintf("plain to tls12 #%d", i), orig12))
	}
	cbc, err := dialTLSStream("cbc", term, tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA), false)
	if err != nil {
		t.Fatal(err)
	}
	defer cbc.Raw.Close()
	if err := cbc.roundTrip([]byte("cbc before\n")); err != nil {
		t.Fatal(err)
	}

	// A client that connects and says nothing yet: its handshake has not
	// begun, so it moves in every upgrade as a plain session, and begins
	// after the last one.
	silent, err := net.DialTimeout("tcp", term, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	var gen atomic.Int64 // upgrades done: a client with its own records updates its keys after each
	stop := make(chan struct{})
	errs := make(chan error, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := int64(0)
			buf := make([]byte, 8<<10)
			if s.slow {
				buf = make([]byte, 64<<10)
			}
			for n := 0; n < 1_000_000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if g := gen.Load(); g != seen && s.Rec != nil && s.Rec.Version() == tls.VersionTLS13 {
					seen = g
					if err := s.Rec.KeyUpdate(true); err != nil {
						errs <- fmt.Errorf("%s: KeyUpdate: %w", s.name, err)
						return
					}
				}
				for j := range buf {
					buf[j] = byte(i*31 + n*7 + j)
				}
				if err := s.roundTrip(buf[:1024+(n*977)%(len(buf)-1024)]); err != nil {
					errs <- fmt.Errorf("%s round %d (after %d upgrades): %w", s.name, n, gen.Load(), err)
					return
				}
				s.rounds.Add(1)
			}
		}()
	}
	behind := func() string {
		var names []string
		for _, s := range streams {
			if s.rounds.Load() < 3 {
				names = append(names, fmt.Sprintf("%s (%d rounds)", s.name, s.rounds.Load()))
			}
		}
		return strings.Join(names, ", ")
	}
	progressed := func() bool {
		for _, s := range streams {
			if s.rounds.Load() < 3 {
				return false
			}
		}
		for _, s := range streams {
			s.rounds.Store(0)
		}
		return true
	}
	oldPid := p.cmd.Process.Pid
	for u := 1; u <= upgrades; u++ {
		if !eventually(30*time.Second, 5*time.Millisecond, progressed) {
			t.Fatalf("upgrade %d: the streams made no progress: %s", u, behind())
		}
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		r := runUpgrade(sock)
		if r.err != nil || !r.reported || r.lost != 0 {
			t.Fatalf("upgrade %d: %+v", u, r)
		}
		gen.Add(1)
		up13.KeyGen.Add(1)
		t.Logf("upgrade %d: %s (%s)", u, r.out, r.took.Round(time.Millisecond))
		if u == 1 {
			if r.moved != len(streams)+1 || !strings.Contains(r.out, "1 TLS connections stay in the old process") {
				t.Fatalf("upgrade 1: want %d moved and the CBC session left, and said: %s", len(streams)+1, r.out)
			}
			if err := cbc.roundTrip([]byte("cbc after\n")); err != nil {
				t.Fatalf("the CBC session after the upgrade: %v", err)
			}
			if exited(oldPid) {
				t.Fatal("the old process exited with the CBC session live")
			}
			cbc.Raw.Close()
		} else if r.moved != len(streams)+1 || strings.Contains(r.out, "stay in the old process") {
			t.Fatalf("upgrade %d: want all %d moved: %s", u, len(streams)+1, r.out)
		}
		if !eventually(2*time.Second, 5*time.Millisecond, func() bool { return exited(oldPid) }) {
			t.Fatalf("upgrade %d: old process %d still running 2 s after", u, oldPid)
		}
		oldPid = r.newPid
	}
	if !eventually(30*time.Second, 5*time.Millisecond, progressed) {
		t.Fatalf("the streams made no progress after the last upgrade: %s", behind())
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	silent.SetDeadline(time.Now().Add(20 * time.Second))
	tc := tls.Client(silent, &tls.Config{InsecureSkipVerify: true})
	if _, err := io.WriteString(tc, "at last\n"); err != nil {
		t.Fatalf("the silent client's handshake after %d upgrades: %v", upgrades, err)
	}
	got := make([]byte, len("at last\n"))
	if _, err := io.ReadFull(tc, got); err != nil || string(got) != "at last\n" {
		t.Fatalf("the silent client after %d upgrades: %q %v", upgrades, got, err)
	}
}
