package control

// Control socket tests that re-run this test binary as another process:
// an impostor under another uid, and a server out of descriptors.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/internal/testutil"
	"golang.org/x/sys/unix"
)

// Issue 12: root's "baton reload" talked to a socket another user had put at
// the path, and printed its answer. Call checks who serves the socket
// (SO_PEERCRED) before it sends anything. The impostor is this test binary
// re-run as uid 65534 (as TestPassFD), so the test needs root.
func TestCallRefusesImpostor(t *testing.T) {
	if os.Getenv("BATON_IMPOSTOR_SOCKET") != "" {
		impostor(os.Getenv("BATON_IMPOSTOR_SOCKET"))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run an impostor as uid 65534")
	}
	const nobody = 65534
	// A copy of this binary that nobody may run, in a directory it may
	// enter, and a directory of its own for the socket.
	pub, bin := testutil.PublicCopyOfTest(t, "control.test")
	dir := filepath.Join(pub, "theirs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "control.sock")

	cmd := exec.Command(bin, "-test.run=^TestCallRefusesImpostor$")
	cmd.Env = append(os.Environ(), "BATON_IMPOSTOR_SOCKET="+sock)
	cmd.Dir = pub
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() }) // a hang becomes a failure
	defer kill.Stop()
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		t.Helper()
		for l := range lines {
			if strings.HasPrefix(l, "impostor: ") {
				return strings.TrimPrefix(l, "impostor: ")
			}
		}
		t.Fatal("the impostor ended without a word")
		return ""
	}
	if l := next(); l != "listening" {
		t.Fatalf("impostor: %s", l)
	}

	r, err := Call(sock, Request{Cmd: "reload"}, 5*time.Second)
	if err == nil {
		t.Errorf("Call took the impostor's answer: %+v", r)
	} else if want := "control socket " + sock + " is served by uid 65534"; !strings.Contains(err.Error(), want) {
		t.Errorf("Call: %v; want %q", err, want)
	}
	if l := next(); l != `received ""` {
		t.Errorf("the impostor %s; want nothing", l)
	}
	for range lines { // to EOF, then reap
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("impostor: %v", err)
	}
}

// impostor listens on path as whoever runs it, answers the first client as
// baton would, and prints what that client sent.
func impostor(path string) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		fmt.Println("impostor: listen:", err)
		return
	}
	defer ln.Close()
	fmt.Println("impostor: listening")
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.AcceptUnix()
	if err != nil {
		fmt.Println("impostor: accept:", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, `{"ok":true,"report":"listeners kept: all (the impostor)"}`+"\n")
	// Until the client closes: a client that closes with the answer unread
	// resets the connection, which ends the read as well.
	got, _ := io.ReadAll(c)
	fmt.Printf("impostor: received %q\n", got)
}

// Issue 12: at the file limit the control socket's accept loop logged an
// alert on every 100 ms back-off, without end. Now at most one line a
// second, which counts the failures it did not log. The starved process is
// this test binary re-run (as TestPassFD) with its descriptors used up.
func TestAcceptAlertRateLimited(t *testing.T) {
	if path := os.Getenv("BATON_CONTROL_STARVED"); path != "" {
		starvedControl(path)
		return
	}
	sock := filepath.Join(t.TempDir(), "control.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptAlertRateLimited$")
	cmd.Env = append(os.Environ(), "BATON_CONTROL_STARVED="+sock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() }) // a hang becomes a failure
	defer kill.Stop()
	type line struct {
		text string
		at   time.Time
	}
	scan := func(r io.Reader, into chan<- line) {
		defer close(into)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			into <- line{sc.Text(), time.Now()}
		}
	}
	outc, errc := make(chan line, 64), make(chan line, 1024)
	go scan(stdout, outc)
	go scan(stderr, errc)
	var log []string
	defer func() {
		if t.Failed() {
			t.Logf("the starved process's log:\n%s", strings.Join(log, "\n"))
		}
	}()
	// next returns the next line on ch that contains sub.
	next := func(ch <-chan line, sub string) line {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-ch:
				if !ok {
					t.Fatalf("the starved process ended before %q", sub)
				}
				if ch == errc {
					log = append(log, l.text)
				}
				if strings.Contains(l.text, sub) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q within 10s", sub)
			}
		}
	}
	next(outc, "starved: exhausted")

	// A client waits in the backlog; each accept fails with EMFILE.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var alerts []line
	for len(alerts) < 3 {
		alerts = append(alerts, next(errc, "control socket accept: "))
	}
	for _, a := range alerts {
		t.Logf("+%s %s", a.at.Sub(alerts[0].at).Round(time.Millisecond), a.text)
	}
	if !strings.Contains(alerts[0].text, "too many open files") {
		t.Errorf("first alert: %s", alerts[0].text)
	}
	if gap := alerts[2].at.Sub(alerts[0].at); gap < 1500*time.Millisecond {
		t.Errorf("3 accept alerts within %s; want at most one a second", gap)
	}
	for _, a := range alerts[1:] {
		if !strings.Contains(a.text, "times since the last line)") {
			t.Errorf("an alert after the first does not count the failures it stands for: %s", a.text)
		}
	}

	// Descriptors free again: the waiting client is served.
	io.WriteString(stdin, "free\n")
	next(outc, "starved: freed")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, `{"cmd":"status"}`+"\n")
	var r Reply
	if err := json.NewDecoder(c).Decode(&r); err != nil || !r.OK || len(r.Status) == 0 {
		t.Errorf("status after the descriptors came back: %+v %v", r, err)
	}
	stdin.Close()
	for range outc {
	}
	for l := range errc {
		log = append(log, l.text)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("starved process: %v", err)
	}
}

// starvedControl serves a control socket at path, uses up its descriptors,
// says so, and on "free" on stdin frees them; it returns at stdin's end.
func starvedControl(path string) {
	ctl, err := Serve(path, testHandlers, errlog.NewWriter(os.Stderr, errlog.LevelInfo))
	if err != nil {
		fmt.Println("starved:", err)
		return
	}
	defer ctl.Close()
	in := bufio.NewReader(os.Stdin)
	lim := unix.Rlimit{Cur: 64, Max: 64}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("starved: setrlimit:", err)
		return
	}
	var files []*os.File
	for i := 0; i < 64; i++ {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		files = append(files, f)
	}
	fmt.Println("starved: exhausted")
	in.ReadString('\n')
	for _, f := range files {
		f.Close()
	}
	fmt.Println("starved: freed")
	io.Copy(io.Discard, in)
}
