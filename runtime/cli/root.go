// Package cli wires the data-plane programs into the subcommands of the one
// flashsale binary. Every command takes the sale as a FlashSale manifest
// (--file) plus addresses and secrets from flags or the environment.
package cli

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// NewRoot returns the flashsale command with all its subcommands.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "flashsale",
		Short:         "Run flash sales end to end: operator, seckill API, order pipeline",
		SilenceUsage:  true,
		SilenceErrors: false,
		// Flags that the environment may stand in for take its value only
		// now, after parsing, so --help never prints it (see fromEnv).
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyEnv(cmd) },
	}
	root.AddCommand(newManagerCommand(), newWarmCommand(), newSeckillCommand(), newDemoCommand(), newTokenCommand(),
		newMigrateCommand(), newWorkerCommand(), newRollbackCommand(), newAuditCommand(), newLoadtestCommand(), newVersionCommand())
	root.AddCommand(newCRDsCommand(), newCheckInstallCommand())
	root.AddCommand(newPlanCommand())
	return root
}

func newLogger(format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
