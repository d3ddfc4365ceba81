package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/dnstest"
	"github.com/batonproxy/baton/internal/testutil"
)

// echoServer echoes on 127.0.0.1:0 until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, ln, func(c net.Conn) { io.Copy(c, c); c.Close() })
	return ln.Addr().String()
}

// exited reports whether pid is gone (or a zombie nobody reaps here).
func exited(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func waitExited(t *testing.T, pid int) {
	t.Helper()
	if !eventually(15*time.Second, 10*time.Millisecond, func() bool { return exited(pid) }) {
		t.Fatalf("old process %d still running 15s after its upgrade", pid)
	}
}

var upgradeLine = regexp.MustCompile(`new pid (\d+): moved (\d+) connections, resumed (\d+) in the old process, lost (\d+)`)

// upgradable starts baton with stream (an nginx stream block), a pid file
// and a control socket of its own, as an upgrade needs.
func upgradable(t *testing.T, stream string) (p *proc, sock, pidFile string) {
	t.Helper()
	dir := t.TempDir()
	sock = filepath.Join(dir, "control.sock")
	pidFile = filepath.Join(dir, "baton.pid")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf("pid %s;\nbaton { control_socket %s; }\n%s\n", pidFile, sock, stream))
	return startBaton(t, "run", "-c", conf, "--control-socket", sock), sock, pidFile
}

func TestUpgradeUnderLoad(t *testing.T) {
	backend := echoServer(t)
	listen := freePort(t)
	p, sock, pidFile := upgradable(t, fmt.Sprintf("stream { server { listen %s; proxy_pass %s; } }", listen, backend))
	pids := []int{p.cmd.Process.Pid}
	t.Cleanup(func() { // the last generation is not our child: end it by PID
		if data, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid != p.cmd.Process.Pid {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})

	// Streaming connections: each round trip checked byte for byte.
	const streams, idle = 200, 50
	stop := make(chan struct{})
	errs := make(chan error, streams)
	var rounds atomic.Int64
	for i := 0; i < streams; i++ {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func(i int) {
			buf := make([]byte, 1024)
			got := make([]byte, 1024)
			for n := 0; n < 1_000_000; n++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				for j := range buf {
					buf[j] = byte(i + n + j)
				}
				if _, err := c.Write(buf); err != nil {
					errs <- fmt.Errorf("stream %d round %d: %w", i, n, err)
					return
				}
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- fmt.Errorf("stream %d round %d: %w", i, n, err)
					return
				}
				if !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("stream %d round %d: bytes differ", i, n)
					return
				}
				rounds.Add(1)
			}
			errs <- nil
		}(i)
	}
	var idleConns []net.Conn
	for i := 0; i < idle; i++ {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(c, "idle %d\n", i)
		if _, err := io.ReadFull(c, make([]byte, len(fmt.Sprintf("idle %d\n", i)))); err != nil {
			t.Fatal(err)
		}
		idleConns = append(idleConns, c)
	}
	// New connections throughout: none may be refused.
	var refused, dialled atomic.Int64
	dialStop := make(chan struct{})
	dialDone := make(chan struct{})
	go func() {
		defer close(dialDone)
		for n := 0; n < 1_000_000; n++ {
			select {
			case <-dialStop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", listen, 5*time.Second)
			dialled.Add(1)
			if err != nil {
				refused.Add(1)
				continue
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("x"))
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				refused.Add(1)
			}
			c.Close()
		}
	}()

	for gen := 1; gen <= 3; gen++ {
		start := time.Now()
		out, err := batonCmd("upgrade", "--control-socket", sock).CombinedOutput()
		if err != nil {
			t.Fatalf("upgrade %d: %v\n%s", gen, err, out)
		}
		m := upgradeLine.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("upgrade %d printed %q", gen, out)
		}
		newPid, _ := strconv.Atoi(m[1])
		moved, _ := strconv.Atoi(m[2])
		lost, _ := strconv.Atoi(m[4])
		t.Logf("upgrade %d to pid %d in %s: moved %d, resumed %s, lost %d", gen, newPid, time.Since(start).Round(time.Millisecond), moved, m[3], lost)
		if moved < streams+idle || lost != 0 {
			t.Fatalf("upgrade %d moved %d (want at least %d) and lost %d", gen, moved, streams+idle, lost)
		}
		waitExited(t, pids[len(pids)-1])
		if data, _ := os.ReadFile(pidFile); strings.TrimSpace(string(data)) != m[1] {
			t.Fatalf("pid file says %q after upgrade %d, want %s", data, gen, m[1])
		}
		pids = append(pids, newPid)
	}
	// The streams still round-trip after the last upgrade.
	before := rounds.Load()
	if !eventually(20*time.Second, time.Millisecond, func() bool { return rounds.Load() >= before+streams }) {
		t.Fatalf("the streams stopped after the upgrades (%d round trips)", rounds.Load())
	}
	close(dialStop)
	<-dialDone
	close(stop)
	for i := 0; i < streams; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i, c := range idleConns {
		fmt.Fprintf(c, "still %d\n", i)
		want := fmt.Sprintf("still %d\n", i)
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Errorf("idle connection %d after 3 upgrades: %q %v", i, got, err)
		}
	}
	if refused.Load() > 0 {
		t.Errorf("%d of %d new connections failed during the upgrades", refused.Load(), dialled.Load())
	}
	t.Logf("%d round trips, %d new connections, across 3 upgrades", rounds.Load(), dialled.Load())
}

