package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testutil"
)

// The test binary doubles as baton: run with BATON_TEST_MAIN=1 it is main().
// The end-to-end tests below start it as a real process.
func TestMain(m *testing.M) {
	if os.Getenv("BATON_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// batonCmd returns a command that runs baton with args.
func batonCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "BATON_TEST_MAIN=1")
	return cmd
}

// syncBuf is a goroutine-safe buffer for a child's stderr.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

// waitFor waits (at most 10s) until the buffer contains sub.
func (s *syncBuf) waitFor(t *testing.T, sub string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), sub) {
			s.mu.Unlock()
			return
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no %q in baton's output after 10s", sub)
		}
	}
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running baton.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	exited chan error
}

// startBaton runs baton with args and waits for its "ready on" line.
func startBaton(t *testing.T, args ...string) *proc {
	t.Helper()
	// Keep every test's control socket in its own directory, never /run/baton.
	hasSocket, hasFile := false, false
	for _, a := range args {
		hasSocket = hasSocket || a == "--control-socket"
		hasFile = hasFile || a == "-c"
	}
	if hasFile && !hasSocket {
		args = append(args, "--control-socket", filepath.Join(t.TempDir(), "control.sock"))
	}
	cmd := batonCmd(args...)
	pr, pw := io.Pipe()
	buf := &syncBuf{}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: buf, exited: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			buf.Write(append(sc.Bytes(), '\n'))
			if strings.Contains(sc.Text(), "ready on") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		p.exited <- err
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
		}
		if t.Failed() {
			t.Logf("baton stderr:\n%s", buf)
		}
	})
	select {
	case <-ready:
	case err := <-p.exited:
		t.Fatalf("baton exited before it was ready: %v\n%s", err, buf)
	case <-time.After(10 * time.Second):
		t.Fatalf("baton not ready after 10s:\n%s", buf)
	}
	return p
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		return err
	case <-time.After(within):
		t.Fatalf("baton still running after %s", within)
		return nil
	}
}

// freePort returns a loopback address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ap, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return ap.String()
}

// greeter listens on 127.0.0.1:0, greets each client with name and echoes lines.
func greeter(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveGreeter(ln, name)
	return ln.Addr().String()
}

func dialLine(t *testing.T, addr string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("reading greeting: %v", err)
	}
	return c, r, strings.TrimSpace(line)
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestQuickModeRoundRobin(t *testing.T) {
	a, b := greeter(t, "a"), greeter(t, "b")
	listen := freePort(t)
	startBaton(t, "run", "--listen", listen, "--upstream", a, "--upstream", b)
	var got []string
	for i := 0; i < 4; i++ {
		c, _, line := dialLine(t, listen)
		c.Close()
		got = append(got, line)
	}
	if want := "hello from a,hello from b,hello from a,hello from b"; strings.Join(got, ",") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestDemo(t *testing.T) {
	listen := freePort(t)
	startBaton(t, "demo", "--listen", listen, "--backend-port", "0")
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		c, r, line := dialLine(t, listen)
		fmt.Fprintln(c, "ping")
		echo, err := r.ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		seen[line] = true
		if !strings.HasSuffix(strings.TrimSpace(echo), ": ping") {
			t.Fatalf("echo %q", echo)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("three connections reached %v, want the three backends", seen)
	}
}

func TestGracefulStopOnQUIT(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	p := startBaton(t, "run", "--listen", listen, "--upstream", a)
	c, r, _ := dialLine(t, listen)
	defer c.Close()
	p.cmd.Process.Signal(syscall.SIGQUIT)
	// New connections are refused once baton stops accepting.
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after SIGQUIT")
		}
	}
	// The live connection keeps working.
	fmt.Fprintln(c, "still here")
	if line, err := r.ReadString('\n'); err != nil || line != "a: still here\n" {
		t.Fatalf("live connection after SIGQUIT: %q %v", line, err)
	}
	select {
	case err := <-p.exited:
		t.Fatalf("baton exited (%v) with a connection live", err)
	default:
	}
	c.Close()
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

