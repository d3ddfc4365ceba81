package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/config"
)

// These tests run baton against real PROXY protocol peers, not only our own
// code: HAProxy in front of baton, and nginx behind it. They need Debian's
// haproxy, nginx and libnginx-mod-stream; CI installs them (.ci/run).

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing; .ci/run installs it", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// startProcess runs cmd until the test ends; it fails the test if the
// process has not listened on addr within 10s.
func startProcess(t *testing.T, cmd *exec.Cmd, addr string) {
	t.Helper()
	out := &logBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), out)
		}
	})
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited:\n%s", cmd.Path, out)
		case <-deadline:
			t.Fatalf("%s does not listen on %s:\n%s", cmd.Path, addr, out)
		case <-tick.C:
		}
	}
}

func freeAddr(t *testing.T) string { return deadAddr(t).String() }

func TestHAProxyInFrontOfBaton(t *testing.T) {
	haproxy := needTool(t, "haproxy")
	b := startBackend(t, "echo", echo)
	for _, send := range []string{"send-proxy", "send-proxy-v2"} {
		t.Run(send, func(t *testing.T) {
			cfg, logPath := ppConfig(t, b.addr(), "127.0.0.1/32")
			cfg.Stream.Servers[0].ProxyProtocolTimeout = 5 * time.Second
			_, batonAddr, _ := startProxy(t, cfg)
			front := freeAddr(t)
			dir := t.TempDir()
			conf := filepath.Join(dir, "haproxy.cfg")
			os.WriteFile(conf, []byte(fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind %s
    default_backend be
backend be
    server baton %s %s
`, front, batonAddr, send)), 0o644)
			startProcess(t, exec.Command(haproxy, "-db", "-f", conf), front)

			// The real client is 127.0.0.77; baton sees HAProxy's 127.0.0.1
			// but trusts its header.
			c, err := dialFromAddr(t, "127.0.0.77", front)
			if err != nil {
				t.Fatal(err)
			}
			clientPort := c.LocalAddr().(*net.TCPAddr).Port
			io.WriteString(c, "through haproxy")
			c.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(c)
			c.Close()
			if string(got) != "through haproxy" {
				t.Fatalf("echo %q", got)
			}
			// haproxy's own readiness probe shows up as a session too: find ours.
			data, _ := os.ReadFile(logPath)
			want := fmt.Sprintf("127.0.0.77:%d pp=127.0.0.77:%d real=127.0.0.1 200 15", clientPort, clientPort)
			if !strings.Contains(string(data), want) {
				t.Fatalf("access log lacks %q:\n%s", want, data)
			}
		})
	}
}

// needNginxStream returns nginx and its stream module, or skips the test
// (fails it under CI, which installs both).
func needNginxStream(t *testing.T) (nginx, module string) {
	nginx = needTool(t, "nginx")
	module = "/usr/lib/nginx/modules/ngx_stream_module.so"
	if _, err := os.Stat(module); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing; .ci/run installs libnginx-mod-stream", module)
		}
		t.Skip("libnginx-mod-stream is not installed")
	}
	return nginx, module
}

// startNginx runs nginx, in the foreground in a directory of its own until
// the test ends, with stream { streamBody }, once it listens on addr.
func startNginx(t *testing.T, addr, streamBody string) {
	nginx, module := needNginxStream(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`load_module %s;
daemon off;
master_process off;
pid %s/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
stream {%s}
`, module, dir, streamBody)), 0o644)
	startProcess(t, exec.Command(nginx, "-p", dir, "-c", conf, "-e", "stderr"), addr)
}

func TestBatonInFrontOfNginx(t *testing.T) {
	needNginxStream(t)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("proxy_protocol v%d", v), func(t *testing.T) {
			back := freeAddr(t)
			startNginx(t, back, fmt.Sprintf(`
    server {
        listen %s proxy_protocol;
        return "$proxy_protocol_addr:$proxy_protocol_port $remote_addr\n";
    }
`, back))

			_, addr, _ := startProxy(t, testConfig([]upstreamSpec{{addr: netip.MustParseAddrPort(back)}}, func(s *config.Server) {
				s.ProxyProtocol = v
			}))
			c, err := dialFromAddr(t, "127.0.0.88", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, _ := io.ReadAll(c)
			want := fmt.Sprintf("127.0.0.88:%d 127.0.0.1\n", c.LocalAddr().(*net.TCPAddr).Port)
			if string(got) != want {
				t.Fatalf("nginx saw %q, want %q", got, want)
			}
		})
	}
}
