package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testutil"
)

// selfSigned writes a certificate for names and its key to dir and returns
// their paths.
func selfSigned(t *testing.T, dir, base string, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func tlsDial(t *testing.T, addr, sni string, alpn ...string) *tls.Conn {
	t.Helper()
	return tlsDialConfig(t, addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: alpn})
}

// tlsDialConfig is tlsDial with a configuration of the test's.
func tlsDialConfig(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS to %s (%q): %v", addr, cfg.ServerName, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// "listen ... ssl" terminates TLS: the upstream sees the plain stream both
// ways, the client's close ends the session, and the $ssl_* variables say
// what was negotiated.
func TestTLSTermination(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	logPath := filepath.Join(dir, "access.log")
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
    log_format tls "$ssl_protocol $ssl_cipher $ssl_server_name $ssl_alpn_protocol $ssl_session_reused $ssl_client_verify $bytes_received";
    server {
        listen 127.0.0.1:0 ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_alpn mqtt h2;
        proxy_pass %s;
        access_log %s tls;
    }
}`, crt, key, b.addr(), logPath))
	c := tlsDial(t, addrs[0], "a.test", "mqtt")
	if st := c.ConnectionState(); st.NegotiatedProtocol != "mqtt" || st.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %q over %x", st.NegotiatedProtocol, st.Version)
	}
	msg := strings.Repeat("hello over TLS ", 10000) // larger than one record
	go io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through TLS: %v", err)
	}
	c.Close()
	waitFor(t, func() bool { data, _ := os.ReadFile(logPath); return len(data) > 0 })
	line, _ := os.ReadFile(logPath)
	want := fmt.Sprintf("TLSv1.3 TLS_AES_128_GCM_SHA256 a.test mqtt . NONE %d\n", len(msg))
	if string(line) != want {
		t.Fatalf("log line %q, want %q", line, want)
	}
}

// Servers sharing a TLS address are chosen by the client's server name in
// the handshake, with their own certificates, as nginx.
func TestTLSServerName(t *testing.T) {
	dir := t.TempDir()
	crtA, keyA := selfSigned(t, dir, "a", "a.test")
	crtB, keyB := selfSigned(t, dir, "b", "b.test")
	addr := deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    ssl_certificate %s;
    ssl_certificate_key %s;
    server { listen %s ssl; server_name a.test; return "a $ssl_server_name"; }
    server { listen %s; server_name b.test; ssl_certificate %s; ssl_certificate_key %s; return "b $ssl_server_name"; }
}`, crtA, keyA, addr, addr, crtB, keyB))
	for _, tc := range []struct{ sni, want, cn string }{
		{"a.test", "a a.test", "a.test"},
		{"b.test", "b b.test", "b.test"},
		{"c.test", "a c.test", "a.test"},
	} {
		c := tlsDial(t, addr, tc.sni)
		got, _ := io.ReadAll(c)
		if string(got) != tc.want {
			t.Errorf("server name %s: %q, want %q", tc.sni, got, tc.want)
		}
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != tc.cn {
			t.Errorf("server name %s: certificate of %s, want %s", tc.sni, cn, tc.cn)
		}
	}
}

// A client that does not speak TLS ends its session with a log line, and
// the loop goes on serving.
func TestTLSHandshakeFails(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	_, addrs, logs := startConf(t, fmt.Sprintf(`stream {
    server { listen 127.0.0.1:0 ssl; ssl_certificate %s; ssl_certificate_key %s; ssl_handshake_timeout 2s; return ok; }
}`, crt, key))
	c, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	got, _ := io.ReadAll(c)
	if strings.Contains(string(got), "ok") {
		t.Fatalf("a plain client was served: %q", got)
	}
	c.Close()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "SSL handshake failed") })
	tc := tlsDial(t, addrs[0], "a.test")
	if got, _ := io.ReadAll(tc); string(got) != "ok" {
		t.Fatalf("after a failed handshake, a TLS client got %q", got)
	}
}

