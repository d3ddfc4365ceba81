package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
)

// envGen carries the upgrade generation to the new process.
const envGen = "BATON_GEN"

// generation is this process's place in a chain of upgrades.
func generation() int {
	g, _ := strconv.Atoi(os.Getenv(envGen))
	return g
}

// upgrader is the old process's side of "baton upgrade": one at a time.
type upgrader struct {
	timeout time.Duration // baton { upgrade_timeout }
	p       *proxy.Proxy
	log     *proxy.Logger
	failed  func() // after a failed upgrade: take the PID file back
	inbound bool   // this process's own handoff (as the new process) is still running
	mu      sync.Mutex
	done    chan struct{} // closed after a successful upgrade: this process exits
	once    sync.Once
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
	cmd.Env = append(withoutEnv(os.Environ(), fdpass.EnvHandoffFD, envGen),
		fdpass.EnvHandoffFD+"=3", envGen+"="+strconv.Itoa(generation()+1))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// No Pdeathsig: it is per thread in Go, and the child outlives us (HANDOFF.md P16).
	if err := cmd.Start(); err != nil {
		child.Close()
		return fdpass.Report{}, fmt.Errorf("starting %s: %w", binary, err)
	}
	child.Close() // or we never see EOF from the child (P17)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	start := time.Now()
	u.p.CarriedBytes() // count this upgrade's only
	u.log.Logf(proxy.LevelNotice, "upgrade: started %s, pid %d", binary, cmd.Process.Pid)
	rep, err := fdpass.Upgrade(parent, u.p, fdpass.UpgradeOptions{
		Generation:   uint64(generation() + 1),
		HelloTimeout: max(u.timeout, 30*time.Second), // the new process loads its config first
		BatchTimeout: u.timeout,
		ChildExited:  exited,
		Kill:         func() { cmd.Process.Kill() },
		Progress: func(f string, a ...any) {
			lv := proxy.LevelNotice
			if strings.HasPrefix(f, "batch") || strings.HasPrefix(f, "rejected flow") {
				lv = proxy.LevelInfo // one line per 126 connections
			}
			u.log.Logf(lv, "upgrade: +%dms "+f, append([]any{time.Since(start).Milliseconds()}, a...)...)
		},
	})
	rep.PendingBytes = u.p.CarriedBytes()
	if err != nil {
		u.log.Logf(proxy.LevelAlert, "upgrade failed, this process keeps serving: %v (moved %d, resumed %d, lost %d)",
			err, rep.Moved, rep.Resumed, rep.Lost)
		if u.failed != nil {
			u.failed()
		}
		return rep, err
	}
	ok = true
	u.log.Logf(proxy.LevelNotice, "upgrade: pid %d took over in %s: moved %d connections carrying %d pending bytes, resumed %d here, lost %d",
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
			r, err := proxy.CallControl(path, proxy.ControlRequest{Cmd: "upgrade", Binary: binary}, timeout)
			if err != nil {
				return err
			}
			if rep := r.Upgrade; rep != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "new pid %d: moved %d connections, resumed %d in the old process, lost %d; %d pending bytes carried\n",
					rep.NewPID, rep.Moved, rep.Resumed, rep.Lost, rep.PendingBytes)
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
