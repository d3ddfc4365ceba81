package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/control"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

type quickFlags struct {
	listen         string
	upstreams      []string
	balance        string
	connectTimeout string
	proxyTimeout   string
}

func (q *quickFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&q.listen, "listen", "", "quick mode: address to listen on (ADDR:PORT or PORT), instead of a config file")
	f.StringArrayVar(&q.upstreams, "upstream", nil, "quick mode: upstream server ADDR:PORT (repeat for several)")
	f.StringVar(&q.balance, "balance", "round_robin", "quick mode: round_robin|ip_hash|hash|consistent|least_conn|random (hash methods hash the client address)")
	f.StringVar(&q.connectTimeout, "connect-timeout", "", "quick mode: proxy_connect_timeout (nginx time, default 60s)")
	f.StringVar(&q.proxyTimeout, "timeout", "", "quick mode: proxy_timeout, the idle timeout (nginx time, default 10m)")
}

// config renders the quick-mode flags as an nginx config, so that they are
// checked exactly as a file would be.
func (q *quickFlags) config() (*config.Config, error) {
	if len(q.upstreams) == 0 {
		return nil, errors.New("quick mode needs at least one --upstream")
	}
	method := map[string]string{
		"round_robin": "",
		"ip_hash":     "ip_hash;",
		"hash":        "hash $remote_addr;",
		"consistent":  "hash $remote_addr consistent;",
		"least_conn":  "least_conn;",
		"random":      "random;",
	}
	m, ok := method[q.balance]
	if !ok {
		return nil, fmt.Errorf("unknown --balance %q: want round_robin, ip_hash, hash, consistent, least_conn or random", q.balance)
	}
	var b strings.Builder
	b.WriteString("stream {\n    upstream quick {\n")
	if m != "" {
		fmt.Fprintf(&b, "        %s\n", m)
	}
	for _, u := range q.upstreams {
		fmt.Fprintf(&b, "        server %s;\n", quote(u))
	}
	fmt.Fprintf(&b, "    }\n    server {\n        listen %s backlog=4096;\n        proxy_pass quick;\n", quote(q.listen))
	if q.connectTimeout != "" {
		fmt.Fprintf(&b, "        proxy_connect_timeout %s;\n", quote(q.connectTimeout))
	}
	if q.proxyTimeout != "" {
		fmt.Fprintf(&b, "        proxy_timeout %s;\n", quote(q.proxyTimeout))
	}
	b.WriteString("    }\n}\n")
	return config.Parse("command line", []byte(b.String()))
}