// A failed upgrade changes nothing: the old process keeps serving, and a
// later upgrade works.
func TestFailedUpgradeKeepsServing(t *testing.T) {
	backend := echoServer(t)
	listen := freePort(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf("stream { server { listen %s; proxy_pass %s; } }\n", listen, backend))
	p := startBaton(t, "run", "-c", conf, "--control-socket", sock)
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	for _, bad := range []string{"/bin/false", filepath.Join(dir, "no-such-binary")} {
		out, err := batonCmd("upgrade", "--control-socket", sock, "--binary", bad).CombinedOutput()
		if err == nil {
			t.Fatalf("upgrade to %s succeeded:\n%s", bad, out)
		}
		fmt.Fprintln(c, "after "+bad)
		want := "after " + bad + "\n"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("after a failed upgrade (%s): %q %v\n%s", bad, got, err, out)
		}
	}
	if exited(p.cmd.Process.Pid) {
		t.Fatal("the old process exited after a failed upgrade")
	}
}

// systemd (Type=notify, NotifyAccess=all) hears READY from baton, and after
// an upgrade MAINPID from the new process.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	nsock := filepath.Join(dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", nsock)
	read := func() string {
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	backend := echoServer(t)
	listen := freePort(t)
	sock := filepath.Join(dir, "control.sock")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf("stream { server { listen %s; proxy_pass %s; } }\n", listen, backend))
	p := startBaton(t, "run", "-c", conf, "--control-socket", sock)
	if got, want := read(), fmt.Sprintf("MAINPID=%d\nREADY=1", p.cmd.Process.Pid); got != want {
		t.Fatalf("first notification %q, want %q", got, want)
	}
	out, err := batonCmd("upgrade", "--control-socket", sock).CombinedOutput()
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	m := upgradeLine.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("upgrade printed %q", out)
	}
	if got, want := read(), "MAINPID="+m[1]+"\nREADY=1"; got != want {
		t.Fatalf("after the upgrade %q, want %q", got, want)
	}
	t.Cleanup(func() {
		if pid, err := strconv.Atoi(m[1]); err == nil {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	})
}