// ssl_reject_handshake refuses the handshakes that choose its server with
// nginx's alert, unrecognized_name; another server of the address serves.
func TestTLSRejectHandshake(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "v", "virtual.test")
	addr := deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    server { listen %s ssl; ssl_reject_handshake on; return default; }
    server { listen %s; server_name virtual.test; ssl_certificate %s; ssl_certificate_key %s; return virtual; }
}`, addr, addr, crt, key))
	d := &net.Dialer{Timeout: 5 * time.Second}
	for _, sni := range []string{"", "other.test"} {
		_, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("server name %q: %v, want unrecognized name", sni, err)
		}
	}
	if got, _ := io.ReadAll(tlsDial(t, addr, "virtual.test")); string(got) != "virtual" {
		t.Fatalf("the virtual server answered %q", got)
	}
}

// ssl_verify_client optional: a certificate from the configured CA is
// SUCCESS, none is NONE, one from elsewhere fails the handshake; with
// optional_no_ca it goes through as FAILED:reason.
func TestTLSVerifyClient(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "srv", "srv.test")
	caCrt, caKey := selfSigned(t, dir, "ca", "ca.test")    // used as a client certificate and as the CA
	otherCrt, otherKey := selfSigned(t, dir, "other", "x") // nobody trusts it
	addrs := []string{deadAddr(t).String(), deadAddr(t).String()}
	startConf(t, fmt.Sprintf(`stream {
    ssl_certificate %s; ssl_certificate_key %s; ssl_client_certificate %s;
    server { listen %s ssl; ssl_verify_client optional; return "$ssl_client_verify $ssl_client_s_dn"; }
    server { listen %s ssl; ssl_verify_client optional_no_ca; return "$ssl_client_verify"; }
}`, crt, key, caCrt, addrs[0], addrs[1]))
	dial := func(addr, certFile, keyFile string) (string, error) {
		cfg := &tls.Config{InsecureSkipVerify: true}
		if certFile != "" {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			// Sent whatever CAs the server names (Go's client would
			// otherwise keep back one they do not cover).
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		return string(got), err
	}
	if got, err := dial(addrs[0], caCrt, caKey); got != "SUCCESS CN=ca.test" {
		t.Errorf("trusted certificate: %q, %v", got, err)
	}
	if got, err := dial(addrs[0], "", ""); got != "NONE " {
		t.Errorf("no certificate: %q, %v", got, err)
	}
	if got, err := dial(addrs[0], otherCrt, otherKey); err == nil && got != "" {
		t.Errorf("untrusted certificate was served: %q", got)
	}
	if got, err := dial(addrs[1], otherCrt, otherKey); got != "FAILED:self-signed certificate" {
		t.Errorf("optional_no_ca, untrusted: %q, %v", got, err)
	}
}

// proxy_ssl: TLS to the upstream, with the name checked against the
// trusted CA (proxy_ssl_verify), SNI sent (proxy_ssl_server_name), and
// sessions resumed (proxy_ssl_session_reuse).
func TestProxySSL(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "up", "up.test")
	b := startBackend(t, "echo", echo)
	tlsAddr, plain, wrong := deadAddr(t).String(), deadAddr(t).String(), deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    log_format t "$ssl_server_name $ssl_session_reused";
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; access_log %s t; }
    server { listen %s; proxy_pass %s; proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate %s;
             proxy_ssl_name up.test; proxy_ssl_server_name on; proxy_ssl_key_log %s/up.keys; }
    server { listen %s; proxy_pass %s; proxy_ssl on; proxy_ssl_verify on; proxy_ssl_trusted_certificate %s;
             proxy_ssl_name other.test; }
}`, tlsAddr, crt, key, b.addr(), filepath.Join(dir, "up.log"), plain, tlsAddr, crt, dir, wrong, tlsAddr, crt))
	for i := range 2 {
		c, err := net.DialTimeout("tcp", plain, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := fmt.Sprintf("through TLS %d\n", i)
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("round trip %d: %q, %v", i, got, err)
		}
		c.Close()
	}
	waitFor(t, func() bool {
		data, _ := os.ReadFile(filepath.Join(dir, "up.log"))
		return strings.Count(string(data), "\n") == 2
	})
	if data, _ := os.ReadFile(filepath.Join(dir, "up.log")); string(data) != "up.test .\nup.test r\n" {
		t.Errorf("the upstream logged %q, want SNI up.test, the second session resumed", data)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "up.keys")); !strings.Contains(string(data), "CLIENT_TRAFFIC_SECRET_0 ") {
		t.Errorf("proxy_ssl_key_log wrote %q", data)
	}
	// A name the certificate does not have: refused.
	c, err := net.DialTimeout("tcp", wrong, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "x\n")
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Fatalf("an upstream whose certificate does not match was used: %q", got)
	}
}

