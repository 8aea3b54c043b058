package cli

import (
	"fmt"

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
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Warmed sale %s (paused=%t)\n", fs.SaleKey(), fs.Spec.Paused)
			for _, s := range res.SKUs {
				fmt.Fprintf(out, "  SKU %-12s %-9s remaining=%d stock=%d debt=%d (moved %+d)\n", s.SKU, s.Action, s.Remaining, s.Declared(), s.Debt, s.Delta)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	redis.Bind(cmd.Flags())
	return cmd
}
