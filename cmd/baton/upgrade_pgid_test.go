package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pgidRig is a baton whose next new process stops itself after HELLO_OK
// (the fdpass test hook), so that a test can look at it mid-upgrade.
type pgidRig struct {
	p       *proc
	sock    string
	pidFile string
	token   string
}

func newPgidRig(t *testing.T) *pgidRig {
	t.Helper()
	dir := t.TempDir()
	r := &pgidRig{sock: filepath.Join(dir, "control.sock"), pidFile: filepath.Join(dir, "baton.pid"), token: filepath.Join(dir, "stop-at")}
	conf := writeFile(t, dir, "baton.conf", fmt.Sprintf(`
pid %s;
error_log stderr notice;
stream { server { listen %s; proxy_pass %s; } }
`, r.pidFile, freePort(t), echoServer(t)))
	t.Setenv(envTestStop, "file:"+r.token)
	r.p = startBaton(t, "run", "-c", conf, "--control-socket", r.sock)
	killPidFile(t, r.pidFile, r.p.cmd.Process.Pid)
	return r
}

// stoppedUpgrade starts "baton upgrade" with the hook armed and returns the
// new process, stopped, and the command's result to come.
func (r *pgidRig) stoppedUpgrade(t *testing.T) (int, <-chan upgradeResult) {
	t.Helper()
	if err := os.WriteFile(r.token, []byte("after-hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := make(chan upgradeResult, 1)
	cliDone := make(chan struct{})
	go func() {
		res <- runUpgrade(r.sock)
		close(cliDone)
	}()
	child := waitStoppedChild(t, r.p.cmd.Process.Pid, 15*time.Second, cliDone)
	killLater(t, openPid(t, child))
	return child, res
}

// killLater kills w's process when the test ends, through its pidfd (never
// another process that got its pid since).
func killLater(t *testing.T, w *pidWaiter) {
	t.Cleanup(func() { unix.PidfdSendSignal(w.fd, unix.SIGKILL, nil, 0) })
}

// A failed upgrade kills the new process's whole process group: here a
// child the new process started ("sleep 60", by a test hook) dies with it
// (issue 12). The next, successful, upgrade leaves its new process in the
// old one's group, as a terminal's Ctrl-C expects.
func TestFailedUpgradeKillsProcessGroup(t *testing.T) {
	spawned := filepath.Join(t.TempDir(), "spawned")
	t.Setenv(envTestUpgradeSpawn, spawned)
	r := newPgidRig(t)
	old := r.p.cmd.Process.Pid
	oldPgid, err := unix.Getpgid(old)
	if err != nil {
		t.Fatal(err)
	}
	child, res := r.stoppedUpgrade(t)
	childGone := openPid(t, child)
	// The hook wrote the file before the new process stopped.
	data, err := os.ReadFile(spawned)
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s: %q", spawned, data)
	}
	gone := openPid(t, grandchild)
	killLater(t, gone)
	if g, err := unix.Getpgid(child); err != nil || g != child {
		t.Errorf("the new process %d is in group %d (%v), want a group of its own", child, g, err)
	}
	if g, err := unix.Getpgid(grandchild); err != nil || g != child {
		t.Errorf("the new process's child %d is in group %d (%v), want the new process's %d", grandchild, g, err, child)
	}

	// The upgrade fails: the new process is killed, alone.
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var u upgradeResult
	select {
	case u = <-res:
	case <-time.After(30 * time.Second):
		t.Fatal("baton upgrade still running 30s after the new process was killed")
	}
	if u.err == nil {
		t.Fatalf("the upgrade succeeded with its new process killed: %s", u.out)
	}
	if !childGone.wait(10 * time.Second) {
		t.Fatalf("the killed new process %d is still there", child)
	}
	if !gone.wait(10 * time.Second) {
		t.Fatalf("the new process's child %d outlived the failed upgrade", grandchild)
	}

	// A successful upgrade: the new process ends up in the old one's group.
	oldGone := openPid(t, old)
	u = runUpgrade(r.sock)
	if u.err != nil || !u.reported {
		t.Fatalf("the upgrade after the failed one: %v\n%s", u.err, u.out)
	}
	if !eventually(10*time.Second, 5*time.Millisecond, func() bool {
		g, err := unix.Getpgid(u.newPid)
		return err == nil && g == oldPgid
	}) {
		g, err := unix.Getpgid(u.newPid)
		t.Fatalf("the new process %d is in group %d (%v), want the old process's %d", u.newPid, g, err, oldPgid)
	}
	if !oldGone.wait(15 * time.Second) {
		t.Fatalf("the old process %d still runs 15s after a successful upgrade", old)
	}
}

// TERM (or INT) during an upgrade kills the new process, in a group of its
// own until its handoff ends, with the old one: Ctrl-C used to reach both.
func TestTERMDuringUpgradeKillsNewProcess(t *testing.T) {
	r := newPgidRig(t)
	child, _ := r.stoppedUpgrade(t)
	childGone := openPid(t, child)
	r.p.cmd.Process.Signal(syscall.SIGTERM)
	if err := r.p.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if !childGone.wait(10 * time.Second) {
		t.Fatalf("the new process %d outlived the old one's SIGTERM", child)
	}
}
