package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/internal/errlog"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newCheckCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Check a config file, like nginx -t",
		Long: `Check a config file as "nginx -t" does: read it and everything it includes,
validate every directive, and print either a summary (exit 0) or the errors,
each naming its file and line (exit 1). Nothing is bound or started.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("check needs -c FILE")
			}
			cfg, err := config.Load(file)
			if err != nil {
				return err
			}
			out := cmd.ErrOrStderr()
			for _, w := range warnings(cfg) {
				fmt.Fprintf(out, "baton: [warn] %s\n", w)
			}
			// Building the proxy checks what the parser cannot: log formats'
			// variables, balancers. It binds nothing.
			p, err := proxy.New(cfg, proxy.Options{Log: errlog.NewWriter(out, errlog.LevelWarn)})
			if err != nil {
				return err
			}
			p.Close()
			fmt.Fprintf(out, "baton: the configuration file %s syntax is ok\n", file)
			fmt.Fprintf(out, "baton: configuration file %s test is successful\n", file)
			return summary(cmd.OutOrStdout(), cfg)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (nginx syntax)")
	return cmd
}

// warnings are what "baton check" prints and "baton run" logs at start, as
// nginx [warn] lines without the prefix: the config's own warnings, then
// those that depend on the machine.
func warnings(cfg *config.Config) []string {
	var ws []string
	for _, w := range cfg.Warnings {
		ws = append(ws, fmt.Sprintf("%s in %s:%d", w.Msg, w.Pos.File, w.Pos.Line))
	}
	if w := nofileWarning(cfg); w != "" {
		ws = append(ws, w)
	}
	return ws
}

// nofileWarning is nginx's check in ngx_event_module_init: more
// worker_connections than the open-file limit allows is worth a warning,
// in nginx's words. The limit is worker_rlimit_nofile when it is set, else
// the soft RLIMIT_NOFILE, and nginx warns only when worker_connections
// exceeds the soft limit and, if set, worker_rlimit_nofile too. ("baton run"
// has applied worker_rlimit_nofile by then; the Go runtime raises the soft
// limit to the hard one at start, so the soft limit read here is the one
// baton runs with.)
func nofileWarning(cfg *config.Config) string {
	conns := cfg.WorkerConnections
	if conns <= 0 {
		return ""
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Sprintf("getrlimit(RLIMIT_NOFILE) failed (%v), ignored", err)
	}
	if lim.Cur == unix.RLIM_INFINITY || lim.Cur >= math.MaxInt64 || uint64(conns) <= lim.Cur {
		return ""
	}
	limit := int64(lim.Cur)
	if n := cfg.WorkerRlimitNofile; n > 0 {
		if conns <= n {
			return ""
		}
		limit = int64(n)
	}
	return fmt.Sprintf("%d worker_connections exceed open file resource limit: %d", conns, limit)
}

// summary writes what the config serves to w: each listener and where it
// goes. It writes as it goes, and formats each upstream's method and server
// list once however many listeners use it, so that its work grows with the
// config (issue 12: it used to build one string with +=, and 50,000 servers
// took 53 s).
func summary(w io.Writer, cfg *config.Config) error {
	bw := bufio.NewWriter(w)
	if cfg.Stream == nil {
		bw.WriteString("no stream {} block: nothing to serve\n")
		return bw.Flush()
	}
	fmt.Fprintf(bw, "%d files, %d servers, %d upstreams\n", len(cfg.Files), len(cfg.Stream.Servers), len(cfg.Stream.Upstreams))
	described := map[*config.Upstream]string{}
	for _, srv := range cfg.Stream.Servers {
		var to string
		switch u := srv.Upstream; {
		case u != nil:
			d, ok := described[u]
			if !ok {
				d = describeUpstream(u)
				described[u] = d
			}
			to = u.Name + " " + d
		case srv.Return != nil:
			to = "return " + srv.Return.Value
		case srv.Pass != "":
			to = "pass " + srv.Pass
		default:
			to = srv.ProxyPass + " (evaluated per connection)"
		}
		for _, l := range srv.Listen {
			if l.Vhost {
				continue
			}
			proto := ""
			if l.UDP {
				proto = " udp"
			}
			names := ""
			if len(l.Vhosts) > 1 {
				names = fmt.Sprintf(" (and %d more servers by server_name)", len(l.Vhosts)-1)
			}
			where := l.Addr.String()
			if l.Unix != "" {
				where = l.Text
			}
			fmt.Fprintf(bw, "  listen %s%s -> %s%s\n", where, proto, to, names)
		}
	}
	return bw.Flush()
}

// describeUpstream is u's method and servers as summary prints them:
// "[round_robin] [10.0.0.1:80 10.0.0.2:80 (backup)]".
func describeUpstream(u *config.Upstream) string {
	method := u.Method
	switch {
	case method == "":
		method = "round_robin"
	case u.Consistent:
		method = "hash " + u.HashKey + " consistent"
	case method == "hash":
		method = "hash " + u.HashKey
	}
	var names []string
	for _, us := range u.Servers {
		n := us.Name
		if us.Backup {
			n += " (backup)"
		}
		if us.Down {
			n += " (down)"
		}
		names = append(names, n)
	}
	return fmt.Sprintf("[%s] %v", method, names)
}
