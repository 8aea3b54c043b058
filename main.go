// Command flashsale is the one binary of flashsale-operator: the operator and
// every data-plane program it deploys, as subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/runtime/kubectl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := cli.NewRoot
	// Installed (or linked) as kubectl-flashsale, kubectl runs this binary
	// for `kubectl flashsale ...`: it is then the plugin.
	if strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe") == kubectl.BinaryName {
		root = kubectl.NewRoot
	}
	err := root().ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(1)
	}
}
