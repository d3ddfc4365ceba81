package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/control"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// envGen carries the upgrade generation to the new process.
const envGen = "BATON_GEN"

// envPgid carries the old process's process group to the new one, which
// joins it once its handoff has ended (rejoinGroup).
const envPgid = "BATON_UPGRADE_PGID"

// generation is this process's place in a chain of upgrades.
func generation() int {
	g, _ := strconv.Atoi(os.Getenv(envGen))
	return g
}

// upgrader is the old process's side of "baton upgrade": one at a time.
type upgrader struct {
	timeout time.Duration // baton { upgrade_timeout }
	p       *proxy.Proxy
	log     *errlog.Logger
	failed  func() // after a failed upgrade: take the PID file back
	inbound bool   // this process's own handoff (as the new process) is still running
	mu      sync.Mutex
	done    chan struct{} // closed after a successful upgrade: this process exits
	once    sync.Once

	childMu   sync.Mutex
	childPgid int // the new process's group while an upgrade runs, else 0
}

// run starts binary ("": this executable) with the same arguments and the
// handoff socket as fd 3, and hands everything over. On failure the old
// process keeps serving (the protocol rolls back); on success done closes.
func (u *upgrader) run(binary string) (fdpass.Report, error) {
	if !u.mu.TryLock() {
		return fdpass.Report{}, errors.New("an upgrade is already running")
	}
	defer u.mu.Unlock()
	if u.inbound {
		// HANDOFF.md §2.4 step 0: not before this process has taken over
		// everything from its own predecessor.
		return fdpass.Report{}, errors.New("this process is still taking over from the previous one; try again in a moment")
	}
	select {
	case <-u.done:
		return fdpass.Report{}, errors.New("this process has handed over already and is exiting")
	default:
	}
	if binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fdpass.Report{}, err
		}
		binary = exe
	}
	parent, child, err := fdpass.Socketpair()
	if err != nil {
		return fdpass.Report{}, err
	}
	// On success the channel stays open until this process exits; closing
	// it while the new process still reads would look like a crash to it.
	ok := false
	defer func() {
		if !ok {
			parent.Close()
		}
	}()
	cmd := exec.Command(binary, os.Args[1:]...)
	cmd.ExtraFiles = []*os.File{child} // fd 3 in the child
	cmd.Env = append(withoutEnv(os.Environ(), fdpass.EnvHandoffFD, envGen, envPgid),
		fdpass.EnvHandoffFD+"=3", envGen+"="+strconv.Itoa(generation()+1), envPgid+"="+strconv.Itoa(unix.Getpgrp()))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// The new process starts in a process group of its own, so that a
	// failed upgrade kills it with everything it started (issue 12: killing
	// the child alone left its children running). Out of this process's
	// group it would miss what a terminal sends to its foreground group
	// (Ctrl-C); so once its handoff has ended it moves itself back into this
	// process's group (rejoinGroup), and until then TERM and INT here kill
	// it (abort). Until it moves back it is a background group of the
	// terminal: with "stty tostop" its writes to the terminal would stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// No Pdeathsig: it is per thread in Go, and the child outlives us (HANDOFF.md P16).
	if err := cmd.Start(); err != nil {
		child.Close()
		return fdpass.Report{}, fmt.Errorf("starting %s: %w", binary, err)
	}
	child.Close() // or we never see EOF from the child (P17)
	// Setpgid with Pgid 0: the group is named after the child.
	pgid := cmd.Process.Pid
	u.setChildPgid(pgid)
	// The child is reaped only once the group can no longer be killed: a
	// zombie keeps its pid, the group's id, from being reused, so that
	// kill(-pgid) never reaches another group.
	exited, settled, reaped := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer func() {
		u.setChildPgid(0)
		close(settled)
		select {
		case <-exited:
			<-reaped // a failed upgrade returns with its child reaped
		default:
		}
	}()
	go func() {
		waitChildExit(pgid)
		close(exited)
		<-settled
		cmd.Wait()
		close(reaped)
	}()
	start := time.Now()
	u.p.CarriedBytes() // count this upgrade's only
	u.log.Logf(errlog.LevelNotice, "upgrade: started %s, pid %d", binary, cmd.Process.Pid)
	rep, err := fdpass.Upgrade(parent, u.p, fdpass.UpgradeOptions{
		Generation:   uint64(generation() + 1),
		HelloTimeout: max(u.timeout, 30*time.Second), // the new process loads its config first
		BatchTimeout: u.timeout,
		ChildExited:  exited,
		Kill: func() {
			unix.Kill(-pgid, unix.SIGKILL) // the new process and all it started
			cmd.Process.Kill()             // should it have left the group already
		},
		Progress: func(f string, a ...any) {
			lv := errlog.LevelNotice
			if strings.HasPrefix(f, "batch") || strings.HasPrefix(f, "rejected flow") {
				lv = errlog.LevelInfo // one line per 126 connections
			}
			u.log.Logf(lv, "upgrade: +%dms "+f, append([]any{time.Since(start).Milliseconds()}, a...)...)
		},
	})
	rep.PendingBytes = u.p.CarriedBytes()
	rep.Stayed = u.p.TLSSessions()
	if err != nil {
		u.log.Logf(errlog.LevelAlert, "upgrade failed, this process keeps serving: %v (moved %d, resumed %d, lost %d)",
			err, rep.Moved, rep.Resumed, rep.Lost)
		if u.failed != nil {
			u.failed()
		}
		return rep, err
	}
	ok = true
	u.log.Logf(errlog.LevelNotice, "upgrade: pid %d took over in %s: moved %d connections carrying %d pending bytes, resumed %d here, lost %d",
		rep.NewPID, time.Since(start).Round(time.Millisecond), rep.Moved, rep.PendingBytes, rep.Resumed, rep.Lost)
	u.once.Do(func() { close(u.done) })
	return rep, nil
}

