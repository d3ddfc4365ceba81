package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/proxy"
	"github.com/spf13/cobra"
)

func newHashCmd() *cobra.Command {
	var file, upstream, against string
	cmd := &cobra.Command{
		Use:   "hash -c FILE [--upstream NAME] [--against OTHER_FILE]",
		Short: "Show where keys land in a hashed upstream, or which move if the server list changes",
		Long: `Read evaluated keys on stdin, one a line (client addresses for ip_hash and for
"hash $remote_addr"), and print the server each lands on, exactly as the
running proxy would pick it.

With --against OTHER_FILE, compare with the same upstream in OTHER_FILE and
print only the keys that would move, then how many: plan a ring change before
it causes a reconnect storm.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("hash needs -c FILE")
			}
			cur, err := loadPicker(file, upstream)
			if err != nil {
				return err
			}
			var next *proxy.Picker
			if against != "" {
				if next, err = loadPicker(against, upstream); err != nil {
					return err
				}
			}
			return mapKeys(cmd.InOrStdin(), cmd.OutOrStdout(), cur, next)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (nginx syntax)")
	cmd.Flags().StringVar(&upstream, "upstream", "", "upstream block name (may be left out when the file has one upstream)")
	cmd.Flags().StringVar(&against, "against", "", "another config: report the keys that would move to its server list")
	return cmd
}

// loadPicker loads file and returns a Picker for its upstream called name
// (or its only upstream when name is empty).
func loadPicker(file, name string) (*proxy.Picker, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	if cfg.Stream == nil || len(cfg.Stream.Upstreams) == 0 {
		return nil, fmt.Errorf("%s has no upstream {} block", file)
	}
	var names []string
	for _, u := range cfg.Stream.Upstreams {
		if u.Name == name || (name == "" && len(cfg.Stream.Upstreams) == 1) {
			return proxy.NewPicker(u)
		}
		names = append(names, u.Name)
	}
	if name == "" {
		return nil, fmt.Errorf("%s has several upstreams (%s): choose one with --upstream", file, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%s has no upstream %q (it has %s)", file, name, strings.Join(names, ", "))
}

// mapKeys prints where each key of in lands ("KEY SERVER"), or, with next,
// the keys that move ("KEY OLD -> NEW") and a count.
func mapKeys(in io.Reader, out io.Writer, cur, next *proxy.Picker) error {
	w := bufio.NewWriter(out)
	defer w.Flush()
	sc := bufio.NewScanner(in)
	total, moved := 0, 0
	for sc.Scan() {
		key := strings.TrimSpace(sc.Text())
		if key == "" {
			continue
		}
		total++
		name, addr, err := cur.Pick(key)
		if err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		if next == nil {
			fmt.Fprintf(w, "%s %s\n", key, server(name, addr.String()))
			continue
		}
		name2, addr2, err := next.Pick(key)
		if err != nil {
			return fmt.Errorf("key %q (against): %w", key, err)
		}
		if name2 != name || addr2 != addr {
			moved++
			fmt.Fprintf(w, "%s %s -> %s\n", key, server(name, addr.String()), server(name2, addr2.String()))
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if next != nil {
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(moved) / float64(total)
		}
		fmt.Fprintf(w, "# %d of %d keys move (%.1f%%)\n", moved, total, pct)
	}
	return nil
}

// server prints a server by its name, and its address when the name is a
// host name that resolved to it.
func server(name, addr string) string {
	if name == addr {
		return name
	}
	return name + "(" + addr + ")"
}
