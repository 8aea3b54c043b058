package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newWorkerCommand is a placeholder until the order pipeline lands.
func newWorkerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "worker",
		Short:  "(worker: arriving with the order pipeline)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