// ssl_session_cache with ssl_session_tickets off resumes sessions from a
// cache kept here (the client holds only an id); with neither, none
// resume.
func TestTLSSessionCache(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	cached, none := deadAddr(t).String(), deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    ssl_certificate %s; ssl_certificate_key %s; ssl_session_tickets off;
    server { listen %s ssl; ssl_session_cache shared:SSL:1m; return "$ssl_session_reused $ssl_curve"; }
    server { listen %s ssl; return $ssl_session_reused; }
}`, crt, key, cached, none))
	for _, tc := range []struct {
		addr  string
		first string
		again string
	}{{cached, ". X25519MLKEM768", "r "}, {none, ".", "."}} {
		cache := tls.NewLRUClientSessionCache(4)
		var got []string
		for range 2 {
			b, _ := io.ReadAll(tlsDialConfig(t, tc.addr, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, ClientSessionCache: cache}))
			got = append(got, string(b))
		}
		if got[0] != tc.first || !strings.HasPrefix(got[1], strings.TrimSpace(tc.again)) {
			t.Errorf("%s: %q, want %q then %q", tc.addr, got, tc.first, tc.again)
		}
	}
}

// ssl_certificate with variables: the files are named at each handshake,
// here by the client's server name.
func TestTLSCertificateVariables(t *testing.T) {
	dir := t.TempDir()
	selfSigned(t, dir, "a.test", "a.test")
	selfSigned(t, dir, "b.test", "b.test")
	_, addrs, logs := startConf(t, fmt.Sprintf(`stream {
    server { listen 127.0.0.1:0 ssl; ssl_certificate %[1]s/$ssl_server_name.crt; ssl_certificate_key %[1]s/$ssl_server_name.key; return $ssl_server_name; }
}`, dir))
	for _, name := range []string{"a.test", "b.test"} {
		c := tlsDial(t, addrs[0], name)
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != name {
			t.Errorf("server name %s got the certificate of %s", name, cn)
		}
		if got, _ := io.ReadAll(c); string(got) != name {
			t.Errorf("server name %s: %q", name, got)
		}
	}
	_, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addrs[0], &tls.Config{ServerName: "c.test", InsecureSkipVerify: true})
	if err == nil {
		t.Fatal("a name without certificate files was served")
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), `cannot load certificate "`+dir+`/c.test.crt"`) })
}

// ssl_ecdh_curve chooses the key exchange, ssl_key_log writes the session
// secrets, and servers sharing an ssl_session_ticket_key file resume each
// other's sessions (a fleet behind one name).
func TestTLSCurveKeyLogTicketKey(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	keyFile := filepath.Join(dir, "ticket.key")
	os.WriteFile(keyFile, []byte(strings.Repeat("k", 80)), 0o600)
	logFile := filepath.Join(dir, "keys.log")
	a1, a2 := deadAddr(t).String(), deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    ssl_certificate %s; ssl_certificate_key %s; ssl_session_ticket_key %s;
    server { listen %s ssl; ssl_ecdh_curve prime256v1; ssl_key_log %s; return "$ssl_curve $ssl_session_reused"; }
    server { listen %s ssl; return "$ssl_curve $ssl_session_reused"; }
}`, crt, key, keyFile, a1, logFile, a2))
	cache := tls.NewLRUClientSessionCache(4)
	read := func(addr string) string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: "a.test", InsecureSkipVerify: true, ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := read(a1); got != "prime256v1 ." {
		t.Errorf("first server: %q", got)
	}
	if got := read(a2); !strings.HasSuffix(got, " r") {
		t.Errorf("the second server did not resume the first one's session: %q", got)
	}
	if data, _ := os.ReadFile(logFile); !strings.Contains(string(data), "CLIENT_TRAFFIC_SECRET_0 ") {
		t.Errorf("ssl_key_log wrote %q", data)
	}
}

