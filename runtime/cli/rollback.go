package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRollbackCommand is a placeholder until the order pipeline lands.
func newRollbackCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "rollback",
		Short:  "(rollback: arriving with the order pipeline)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
