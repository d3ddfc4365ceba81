package main

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/errlog"
	"golang.org/x/sys/unix"
)

// However many HUPs come while a reload runs, one more reload follows it.
func TestReloadQueueCoalesces(t *testing.T) {
	q := newReloadQueue()
	started := make(chan int)
	release := make(chan struct{})
	n := 0
	reload := func() (string, error) {
		n++
		started <- n
		<-release
		return "", nil
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		q.run(stop, reload, "baton.conf", errlog.NewWriter(io.Discard, errlog.LevelWarn))
		close(stopped)
	}()
	defer func() {
		close(stop)
		<-stopped
	}()
	next := func(want int) {
		t.Helper()
		select {
		case got := <-started:
			if got != want {
				t.Fatalf("reload %d started, want %d", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("reload %d did not start", want)
		}
	}
	q.request()
	next(1)
	for range 5 {
		q.request() // never blocks
	}
	if len(q.kick) != 1 {
		t.Fatalf("%d reloads asked for while one runs, want 1", len(q.kick))
	}
	release <- struct{}{}
	next(2)
	if len(q.kick) != 0 {
		t.Fatalf("%d more reloads asked for after the second started, want none", len(q.kick))
	}
	release <- struct{}{}
	q.request() // later HUPs reload again
	next(3)
	release <- struct{}{}
}

// heldReloadBaton starts baton with reloads held by the test hook (on a
// FIFO nobody writes), and holds one, asked for by SIGHUP or, with viaSocket,
// by "baton reload" (which then waits for its answer in the background).
func heldReloadBaton(t *testing.T, viaSocket bool) (p *proc, listen, fifo string) {
	t.Helper()
	dir := t.TempDir()
	fifo = filepath.Join(dir, "hold")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envTestHoldReload, fifo)
	a := greeter(t, "a")
	listen = freePort(t)
	sock := filepath.Join(dir, "control.sock")
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf(`
error_log stderr notice;
stream { server { listen %s; proxy_pass %s; } }
`, listen, a))
	p = startBaton(t, "run", "-c", conf, "--control-socket", sock)
	if viaSocket {
		cli := batonCmd("reload", "--control-socket", sock)
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		cliDone := make(chan struct{})
		go func() {
			cli.Wait()
			close(cliDone)
		}()
		t.Cleanup(func() {
			cli.Process.Kill()
			<-cliDone
		})
	} else {
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	p.stderr.waitFor(t, "holds a reload")
	return p, listen, fifo
}

// releaseReload lets the held reload go on: it opens the FIFO for writing,
// which succeeds (without blocking) only once the hook has it open for
// reading.
func releaseReload(t *testing.T, fifo string) {
	t.Helper()
	ok := eventually(10*time.Second, 5*time.Millisecond, func() bool {
		fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return false // ENXIO: no reader yet
		}
		unix.Close(fd)
		return true
	})
	if !ok {
		t.Fatal("the held reload never opened the FIFO")
	}
}

// A reload runs beside the signal loop (issue 12): while one is held,
// SIGTERM ends baton at once, SIGQUIT starts the graceful stop, SIGUSR1
// reopens the logs, and the HUPs that come meanwhile make one more reload.
func TestSignalsDuringReload(t *testing.T) {
	for _, viaSocket := range []bool{false, true} {
		name := "TERM"
		if viaSocket {
			name = "TERM during baton reload"
		}
		t.Run(name, func(t *testing.T) {
			p, listen, _ := heldReloadBaton(t, viaSocket)
			c, r, _ := dialLine(t, listen)
			defer c.Close()
			termEndsAll(t, p, r)
		})
	}
	t.Run("QUIT", func(t *testing.T) {
		p, listen, _ := heldReloadBaton(t, false)
		c, r, _ := dialLine(t, listen)
		defer c.Close()
		p.cmd.Process.Signal(syscall.SIGQUIT)
		refused := eventually(5*time.Second, 5*time.Millisecond, func() bool {
			nc, err := net.DialTimeout("tcp", listen, time.Second)
			if err != nil {
				return true
			}
			nc.Close()
			return false
		})
		if !refused {
			t.Fatal("still accepting 5s after SIGQUIT")
		}
		fmt.Fprintln(c, "still here")
		if line, err := r.ReadString('\n'); err != nil || line != "a: still here\n" {
			t.Fatalf("live connection after SIGQUIT: %q %v", line, err)
		}
		c.Close()
		if err := p.wait(t, 10*time.Second); err != nil {
			t.Fatalf("exit: %v", err)
		}
	})
	t.Run("HUP and USR1", func(t *testing.T) {
		p, _, fifo := heldReloadBaton(t, false)
		for i := 1; i <= 3; i++ {
			// USR1 after HUP: once the logs are reopened, the loop has
			// handled the HUP too (a lower signal number is delivered first).
			p.cmd.Process.Signal(syscall.SIGHUP)
			p.cmd.Process.Signal(syscall.SIGUSR1)
			eventuallyCount(t, p, "reopened log files", i)
		}
		releaseReload(t, fifo)
		eventuallyCount(t, p, "holds a reload", 2) // the three HUPs made one
		releaseReload(t, fifo)
		eventuallyCount(t, p, "reloaded ", 2)
		p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.wait(t, 5*time.Second); err != nil {
			t.Fatalf("exit: %v", err)
		}
		if n := strings.Count(p.stderr.String(), "holds a reload"); n != 2 {
			t.Fatalf("%d reloads, want 2: one, and one for the three HUPs that came during it", n)
		}
	})
}

// eventuallyCount waits (at most 10s) until sub occurs at least n times in
// baton's stderr.
func eventuallyCount(t *testing.T, p *proc, sub string, n int) {
	t.Helper()
	if !eventually(10*time.Second, 5*time.Millisecond, func() bool { return strings.Count(p.stderr.String(), sub) >= n }) {
		t.Fatalf("%q not seen %d times in 10s", sub, n)
	}
}
