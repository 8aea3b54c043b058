// Command flashsale is the one binary of flashsale-operator: the operator and
// every data-plane program it deploys, as subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(1)
	}
}
