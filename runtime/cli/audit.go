package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newAuditCommand is a placeholder until the order pipeline lands.
func newAuditCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "audit",
		Short:  "(audit: arriving with the order pipeline)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
