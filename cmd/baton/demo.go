package main

import (
	"bufio"
	"fmt"
	"net"
	"os"

	"github.com/batonproxy/baton/config"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var listen string
	var basePort int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a demo: three built-in backends and a proxy in front of them",
		Long: `Start three built-in backends on 127.0.0.1 (each greets with its name, then
echoes every line back) and a round-robin proxy in front of them, then print
what to type. Stop it with Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var upstreams string
			var lns []net.Listener
			defer func() {
				for _, ln := range lns {
					ln.Close()
				}
			}()
			for i := 1; i <= 3; i++ {
				addr := fmt.Sprintf("127.0.0.1:%d", basePort+i)
				if basePort == 0 {
					addr = "127.0.0.1:0"
				}
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return fmt.Errorf("demo backend: %w", err)
				}
				if basePort == 0 && ln.Addr().String() == listen {
					// A free port the kernel chose may be the one the
					// proxy is to listen on: take another.
					other, err := net.Listen("tcp", "127.0.0.1:0")
					ln.Close()
					if err != nil {
						return fmt.Errorf("demo backend: %w", err)
					}
					ln = other
				}
				addr = ln.Addr().String()
				lns = append(lns, ln)
				go serveGreeter(ln, fmt.Sprintf("backend-%d", i))
				upstreams += fmt.Sprintf("        server %s;\n", addr)
			}
			text := fmt.Sprintf(`stream {
    upstream demo {
%s    }
    log_format demo '$remote_addr:$remote_port -> $upstream_addr $status sent=$bytes_sent received=$bytes_received time=$session_time';
    server {
        listen %s;
        proxy_pass demo;
        proxy_half_close on;   # "printf ... | nc -N" ends its side; the answer still arrives
        access_log /dev/stderr demo;
    }
}
`, upstreams, listen)
			cfg, err := config.Parse("demo", []byte(text))
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, `baton demo: three backends (%s, %s, %s) behind a round-robin proxy on %s.

  Try it, in another terminal:
      nc %s %s        # greets with a backend's name, then echoes what you type
  Run it a few times: the backends take turns. The proxy logs each connection
  here when it ends. Ctrl-C stops the demo.

The config it runs:
%s
`, lns[0].Addr(), lns[1].Addr(), lns[2].Addr(), listen, hostOf(listen), portOf(listen), text)
			return run(cfg, runOptions{})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7000", "address the demo proxy listens on")
	cmd.Flags().IntVar(&basePort, "backend-port", 7000, "the backends listen on 127.0.0.1:PORT+1..PORT+3 (0: any free ports)")
	return cmd
}

// serveGreeter is a demo backend: it greets with its name, then echoes lines.
func serveGreeter(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "hello from %s\n", name)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s: %s\n", name, sc.Text())
			}
		}()
	}
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "127.0.0.1"
	}
	return h
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}