// Interop with OpenSSL, both ways: openssl s_client through baton's TLS
// listener, and baton's proxy_ssl to openssl s_server.
func TestTLSInteropOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed (.ci/run installs it)")
	}
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	tlsAddr, plain := deadAddr(t).String(), deadAddr(t).String()
	srvAddr := deadAddr(t)
	startConf(t, fmt.Sprintf(`stream {
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; }
    server { listen %s; proxy_pass %s; proxy_ssl on; proxy_ssl_server_name on; proxy_ssl_name a.test; }
}`, tlsAddr, crt, key, b.addr(), plain, srvAddr))

	// openssl s_client -> baton (TLS terminated) -> echo.
	cmd := exec.Command("openssl", "s_client", "-connect", tlsAddr, "-servername", "a.test", "-quiet")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	io.WriteString(in, "hello from openssl\n")
	echoed := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		echoed <- line
	}()
	select {
	case line := <-echoed:
		if line != "hello from openssl\n" {
			t.Fatalf("openssl s_client through baton got %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("openssl s_client through baton got no echo")
	}
	in.Close()

	// plain client -> baton (proxy_ssl) -> openssl s_server, which prints
	// what it receives and the SNI it saw.
	srv := exec.Command("openssl", "s_server", "-accept", srvAddr.String(), "-cert", crt, "-key", key, "-naccept", "1", "-servername", "a.test", "-cert2", crt, "-key2", key)
	stdout, _ := srv.StdoutPipe()
	srv.Stderr = srv.Stdout
	srvIn, _ := srv.StdinPipe() // held open: s_server ends its connection at EOF on its input
	defer srvIn.Close()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		var acc string
		for {
			n, err := stdout.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	for l := range lines { // s_server says ACCEPT once it listens
		if strings.Contains(l, "ACCEPT") {
			break
		}
	}
	c, err := net.DialTimeout("tcp", plain, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello to openssl\n")
	deadline := time.After(10 * time.Second)
	var saw []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("openssl s_server ended; it printed:\n%s", strings.Join(saw, "\n"))
			}
			saw = append(saw, l)
			if strings.Contains(l, "hello to openssl") {
				if !strings.Contains(strings.Join(saw, "\n"), "Switching server context") {
					t.Errorf("s_server did not see the name a.test:\n%s", strings.Join(saw, "\n"))
				}
				return
			}
		case <-deadline:
			t.Fatalf("openssl s_server did not get the bytes; it printed:\n%s", strings.Join(saw, "\n"))
		}
	}
}

// A failed upstream handshake counts against the upstream and the session
// goes on to the next, as nginx's proxy_next_upstream.
func TestProxySSLNextUpstream(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "up", "up.test")
	b := startBackend(t, "echo", echo)
	plainUp := startBackend(t, "plain", greet("not TLS")) // answers in the clear: the handshake fails
	tlsAddr, front := deadAddr(t).String(), deadAddr(t).String()
	_, _, logs := startConf(t, fmt.Sprintf(`stream {
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; proxy_pass %s; }
    upstream u { server %s; server %s; }
    server { listen %s; proxy_pass u; proxy_ssl on; }
}`, tlsAddr, crt, key, b.addr(), plainUp.addr(), tlsAddr, front))
	c, err := net.DialTimeout("tcp", front, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "ping\n")
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping\n" {
		t.Fatalf("got %q, %v: the session did not go on to the TLS upstream", got, err)
	}
	if !strings.Contains(logs.String(), "while SSL handshaking to upstream") {
		t.Errorf("the failed handshake is not logged:\n%s", logs)
	}
}

// ssl_stapling with ssl_stapling_file staples the file's response as it is.
func TestTLSStaplingFile(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	resp := filepath.Join(dir, "resp.der")
	os.WriteFile(resp, []byte("a DER OCSP response"), 0o600)
	_, addrs, _ := startConf(t, fmt.Sprintf(`stream {
    server { listen 127.0.0.1:0 ssl; ssl_certificate %s; ssl_certificate_key %s; ssl_stapling on; ssl_stapling_file %s; return ok; }
}`, crt, key, resp))
	c := tlsDial(t, addrs[0], "a.test")
	if got := string(c.ConnectionState().OCSPResponse); got != "a DER OCSP response" {
		t.Fatalf("stapled %q", got)
	}
}

