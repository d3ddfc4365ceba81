package fdpass

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const handoffHelperEnv = "GO_WANT_HANDOFF_HELPER"

// TestUpgradeAcrossProcesses runs Upgrade here and Takeover in a re-exec of
// the test binary (socketpair end as ExtraFiles fd 3, as cmd does). One TCP
// flow moves with bytes pending in user space both ways (in State) and more
// queued in the kernel; both ends must see every byte once, in order.
func TestUpgradeAcrossProcesses(t *testing.T) {
	if os.Getenv(handoffHelperEnv) == "1" {
		handoffChild()
		return
	}
	w := newWorld(t, 1)
	defer w.close()
	f := w.addFlow(42, 0)
	// The proxy has read these into user space: they travel in State.
	read := func(c *net.TCPConn, s string) []byte {
		buf := make([]byte, len(s))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != s {
			t.Fatalf("proxy read %q, %v; want %q", buf, err, s)
		}
		return buf
	}
	f.client.Write([]byte("c2u-pending|"))
	f.upstream.Write([]byte("u2c-pending|"))
	var e Encoder
	e.Bytes(read(f.proxyC, "c2u-pending|"))
	e.Bytes(read(f.proxyU, "u2c-pending|"))
	f.state, _ = e.Body()
	// These stay queued in the kernel, in the very sockets that move.
	f.client.Write([]byte("c2u-queued|"))
	f.upstream.Write([]byte("u2c-queued|"))

	parent, childEnd, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	pidFile := filepath.Join(t.TempDir(), "baton.pid")
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^TestUpgradeAcrossProcesses$", "-test.v")
	cmd.Env = append(os.Environ(), handoffHelperEnv+"=1", EnvHandoffFD+"=3", "PIDFILE="+pidFile)
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close() // P17
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	timer := time.AfterFunc(20*time.Second, func() {
		cmd.Process.Kill()
		parent.Close()
		f.client.Close()
		f.upstream.Close()
	})
	defer timer.Stop()
	output := func() string { cmd.Process.Kill(); <-exited; return out.String() }

	src := &fakeSource{w: w}
	rep, err := Upgrade(parent, src, UpgradeOptions{
		Generation: 7, ChildExited: exited, Kill: func() { cmd.Process.Kill() },
	})
	if err != nil {
		t.Fatalf("Upgrade: %v\nchild output:\n%s", err, output())
	}
	if want := (Report{NewPID: cmd.Process.Pid, Moved: 1}); rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	if b, err := os.ReadFile(pidFile); err != nil || string(b) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("pid file %q, %v; want the child's pid before DONE_OK", b, err)
	}

	expect := func(c *net.TCPConn, want string) {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
			t.Fatalf("read %q, %v; want %q\nchild output:\n%s", buf, err, want, output())
		}
	}
	expect(f.upstream, "c2u-pending|c2u-queued|")
	expect(f.client, "u2c-pending|u2c-queued|")
	f.client.Write([]byte("after"))
	expect(f.upstream, "after")
	f.upstream.Write([]byte("back"))
	expect(f.client, "back")

	// The child serves on; it exits when both ends close and this side
	// of the channel is gone (as when the old process exits).
	f.client.Close()
	f.upstream.Close()
	parent.Close()
	<-exited
	if waitErr != nil {
		t.Fatalf("child: %v\n%s", waitErr, out.String())
	}
}

// handoffChild is the child side of TestUpgradeAcrossProcesses.
func handoffChild() {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		os.Exit(1)
	}
	time.AfterFunc(20*time.Second, func() { fail("timed out") })
	c, err := AdoptEnv()
	if err != nil || c == nil {
		fail("AdoptEnv: %v, %v", c, err)
	}
	sink := &execSink{conns: map[uint64][2]net.Conn{}, states: map[uint64][]byte{}}
	err = Takeover(c, sink, TakeoverOptions{Build: "exec-test", Done: func() error {
		return os.WriteFile(os.Getenv("PIDFILE"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}})
	if err != nil {
		fail("Takeover: %v", err)
	}
	sink.wg.Wait()
	if _, _, err := Receive(c); err != io.EOF {
		fail("after DONE_OK: %v, want EOF", err)
	}
	c.Close()
	for _, ln := range sink.listeners {
		ln.Close()
	}
	os.Exit(0)
}

// execSink proxies moved flows with the pending bytes first, then io.Copy.
type execSink struct {
	listeners []net.Listener
	conns     map[uint64][2]net.Conn
	states    map[uint64][]byte
	wg        sync.WaitGroup
}

func (s *execSink) AdoptListeners(files []NamedFile) ([]string, error) {
	var names []string
	for _, nf := range files {
		ln, err := net.FileListener(nf.File)
		nf.File.Close()
		if err != nil {
			return nil, err
		}
		s.listeners = append(s.listeners, ln)
		names = append(names, nf.Name)
	}
	return names, nil
}

func (s *execSink) Import(conns []Conn) ([]uint64, map[uint64]string) {
	var ok []uint64
	rejected := map[uint64]string{}
	for _, c := range conns {
		var pair [2]net.Conn
		var err error
		for i, f := range c.Files {
			if err == nil {
				err = Check(f, TCPConn, "")
			}
			if err == nil {
				pair[i], err = net.FileConn(f)
			}
			f.Close()
		}
		if err != nil {
			rejected[c.ID] = err.Error()
			continue
		}
		s.conns[c.ID], s.states[c.ID] = pair, c.State
		ok = append(ok, c.ID)
	}
	return ok, rejected
}

func (s *execSink) Start(ids []uint64) {
	for _, id := range ids {
		client, up := s.conns[id][0].(*net.TCPConn), s.conns[id][1].(*net.TCPConn)
		d := NewDecoder(s.states[id], 0)
		c2u, u2c := d.Bytes(), d.Bytes()
		s.wg.Add(2)
		half := func(dst, src *net.TCPConn, pend []byte) {
			defer s.wg.Done()
			dst.Write(pend)
			io.Copy(dst, src)
			dst.CloseWrite()
		}
		go half(up, client, c2u)
		go half(client, up, u2c)
	}
}
