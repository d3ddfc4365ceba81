package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/control"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
)

// defaultControlSocket is where baton listens when the config says nothing.
const defaultControlSocket = "/run/baton/control.sock"

// socketFlags find the control socket of a running baton.
type socketFlags struct {
	file, socket string
}

func (f *socketFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.file, "config", "c", "", "the running baton's config file (its baton { control_socket } is used)")
	cmd.Flags().StringVar(&f.socket, "control-socket", "", "the control socket path (default "+defaultControlSocket+")")
}

// path is --control-socket, else the config's control_socket, else the default.
func (f *socketFlags) path() (string, error) {
	if f.socket != "" {
		return f.socket, nil
	}
	if f.file != "" {
		cfg, err := config.Load(f.file)
		if err != nil {
			return "", err
		}
		if cfg.Baton.ControlSocket != "" {
			return cfg.Baton.ControlSocket, nil
		}
	}
	return defaultControlSocket, nil
}

// call sends cmd to the running baton. A reply that is not OK comes back
// with its error; a nil reply means none came (or one from another user's
// socket, which control.Call does not ask).
func call(f *socketFlags, cmd string) (*control.Reply, error) {
	path, err := f.path()
	if err != nil {
		return nil, err
	}
	r, err := control.Call(path, control.Request{Cmd: cmd}, 60*time.Second)
	if err != nil {
		return nil, err
	}
	if !r.OK {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// replyStatus is the proxy.Status in a reply to "status" (package control
// carries it as JSON without knowing its type).
func replyStatus(r *control.Reply) (*proxy.Status, error) {
	if len(r.Status) == 0 {
		return nil, errors.New("the reply to status holds no status")
	}
	var st proxy.Status
	if err := json.Unmarshal(r.Status, &st); err != nil {
		return nil, fmt.Errorf("reading the status: %w", err)
	}
	return &st, nil
}

func newStatusCmd() *cobra.Command {
	var f socketFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [-c FILE | --control-socket PATH] [--json]",
		Short: "Show what a running baton believes: listeners, upstreams, each server's state, live connections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := call(&f, "status")
			if err != nil {
				return err
			}
			st, err := replyStatus(r)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(out io.Writer, st *proxy.Status) {
	fmt.Fprintf(out, "baton pid %d, up %s, %d live connections, %d since start\n",
		st.PID, time.Since(st.Started).Round(time.Second), st.Active, st.Total)
	d := st.Descriptors
	fmt.Fprintf(out, "descriptors: sessions hold %d of %d (UDP %d of %d); open file limit %d, %d kept for baton itself\n",
		d.Held, d.Limit, d.UDPHeld, d.UDPLimit, d.FileLimit, d.Reserve)
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nLISTENER\tTO\tLIVE\tTOTAL")
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "%s %s\t%s\t%d\t%d\n", l.Protocol, l.Addr, l.Upstream, l.Active, l.Total)
	}
	for _, u := range st.Upstreams {
		backup := ""
		if u.BackupInUse {
			backup = ", backup in use"
		}
		fmt.Fprintf(w, "\nUPSTREAM %s (%s%s)\tSTATE\tLIVE\tTOTAL\tCONNECT FAILS\tSENT\tRECEIVED\n", u.Name, u.Method, backup)
		for _, s := range u.Servers {
			name := s.Name
			if s.Name != s.Addr {
				name += " (" + s.Addr + ")"
			}
			if s.Backup {
				name += " backup"
			}
			fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\n", name, s.State, s.Active, s.Total, s.ConnectFails, s.BytesSent, s.BytesReceived)
		}
		for _, r := range u.Resolved {
			fmt.Fprintf(w, "  %s\n", resolvedLine(r))
		}
		if rb := u.Rebalance; rb != nil {
			fmt.Fprintf(w, "  rebalance (window %s, idle %s): %d sessions misplaced now; closed %d at an idle moment, %d at their window's end\n",
				rb.Window, rb.Idle, rb.Misplaced, rb.ClosedIdle, rb.ClosedAtEnd)
		}
	}
	w.Flush()
}

func newReloadCmd() *cobra.Command {
	var f socketFlags
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "reload [-c FILE | --control-socket PATH] [--dry-run]",
		Short: "Make a running baton re-read its config in place (as SIGHUP); a bad config is refused and the old one stays",
		Long: `Make a running baton re-read its config in place (as SIGHUP); a bad config is
refused and the old one stays.

With --dry-run, the running baton reads its config file, changes nothing, and
prints how many of its live sessions the new config would make misplaced, by
server, in the upstreams with "rebalance": the sessions a reload would close
and send to another server over the rebalance window.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dryRun {
				r, err := call(&f, "plan")
				if err != nil {
					return err
				}
				fmt.Fprint(cmd.OutOrStdout(), r.Report)
				return nil
			}
			r, err := call(&f, "reload")
			if err != nil && r == nil {
				return err // no baton answered (or not ours): nothing was refused
			}
			if err != nil {
				return fmt.Errorf("reload refused, the running configuration stays:\n%w", err)
			}
			fmt.Fprint(cmd.OutOrStdout(), r.Report)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "change nothing: print the live sessions the new config would make misplaced")
	return cmd
}

// planner reads file and reports what a reload to it would do to p's live
// sessions, changing nothing.
func planner(p *proxy.Proxy, file string) func() (string, error) {
	return func() (string, error) {
		cfg, err := config.Load(file)
		if err != nil {
			return "", err
		}
		plan, err := p.PlanReload(cfg)
		if err != nil {
			return "", err
		}
		return plan.String(), nil
	}
}

// reloader re-reads file and applies it to p; it reports what changed.
func reloader(p *proxy.Proxy, file string) func() (string, error) {
	return func() (string, error) {
		cfg, err := config.Load(file)
		if err != nil {
			return "", err
		}
		ch, err := p.Reload(cfg)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		for _, w := range cfg.Warnings {
			fmt.Fprintf(&b, "warning: %s in %s:%d\n", w.Msg, w.Pos.File, w.Pos.Line)
		}
		b.WriteString(ch.String())
		return b.String(), nil
	}
}

// resolvedLine describes a name an upstream resolves at run time:
// "resolve db.svc: 10.0.0.1, 10.0.0.2 (looked up 3s ago)", with the last
// lookup's error when it failed.
func resolvedLine(r proxy.ResolvedStatus) string {
	name := r.Name
	if r.Service != "" {
		name = "service " + r.Service + " of " + r.Name
	}
	addrs := strings.Join(r.Addrs, ", ")
	switch {
	case !r.Answered:
		addrs = "no answer yet"
	case addrs == "":
		addrs = "no addresses"
	}
	s := fmt.Sprintf("resolve %s: %s", name, addrs)
	if !r.Refreshed.IsZero() {
		s += fmt.Sprintf(" (looked up %s ago)", time.Since(r.Refreshed).Round(time.Second))
	}
	if r.Error != "" {
		s += "; last lookup failed: " + r.Error
	}
	return s
}
