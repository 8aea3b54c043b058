package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// version is the version of this build. Release builds (the Dockerfile,
// hack/image) set it with
//
//	-ldflags "-X github.com/flashsale-dev/flashsale-operator/runtime/cli.version=v1.2.3"
var version = "dev"

// Version returns the version this binary was built as: the value set with
// -ldflags -X at build time, or "dev".
func Version() string { return version }

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the flashsale version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version)
			return err
		},
	}
}