// quote makes s one nginx token whatever it holds.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func newRunCmd() *cobra.Command {
	var file, controlSocket string
	var q quickFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the proxy in the foreground",
		Long: `Run the proxy in the foreground, from a config file (-c) or in quick mode
(--listen and --upstream). Signals as nginx: QUIT stops gracefully (stop
accepting, let connections finish, bounded by worker_shutdown_timeout),
TERM and INT stop at once, USR1 reopens the log files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *config.Config
			var err error
			switch {
			case file != "" && q.listen != "":
				return errors.New("use either -c FILE or --listen/--upstream, not both")
			case file != "":
				cfg, err = config.Load(file)
			case q.listen != "":
				cfg, err = q.config()
			default:
				return errors.New("nothing to run: give -c FILE, or --listen ADDR --upstream ADDR")
			}
			if err != nil {
				return err
			}
			return run(cfg, runOptions{file: file, controlSocket: controlSocket})
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (nginx syntax)")
	cmd.Flags().StringVar(&controlSocket, "control-socket", "", "control socket path (default: the config's baton { control_socket }, "+defaultControlSocket+"; none in quick mode)")
	q.register(cmd)
	return cmd
}

// runOptions are what run needs beyond the config.
type runOptions struct {
	file          string // the config file, for reloads; "" in quick and demo mode
	controlSocket string // --control-socket
}

// run serves cfg until a signal ends it.
func run(cfg *config.Config, opts runOptions) error {
	if cfg.WorkerRlimitNofile > 0 {
		if err := setNofile(cfg.WorkerRlimitNofile); err != nil {
			fmt.Fprintf(os.Stderr, "baton: [warn] worker_rlimit_nofile %d: %v\n", cfg.WorkerRlimitNofile, err)
		}
	}
	// Started by an old baton for an upgrade? Then the listeners come from it.
	handoff, err := fdpass.AdoptEnv()
	if err != nil {
		return fmt.Errorf("upgrade handoff: %w", err)
	}
	if handoff != nil {
		testSpawn()
	}
	p, err := proxy.New(cfg, proxy.Options{Generation: generation()})
	if err != nil {
		if handoff != nil {
			handoff.Close()
		}
		return err
	}
	log := p.Logger()
	for _, w := range warnings(cfg) {
		log.Logf(errlog.LevelWarn, "%s", w)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	defer signal.Stop(sigs)

	writePidFile := func() error {
		if cfg.Pid != "" {
			if err := writePid(cfg.Pid); err != nil {
				return err
			}
		}
		// systemd (Type=notify): this process is the service's main one now.
		if err := sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())); err != nil {
			log.Logf(errlog.LevelWarn, "sd_notify: %v", err)
		}
		return nil
	}
	takeover := make(chan error, 1)
	if handoff == nil {
		if err := p.Start(); err != nil {
			p.Close()
			return err
		}
		if err := writePidFile(); err != nil {
			p.Close()
			return err
		}
	} else {
		// The old process sends its listeners; Start runs inside
		// AdoptListeners. The PID file is written just before DONE_OK.
		ready := make(chan error, 1)
		go func() {
			defer handoff.Close()
			err := fdpass.Takeover(handoff, readySink{p.Sink(), ready}, fdpass.TakeoverOptions{Build: version, Step: handoffStep, Done: func() error {
				p.HandoffDone() // UDP listeners start reading now that their sessions are in place
				return writePidFile()
			}})
			if err != nil {
				p.HandoffDone() // the old process died or the handoff broke: serve UDP anyway
			}
			takeover <- err
		}()
		select {
		case err := <-ready:
			if err != nil {
				p.Close()
				return fmt.Errorf("upgrade: adopting the listeners: %w", err)
			}
		case err := <-takeover:
			p.Close()
			return fmt.Errorf("upgrade: the handoff failed before this process served: %w", err)
		}
	}
	handedOver := false
	defer func() {
		if cfg.Pid != "" && !handedOver {
			os.Remove(cfg.Pid) // after a handoff it is the new process's
		}
		if !handedOver {
			p.RemoveUnixSockets() // as nginx's master at exit; after a handoff they are the new process's
		}
	}()

	var reload, plan func() (string, error)
	reloads := newReloadQueue()
	stopReloads := make(chan struct{})
	defer close(stopReloads)
	if opts.file != "" {
		reload = oneReload(reloader(p, opts.file))
		plan = planner(p, opts.file)
		go reloads.run(stopReloads, reload, opts.file, log)
	}
	up := &upgrader{p: p, log: log, timeout: cmp.Or(cfg.Baton.UpgradeTimeout, config.DefaultUpgradeTimeout), done: make(chan struct{}), inbound: handoff != nil, failed: func() {
		if err := writePidFile(); err != nil {
			log.Logf(errlog.LevelAlert, "rewriting the pid file after a failed upgrade: %v", err)
		}
	}}
	ctlPath := opts.controlSocket
	if ctlPath == "" && opts.file != "" {
		ctlPath = cfg.Baton.ControlSocket
	}
	var ctl *control.Server
	if ctlPath != "" {
		ctl, err = p.ServeControl(ctlPath, proxy.ControlOptions{Reload: reload, Upgrade: up.run, Plan: plan})
		if err != nil {
			// Traffic matters more: serve it, and say what is missing.
			log.Logf(errlog.LevelWarn, "%v; baton status, reload and upgrade will not reach this process (SIGHUP still reloads, SIGUSR2 still upgrades)", err)
		} else {
			defer func() {
				// A handler may be waiting on a reload or an upgrade; this
				// process is exiting, so only a reply being written is
				// waited for.
				if !within(ctlCloseWait, func() { ctl.Close() }) {
					log.Logf(errlog.LevelInfo, "control socket: exiting with a request still being served")
				}
			}()
		}
	}
	var addrs []string
	for _, a := range p.Addrs() {
		addrs = append(addrs, a.String())
	}
	log.Logf(errlog.LevelNotice, "baton %s (nginx/%s stream) started, pid %d, listening on %s", version, proxy.NginxVersion, os.Getpid(), strings.Join(addrs, ", "))
	// Tests and scripts wait for this line on stderr.
	fmt.Fprintf(os.Stderr, "baton: ready on %s\n", strings.Join(addrs, ", "))

	graceful := func(why string) {
		log.Logf(errlog.LevelNotice, "%s (%d live connections)", why, p.Stats().Active)
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if cfg.WorkerShutdownTimeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, cfg.WorkerShutdownTimeout)
		}
		go func() {
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				log.Logf(errlog.LevelNotice, "worker_shutdown_timeout %s passed, closed the remaining connections", cfg.WorkerShutdownTimeout)
			}
		}()
	}
	upgradeDone := up.done
	for {
		select {
		case <-p.Done():
			return nil
		case err := <-takeover:
			up.inboundDone()
			rejoinGroup(log)
			if err != nil {
				log.Logf(errlog.LevelAlert, "upgrade handoff ended early: %v; serving what was handed over", err)
			} else {
				log.Logf(errlog.LevelNotice, "upgrade handoff complete: this process (generation %d) serves everything", generation())
			}
		case <-upgradeDone:
			upgradeDone = nil
			// The new process owns every listener, the control socket and
			// the PID file now; what is left here are flows it could not take.
			handedOver = true
			if ctl != nil {
				ctl.HandOff()
				go ctl.Close()
			}
			graceful("handed over to the new process; exiting once the connections left here end")
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				if err := p.ReopenLogs(); err != nil {
					log.Logf(errlog.LevelAlert, "reopening logs: %v", err)
				} else {
					log.Logf(errlog.LevelNotice, "reopened log files")
				}
			case syscall.SIGUSR2:
				go up.run("") // logs its outcome
			case syscall.SIGHUP:
				if reload == nil {
					log.Logf(errlog.LevelWarn, "SIGHUP: nothing to reload: baton runs without a config file")
					break
				}
				reloads.request() // logs its outcome
			case syscall.SIGQUIT:
				graceful("gracefully shutting down")
			default: // TERM, INT
				log.Logf(errlog.LevelNotice, "exiting on %s", sig)
				up.abort()
				closeBounded(p, log)
				return nil
			}
		}
	}
}

// termCloseWait bounds how long TERM waits for the proxy to close. Whatever
// else is under way (a reload, an upgrade), TERM stops this process: should
// Close wait longer, the process exits without it, which closes every socket
// just as well.
const termCloseWait = 5 * time.Second

// ctlCloseWait bounds how long an exiting baton waits for the control
// socket's handlers: enough for a reply being written.
const ctlCloseWait = time.Second

// closeBounded closes p, waiting at most termCloseWait.
func closeBounded(p *proxy.Proxy, log *errlog.Logger) {
	if !within(termCloseWait, func() { p.Close() }) {
		log.Logf(errlog.LevelAlert, "the proxy did not close within %s; exiting without it", termCloseWait)
	}
}

// within runs f and waits at most d for it to return; it reports whether f
// returned. f goes on running if it did not.
func within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func setNofile(n int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = uint64(n)
	if lim.Max < lim.Cur {
		lim.Max = lim.Cur
	}
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
}

// writePid writes the pid file atomically (a temporary file renamed in place).
func writePid(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".baton-pid-*")
	if err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("writing pid file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