// Sessions routed by their ClientHello (ssl_preread, a map, proxy_pass
// $var) and one still in its preread phase move in "baton upgrade" with
// what routing gave them, between two real processes.
func TestUpgradeRoutedSessions(t *testing.T) {
	backend := echoServer(t)
	listen := freePort(t)
	p, sock, pidFile := upgradable(t, fmt.Sprintf(`stream {
    upstream echo { server %s; }
    map $ssl_preread_server_name $to { db.example.com echo; default 127.0.0.1:1; }
    server { listen %s; ssl_preread on; proxy_pass $to; }
}`, backend, listen))
	killPidFile(t, pidFile, p.cmd.Process.Pid)
	a, c := net.Pipe()
	go tls.Client(a, &tls.Config{ServerName: "db.example.com", InsecureSkipVerify: true}).Handshake()
	hb := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(hb)
	if err != nil {
		t.Fatal(err)
	}
	hello := hb[:n]
	a.Close()
	c.Close()

	const routed = 20
	var conns []net.Conn
	for i := 0; i < routed; i++ {
		conn, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		conn.Write(hello)
		if _, err := io.ReadFull(conn, make([]byte, len(hello))); err != nil {
			t.Fatalf("session %d before the upgrade: %v", i, err)
		}
		conns = append(conns, conn)
	}
	// One more stops half way through its hello: it moves in preread.
	half, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.SetDeadline(time.Now().Add(30 * time.Second))
	half.Write(hello[:len(hello)/2])

	r := runUpgrade(sock)
	t.Logf("upgrade: %s", r.out)
	if r.err != nil || !r.reported || r.moved < routed+1 || r.lost != 0 {
		t.Fatalf("upgrade: %+v", r)
	}
	waitExited(t, p.cmd.Process.Pid) // the new process holds its stderr pipe: not p.wait
	for i, conn := range conns {
		msg := fmt.Sprintf("after %d\n", i)
		io.WriteString(conn, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
			t.Fatalf("session %d after the upgrade: %q %v", i, got, err)
		}
	}
	half.Write(hello[len(hello)/2:])
	if _, err := io.ReadFull(half, make([]byte, len(hello))); err != nil {
		t.Fatalf("the preread session after the upgrade: %v", err)
	}
}

// An upstream whose server is resolved at run time goes on through an
// upgrade: the live sessions move, and the new process has the name's
// addresses before it takes its first connection.
func TestUpgradeResolvedUpstream(t *testing.T) {
	backend := echoServer(t)
	host, port, _ := net.SplitHostPort(backend)
	d := dnstest.Start(t)
	d.SetA("backend.test", 1, host)
	listen := freePort(t)
	p, sock, pidFile := upgradable(t, fmt.Sprintf(`stream {
    resolver %s valid=1s;
    upstream u { zone z 1m; server backend.test:%s resolve; }
    server { listen %s; proxy_pass u; }
}`, d.Addr(), port, listen))
	killPidFile(t, pidFile, p.cmd.Process.Pid)
	echoOnce := func(conn net.Conn, msg string) error {
		if _, err := io.WriteString(conn, msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echoed %q, want %q", got, msg)
		}
		return nil
	}
	var conns []net.Conn
	for i := range 20 {
		conn, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if err := echoOnce(conn, fmt.Sprintf("before %d\n", i)); err != nil {
			t.Fatalf("session %d before the upgrade: %v", i, err)
		}
		conns = append(conns, conn)
	}
	r := runUpgrade(sock)
	t.Logf("upgrade: %s", r.out)
	if r.err != nil || !r.reported || r.moved < len(conns) || r.lost != 0 {
		t.Fatalf("upgrade: %+v", r)
	}
	waitExited(t, p.cmd.Process.Pid)
	for i, conn := range conns {
		if err := echoOnce(conn, fmt.Sprintf("after %d\n", i)); err != nil {
			t.Fatalf("session %d after the upgrade: %v", i, err)
		}
	}
	conn, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := echoOnce(conn, "new\n"); err != nil {
		t.Fatalf("a new session after the upgrade: %v", err)
	}
}
