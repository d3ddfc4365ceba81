package main

import (
	"crypto/tls"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testutil"
)

// tlsStream is a client of the TLS upgrade test.
type tlsStream struct {
	*testutil.TLSClient
	name   string
	rounds atomic.Int64
}

func dialTLSStream(name, addr string, cfg *tls.Config, own bool) (*tlsStream, error) {
	c, err := testutil.DialTLS(addr, cfg, own)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &tlsStream{TLSClient: c, name: name}, nil
}

// Terminated TLS sessions move in "baton upgrade" as plain ones do: TLS 1.3
// and 1.2 sessions stream checksummed round trips through several
// upgrades, those with baton's own record layer on the client side send a
// KeyUpdate after every upgrade, and the old process is gone within 2 s of
// each. A TLS 1.2 CBC session cannot move: the upgrade says so, the old
// process serves it until it ends, and then exits.
func TestUpgradeMovesTLSSessions(t *testing.T) {
	backend := echoServer(t)
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	if out, err := exec.Command("openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-nodes", "-subj", "/CN=a.test/", "-keyout", key, "-out", crt).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	listen := freePort(t)
	p, sock, pidFile := upgradable(t, fmt.Sprintf(`stream {
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA;
        proxy_pass %s;
    }
}`, listen, crt, key, backend))
	killPidFile(t, pidFile, p.cmd.Process.Pid)

	upgrades, own, plain13, v12 := 5, 30, 10, 10
	if raceEnabled {
		upgrades, own, plain13, v12 = 3, 12, 4, 4
	}
	tls12 := func(suite uint16) *tls.Config {
		return &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}}
	}
	var streams []*tlsStream
	for i := 0; i < own+plain13+v12; i++ {
		cfg, mine := &tls.Config{}, i < own
		if i >= own+plain13 {
			cfg = tls12([]uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}[i%2])
			mine = i%3 == 0
		}
		s, err := dialTLSStream(fmt.Sprintf("stream %d", i), listen, cfg, mine)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Raw.Close()
		streams = append(streams, s)
	}
	cbc, err := dialTLSStream("cbc", listen, tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA), false)
	if err != nil {
		t.Fatal(err)
	}
	defer cbc.Raw.Close()
	if err := cbc.RoundTrip([]byte("cbc before\n")); err != nil {
		t.Fatal(err)
	}

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
				if err := s.RoundTrip(buf[:1024+(n*977)%(len(buf)-1024)]); err != nil {
					errs <- fmt.Errorf("%s round %d (after %d upgrades): %w", s.name, n, gen.Load(), err)
					return
				}
				s.rounds.Add(1)
			}
		}()
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
			t.Fatalf("upgrade %d: the streams made no progress", u)
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
		t.Logf("upgrade %d: %s (%s)", u, r.out, r.took.Round(time.Millisecond))
		if u == 1 {
			if r.moved != len(streams) || !strings.Contains(r.out, "1 TLS connections stay in the old process") {
				t.Fatalf("upgrade 1: want %d moved and the CBC session left, and said: %s", len(streams), r.out)
			}
			if err := cbc.RoundTrip([]byte("cbc after\n")); err != nil {
				t.Fatalf("the CBC session after the upgrade: %v", err)
			}
			if exited(oldPid) {
				t.Fatal("the old process exited with the CBC session live")
			}
			cbc.Close()
		} else if r.moved != len(streams) || strings.Contains(r.out, "stay in the old process") {
			t.Fatalf("upgrade %d: want all %d moved: %s", u, len(streams), r.out)
		}
		if !eventually(2*time.Second, 5*time.Millisecond, func() bool { return exited(oldPid) }) {
			t.Fatalf("upgrade %d: old process %d still running 2 s after", u, oldPid)
		}
		oldPid = r.newPid
	}
	if !eventually(30*time.Second, 5*time.Millisecond, progressed) {
		t.Fatal("the streams made no progress after the last upgrade")
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