func TestShutdownTimeoutBoundsQUIT(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	dir := t.TempDir()
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf(`
worker_shutdown_timeout 300ms;
stream { server { listen %s; proxy_pass %s; } }
`, listen, a))
	p := startBaton(t, "run", "-c", conf)
	c, r, _ := dialLine(t, listen)
	defer c.Close()
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGQUIT)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("exited after %s, before worker_shutdown_timeout", el)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after baton exited")
	}
}

func TestTERMStopsAtOnce(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	p := startBaton(t, "run", "--listen", listen, "--upstream", a)
	c, r, _ := dialLine(t, listen)
	defer c.Close()
	termEndsAll(t, p, r)
}

// termEndsAll sends p SIGTERM and checks that it exits within 5 s and
// that the connection read through r is closed.
func termEndsAll(t *testing.T, p *proc, r *bufio.Reader) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 5*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after SIGTERM")
	}
}

func TestPidFileAndLogReopen(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	dir := t.TempDir()
	pidPath := filepath.Join(dir, "baton.pid")
	logPath := filepath.Join(dir, "access.log")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf(`
pid %s;
error_log stderr notice;
stream {
    log_format short '$remote_addr $status $upstream_addr';
    server { listen %s; proxy_pass %s; access_log %s short; }
}
`, pidPath, listen, a, logPath))
	p := startBaton(t, "run", "-c", conf)
	data, err := os.ReadFile(pidPath)
	if err != nil || strings.TrimSpace(string(data)) != fmt.Sprint(p.cmd.Process.Pid) {
		t.Fatalf("pid file: %q %v, want %d", data, err, p.cmd.Process.Pid)
	}
	want := "127.0.0.1 200 " + a + "\n"
	oneSession(t, listen)
	checkFile(t, logPath, want)

	// logrotate: move the file away, USR1, and the next line goes to a new file.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGUSR1)
	p.stderr.waitFor(t, "reopened log files")
	oneSession(t, listen)
	checkFile(t, logPath, want)
	checkFile(t, logPath+".1", want)

	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t, 5*time.Second)
	if _, err := os.Stat(pidPath); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind after exit: %v", err)
	}
}

// oneSession runs one session to its end: the client half-closes, so the
// session ends (proxy_half_close off) and baton writes its access-log line
// before it closes the client's socket, which the client then sees.
func oneSession(t *testing.T, addr string) {
	t.Helper()
	c, _, _ := dialLine(t, addr)
	defer c.Close()
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil || string(data) != want {
		t.Fatalf("%s: %q %v, want %q", path, data, err, want)
	}
}

// At the file limit accept backs off and logs; once descriptors are free
// again, connections are served. baton keeps part of the limit for itself
// (here half: 48 is smaller than its reserve), so it is its budget, not
// EMFILE, that stops accepting: a session's upstream socket is counted
// from accept, and every connection that is accepted is served.
func TestAcceptBacksOffAtFileLimit(t *testing.T) {
	a := greeter(t, "a")
	listen := freePort(t)
	dir := t.TempDir()
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf(`
worker_rlimit_nofile 48;
stream { server { listen %s backlog=256; proxy_pass %s; } }
`, listen, a))
	p := startBaton(t, "run", "-c", conf)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 40; i++ { // more sessions than 48 descriptors allow
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	p.stderr.waitFor(t, "the open file limit (48, of which 24 are kept for baton itself) is reached")
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if line = strings.TrimSpace(line); line != "hello from a" {
		t.Fatalf("after the file limit, a new connection read %q", line)
	}
	if strings.Contains(p.stderr.String(), "Too many open files") {
		t.Errorf("baton met EMFILE:\n%s", p.stderr.String())
	}
}

// A unix: listener's socket file goes when baton exits, as nginx's.
func TestUnixSocketFileRemovedAtExit(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "in.sock")
	conf := writeFile(t, dir, "u.conf", "stream { server { listen unix:"+sockPath+"; return hi; } }\n")
	p := startBaton(t, "run", "-c", conf)
	c, err := net.Dial("unix", sockPath)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hi" {
		t.Fatalf("got %q", b)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sockPath); !os.IsNotExist(err) {
		t.Errorf("socket file left after exit: %v", err)
	}
}
