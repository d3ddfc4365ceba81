package main

import (
	"errors"
	"fmt"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
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
			for _, w := range cfg.Warnings {
				fmt.Fprintf(out, "baton: [warn] %s in %s:%d\n", w.Msg, w.Pos.File, w.Pos.Line)
			}
			// Building the proxy checks what the parser cannot: log formats'
			// variables, balancers. It binds nothing.
			p, err := proxy.New(cfg, proxy.Options{Log: proxy.NewWriterLogger(out, proxy.LevelWarn)})
			if err != nil {
				return err
			}
			p.Close()
			fmt.Fprintf(out, "baton: the configuration file %s syntax is ok\n", file)
			fmt.Fprintf(out, "baton: configuration file %s test is successful\n", file)
			fmt.Fprint(cmd.OutOrStdout(), summary(cfg))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (nginx syntax)")
	return cmd
}

// summary lists what the config serves: each listener and where it goes.
func summary(cfg *config.Config) string {
	if cfg.Stream == nil {
		return "no stream {} block: nothing to serve\n"
	}
	s := fmt.Sprintf("%d files, %d servers, %d upstreams\n", len(cfg.Files), len(cfg.Stream.Servers), len(cfg.Stream.Upstreams))
	for _, srv := range cfg.Stream.Servers {
		for _, l := range srv.Listen {
			u := srv.Upstream
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
			s += fmt.Sprintf("  listen %s -> %s [%s] %v\n", l.Addr, u.Name, method, names)
		}
	}
	return s
}