// TLS 1.2 sessions resume on either side of baton (tickets, and
// ssl_session_cache without them), and the record layer carries them (so
// they can move in an upgrade), although crypto/tls logs no master secret
// for a resumption.
func TestTLS12ResumedSessions(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	b := startBackend(t, "echo", echo)
	up := testutil.StartTLSEcho(t, crt, key, tls.VersionTLS12)
	tickets, cached, orig := deadAddr(t).String(), deadAddr(t).String(), deadAddr(t).String()
	p, _, _ := startConf(t, fmt.Sprintf(`stream {
    ssl_certificate %s; ssl_certificate_key %s;
    server { listen %s ssl; proxy_pass %s; }
    server { listen %s ssl; ssl_session_tickets off; ssl_session_cache shared:SSL:1m; proxy_pass %s; }
    server { listen %s; proxy_pass %s; proxy_ssl on; proxy_ssl_protocols TLSv1.2; }
}`, crt, key, tickets, b.addr(), cached, b.addr(), orig, up.Addr))
	// Every live session is on baton's record layer: it can move.
	movable := func(what string) {
		t.Helper()
		n := sessionsWhere(p, func(*session) bool { return true })
		if ok := sessionsWhere(p, (*session).tlsMovable); n != 1 || ok != 1 {
			t.Fatalf("%s: %d sessions, %d of them movable", what, n, ok)
		}
	}
	for _, addr := range []string{tickets, cached} {
		cache := tls.NewLRUClientSessionCache(4)
		for i := range 2 {
			c := tlsDialConfig(t, addr, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, ClientSessionCache: cache, MaxVersion: tls.VersionTLS12})
			echoesOn(t, fmt.Sprintf("%s #%d", addr, i), c, randomBytes(20_000))
			if c.ConnectionState().DidResume != (i == 1) {
				t.Fatalf("%s #%d: resumed %v", addr, i, c.ConnectionState().DidResume)
			}
			movable(fmt.Sprintf("%s #%d", addr, i))
			c.Close()
			waitFor(t, func() bool { return p.Stats().Active == 0 })
		}
	}
	for i := range 2 {
		c, err := net.DialTimeout("tcp", orig, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		echoesOn(t, fmt.Sprintf("proxy_ssl #%d", i), c, randomBytes(20_000))
		movable(fmt.Sprintf("proxy_ssl #%d", i))
		c.Close()
		waitFor(t, func() bool { return p.Stats().Active == 0 })
	}
	if n := up.Resumed.Load(); n != 1 {
		t.Fatalf("the TLS 1.2 upstream resumed %d sessions, want 1", n)
	}
}

// Sessions resume across servers that share an ssl_session_cache zone and
// serve the same certificates (nginx keeps ticket keys in the zone, and
// OpenSSL checks the session id context), not in one with other
// certificates, nor in one without the zone.
func TestTLSSessionIDContext(t *testing.T) {
	dir := t.TempDir()
	crt, key := selfSigned(t, dir, "a", "a.test")
	crt2, key2 := selfSigned(t, dir, "b", "b.test")
	a, same, other, nozone := deadAddr(t).String(), deadAddr(t).String(), deadAddr(t).String(), deadAddr(t).String()
	startConf(t, fmt.Sprintf(`stream {
    ssl_session_cache shared:ctxtest:1m;
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; return $ssl_session_reused; }
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; return $ssl_session_reused; }
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; return $ssl_session_reused; }
    server { listen %s ssl; ssl_certificate %s; ssl_certificate_key %s; ssl_session_cache none; return $ssl_session_reused; }
}`, a, crt, key, same, crt, key, other, crt2, key2, nozone, crt, key))
	for _, vers := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, tc := range []struct {
			addr, want string
		}{{a, "r"}, {same, "r"}, {other, "."}, {nozone, "."}} {
			cache := tls.NewLRUClientSessionCache(4)
			var got []string
			for _, addr := range []string{a, tc.addr} {
				b, _ := io.ReadAll(tlsDialConfig(t, addr, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, ClientSessionCache: cache, MaxVersion: vers}))
				got = append(got, string(b))
			}
			if got[0] != "." || got[1] != tc.want {
				t.Errorf("TLS %x, a session of the first server on %s: %q, want %q then %q", vers, tc.addr, got, ".", tc.want)
			}
		}
	}
}
