package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newMigrateCommand is a placeholder until the order pipeline lands.
func newMigrateCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "migrate",
		Short:  "(migrate: arriving with the order pipeline)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
