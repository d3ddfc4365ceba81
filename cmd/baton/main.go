// Command baton is a Layer-4 TCP proxy that runs an nginx stream {} config.
//
//	baton run -c /etc/baton/baton.conf
//	baton run --listen 127.0.0.1:7000 --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002
//	baton check -c /etc/baton/baton.conf
//	baton demo
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/batonproxy/baton/config"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	root := &cobra.Command{
		Use:           "baton",
		Short:         "baton is a Layer-4 TCP proxy that runs an nginx stream {} config",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newCheckCmd(), newDemoCmd(), newHashCmd(), newStatusCmd(), newReloadCmd(), newUpgradeCmd(), newVersionCmd())
	if err := root.Execute(); err != nil {
		printErr(err)
		os.Exit(1)
	}
}

// printErr prints err as nginx prints fatal errors, one line per problem.
func printErr(err error) {
	var el config.ErrorList
	if errors.As(err, &el) {
		for _, e := range el {
			fmt.Fprintf(os.Stderr, "baton: [emerg] %s\n", e)
		}
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(os.Stderr, "baton: [emerg] %s\n", line)
	}
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print baton's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "baton %s\n", version)
		},
	}
}
