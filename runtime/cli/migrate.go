package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

func newMigrateCommand() *cobra.Command {
	var dsn string
	cmd := &cobra.Command{
		Use:   "migrate --mysql-dsn DSN",
		Short: "Bring the MySQL order schema to the newest version (idempotent)",
		Long: `Apply the embedded, versioned migrations of the seckill_order schema.
Running it again is a no-op. The DSN is a go-sql-driver DSN, such as
user:pass@tcp(host:3306)/shop; env ` + envMySQLDSN + ` also works.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				return fmt.Errorf("no MySQL DSN: set --mysql-dsn or %s", envMySQLDSN)
			}
			db, err := orderdb.Open(dsn)
			if err != nil {
				return err
			}
			defer db.Close()
			applied, err := orderdb.Migrate(cmd.Context(), db)
			if err != nil {
				return err
			}
			v, err := orderdb.Version(cmd.Context(), db)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(applied) == 0 {
				fmt.Fprintf(out, "schema at version %d, nothing to do\n", v)
				return nil
			}
			for _, a := range applied {
				fmt.Fprintf(out, "applied migration %05d\n", a)
			}
			fmt.Fprintf(out, "schema at version %d\n", v)
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "mysql-dsn", "", "go-sql-driver DSN of the orders database; env "+envMySQLDSN)
	fromEnv(cmd.Flags(), "mysql-dsn", envMySQLDSN)
	return cmd
}
