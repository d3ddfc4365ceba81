package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsPeer is nginx or HAProxy, run as a TLS server in front of an echo
// backend (tlsFront) and as a TLS client of baton (plainFront, which
// connects to baton's TLS listener).
type tlsPeer struct {
	name                 string
	tlsFront, plainFront string
	reusedLog            string // nginx: $ssl_session_reused of each session it served over TLS
}

func startNginxPeer(t *testing.T, crt, key, echoAddr, batonTLS string, vers string) *tlsPeer {
	p := &tlsPeer{name: "nginx", tlsFront: freeAddr(t), plainFront: freeAddr(t), reusedLog: filepath.Join(t.TempDir(), "reused.log")}
	startNginx(t, p.tlsFront, fmt.Sprintf(`
    log_format r "$ssl_session_reused";
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols %s;
        proxy_pass %s;
        access_log %s r;
    }
    server {
        listen %s;
        proxy_pass %s;
        proxy_ssl on;
        proxy_ssl_protocols %s;
        proxy_ssl_session_reuse on;
    }
`, p.tlsFront, crt, key, vers, echoAddr, p.reusedLog, p.plainFront, batonTLS, vers))
	return p
}

func startHAProxyPeer(t *testing.T, crt, key, echoAddr, batonTLS string, vers string) *tlsPeer {
	haproxy := needTool(t, "haproxy")
	dir := t.TempDir()
	pem := filepath.Join(dir, "pair.pem")
	c, _ := os.ReadFile(crt)
	k, _ := os.ReadFile(key)
	os.WriteFile(pem, append(c, k...), 0o600)
	v := map[string]string{"TLSv1.2": "TLSv1.2", "TLSv1.3": "TLSv1.3"}[vers]
	p := &tlsPeer{name: "haproxy", tlsFront: freeAddr(t), plainFront: freeAddr(t)}
	conf := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(conf, []byte(fmt.Sprintf(`global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind %s ssl crt %s ssl-min-ver %s ssl-max-ver %s
    default_backend echo
backend echo
    server e %s
frontend plain
    bind %s
    default_backend baton
backend baton
    server b %s ssl verify none ssl-min-ver %s ssl-max-ver %s
`, p.tlsFront, pem, v, v, echoAddr, p.plainFront, batonTLS, v, v)), 0o644)
	startProcess(t, exec.Command(haproxy, "-db", "-f", conf), p.tlsFront)
	return p
}

// baton's record layer against OpenSSL on the other side: nginx and
// HAProxy as TLS servers behind baton (proxy_ssl) and as TLS clients in
// front of it (listen ... ssl), TLS 1.3 and 1.2. Streams go both ways
// before, during and after an upgrade that moves every session; with
// nginx as the server, baton's second session to it resumes (its TLS 1.3
// tickets come after the handshake).
func TestTLSInteropPeers(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	for _, peer := range []string{"nginx", "haproxy"} {
		for _, vers := range []string{"TLSv1.3", "TLSv1.2"} {
			t.Run(peer+" "+vers, func(t *testing.T) {
				batonTLS, batonOut := freeAddr(t), freeAddr(t)
				var p *tlsPeer
				if peer == "nginx" {
					p = startNginxPeer(t, crt, key, b.addr().String(), batonTLS, vers)
				} else {
					p = startHAProxyPeer(t, crt, key, b.addr().String(), batonTLS, vers)
				}
				text := fmt.Sprintf(`stream {
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; ssl_protocols %s; proxy_pass %s; }
    server { listen %s; proxy_pass %s; proxy_ssl on; proxy_ssl_protocols %s; }
}`, batonTLS, crt, key, vers, b.addr(), batonOut, p.tlsFront, vers)
				old, _, _ := startConf(t, text)
				type stream struct {
					name string
					c    net.Conn
				}
				var streams []stream
				for i := range 3 {
					for _, s := range []stream{{"baton -> " + peer, nil}, {peer + " -> baton", nil}} {
						addr := batonOut
						if strings.HasPrefix(s.name, peer) {
							addr = p.plainFront
						}
						c, err := net.DialTimeout("tcp", addr, 5*time.Second)
						if err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { c.Close() })
						c.SetDeadline(time.Now().Add(30 * time.Second))
						s.name, s.c = fmt.Sprintf("%s #%d", s.name, i), c
						streams = append(streams, s)
						echoesOn(t, s.name, c, randomBytes(1000)) // one after the other: the next may resume
					}
				}
				for _, s := range streams {
					echoesOn(t, s.name, s.c, randomBytes(200_000))
				}
				// 256 KiB in flight each way at the move.
				sent := make([][]byte, len(streams))
				writes := make(chan error, len(streams))
				for i, s := range streams {
					sent[i] = randomBytes(256 << 10)
					go func() { _, err := s.c.Write(sent[i]); writes <- err }()
				}
				waitFor(t, func() bool { return old.Stats().Active == int64(len(streams)) })
				nw := newProxyText(t, text)
				if moved := handOver(t, old, nw); moved != len(streams) {
					t.Fatalf("moved %d of %d sessions", moved, len(streams))
				}
				old.Close()
				for i, s := range streams {
					got := make([]byte, len(sent[i]))
					if _, err := io.ReadFull(s.c, got); err != nil || !bytes.Equal(got, sent[i]) {
						t.Fatalf("%s: the bytes in flight at the move: %v", s.name, err)
					}
					if err := <-writes; err != nil {
						t.Fatal(err)
					}
				}
				for _, s := range streams {
					echoesOn(t, s.name, s.c, randomBytes(100_000))
					s.c.Close()
				}
				waitFor(t, func() bool { return nw.Stats().Active == 0 })
				if p.reusedLog != "" {
					// startProcess's probe and baton's three sessions; the
					// second and third resume.
					waitFor(t, func() bool {
						data, _ := os.ReadFile(p.reusedLog)
						return strings.Count(string(data), "\n") == 4
					})
					if data, _ := os.ReadFile(p.reusedLog); strings.Count(string(data), "r\n") != 2 {
						t.Errorf("nginx's $ssl_session_reused: %q, want two of baton's three sessions resumed", data)
					}
				}
			})
		}
	}
}
