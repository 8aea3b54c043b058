package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

func newWarmCommand() *cobra.Command {
	var (
		file  string
		redis redisconn.Options
	)
	cmd := &cobra.Command{
		Use:   "warm --file sale.yaml --redis-addr HOST:PORT",
		Short: "Pre-warm Redis for a sale: stock, order streams, scripts, switches (idempotent)",
		Long: `Pre-warm Redis for a sale. Safe to run again at any moment: a live stock
counter is never reset; a raised stock adds exactly the difference, once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs, err := manifest.Load(file)
			if err != nil {
				return err
			}
			rdb, err := redis.Client(cmd.Context())
			if err != nil {
				return err
			}
			defer rdb.Close()
			res, err := warm.Warm(cmd.Context(), rdb, fs)
			if err != nil {
				return err
			}
			printWarm(cmd.OutOrStdout(), fs.SaleKey(), fs.Spec.Paused, res)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	redis.Bind(cmd.Flags())
	return cmd
}

// printWarm prints one line per SKU and, for a SKU split into buckets, one
// line per bucket under it (its line shows the sums, the units moving
// between two buckets when there are any, and whether its buckets are held
// while bucket 0 owes part of a lowering).
func printWarm(out io.Writer, sale string, paused bool, res warm.Result) {
	fmt.Fprintf(out, "Warmed sale %s (paused=%t)\n", sale, paused)
	for _, s := range res.SKUs {
		fmt.Fprintf(out, "  SKU %-12s %-9s remaining=%d stock=%d debt=%d (moved %+d)", s.SKU, s.Action, s.Remaining, s.Declared(), s.Debt, s.Delta)
		if s.InFlight != 0 {
			fmt.Fprintf(out, " in-flight=%d", s.InFlight)
		}
		if s.Held {
			fmt.Fprint(out, " held (units flow only to bucket 0 until returns pay its debt)")
		}
		fmt.Fprintln(out)
		for _, b := range s.Buckets {
			fmt.Fprintf(out, "    bucket %-8d %-9s remaining=%d initial=%d debt=%d\n", b.Bucket, b.Action, b.Remaining, b.Initial, b.Debt)
		}
	}
}