// inboundDone records that this process's own takeover has ended.
func (u *upgrader) inboundDone() {
	u.mu.Lock()
	u.inbound = false
	u.mu.Unlock()
}

func (u *upgrader) setChildPgid(pgid int) {
	u.childMu.Lock()
	u.childPgid = pgid
	u.childMu.Unlock()
}

// abort kills the new process of an upgrade under way, with its group, for
// TERM and INT: they stop this process, and the new one, in a group of its
// own until its handoff has ended, would not get the terminal's Ctrl-C that
// used to stop both. After a successful upgrade it does nothing.
func (u *upgrader) abort() {
	u.childMu.Lock()
	defer u.childMu.Unlock()
	if u.childPgid > 0 {
		unix.Kill(-u.childPgid, unix.SIGKILL)
	}
}

// waitChildExit returns once pid, a child of this process, has exited, and
// leaves it to be reaped (WNOWAIT).
func waitChildExit(pid int) {
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
}

// rejoinGroup moves this process, the new one of an upgrade, from the group
// of its own it was started in into the old process's group, once its
// handoff has ended: from then on it is the baton that serves, and a
// terminal's Ctrl-C must reach it as it reached the old one. setpgid to a
// group of the same session is allowed; should the group be gone (the old
// process died and was alone in it), this process stays in its own.
func rejoinGroup(log *errlog.Logger) {
	pgid, err := strconv.Atoi(os.Getenv(envPgid))
	if err != nil || pgid <= 0 {
		return
	}
	os.Unsetenv(envPgid)
	if err := unix.Setpgid(0, pgid); err != nil {
		log.Logf(errlog.LevelWarn, "upgrade: joining the old process's group %d: %v; this process stays in a group of its own", pgid, err)
	}
}

// Test hooks: nil or no-ops in baton; the tests, which run their own
// binary as baton, set them in init (hooks_test.go), so no test code is in
// a baton build.
var (
	// handoffStep is fdpass.TakeoverOptions.Step for the new process of an
	// upgrade.
	handoffStep func(step string)
	// testSpawn runs when a new process of an upgrade starts.
	testSpawn = func() {}
)

func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// readySink tells run when the new process has adopted its listeners and
// serves, so that it goes on with its control socket and signals.
type readySink struct {
	fdpass.Sink
	ready chan error
}

func (s readySink) AdoptListeners(files []fdpass.NamedFile) ([]string, error) {
	names, err := s.Sink.AdoptListeners(files)
	s.ready <- err
	return names, err
}

func newUpgradeCmd() *cobra.Command {
	var f socketFlags
	var binary string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "upgrade [-c FILE | --control-socket PATH] [--binary PATH]",
		Short: "Hand a running baton's listeners and live connections to a new process; no client reconnects",
		Long: `Start a new baton (this binary, or --binary) in place of the running one and
hand it every listener and every live connection, both legs and every byte
in flight; the old process then exits. Blocks until done and prints what
moved; exits non-zero if the upgrade failed (the old process then keeps
serving everything).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := f.path()
			if err != nil {
				return err
			}
			r, err := control.Call(path, control.Request{Cmd: "upgrade", Binary: binary}, timeout)
			if err != nil {
				return err
			}
			if rep := r.Upgrade; rep != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "new pid %d: moved %d connections, resumed %d in the old process, lost %d; %d pending bytes carried",
					rep.NewPID, rep.Moved, rep.Resumed, rep.Lost, rep.PendingBytes)
				if rep.Stayed > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "; %d TLS connections stay in the old process until they end", rep.Stayed)
				}
				fmt.Fprintln(cmd.OutOrStdout())
			}
			if !r.OK {
				return fmt.Errorf("upgrade failed, the old process keeps serving: %s", r.Error)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&binary, "binary", "", "the new baton binary (default: the running one's executable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the upgrade")
	return cmd
}
