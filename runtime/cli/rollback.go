package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
)

func newRollbackCommand() *cobra.Command {
	var (
		sf          saleFlags
		interval    time.Duration
		batch       int
		concurrency int
		metricsAddr string
		once        bool
	)
	cmd := &cobra.Command{
		Use:   "rollback --file sale.yaml --redis-addr HOST:PORT --mysql-dsn DSN",
		Short: "Cancel unpaid orders after their payment deadline and return their stock, exactly once",
		Long: `Every interval, cancel the orders of a sale whose payment deadline passed
(compare-and-set created → cancelled in MySQL) and, only for the ones this
process cancelled, return one unit of stock to Redis and free the buyer's
slot. Cancelled orders whose unit is not recorded as returned (a crash
between the two steps) are finished first. Safe to run in several replicas.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := sf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer env.Close()
			fs, log := env.sale, env.log
			rb, err := rollback.New(rollback.Config{
				SaleKey: fs.SaleKey(), Redis: env.rdb, Orders: orderdb.New(env.db), Buckets: orderstate.BucketsOf(fs),
				Interval: interval, Batch: batch, Concurrency: concurrency, Logger: log,
			})
			if err != nil {
				return err
			}
			if once {
				p, err := rb.RunOnce(cmd.Context())
				fmt.Fprintf(cmd.OutOrStdout(), "cancelled %d, returned %d units, finished %d earlier cancels, lost %d races\n",
					p.Cancelled, p.Returned, p.Finished, p.Lost)
				return err
			}
			if metricsAddr != "" {
				if err := serveRollbackMetrics(cmd.Context(), metricsAddr, rb, log); err != nil {
					return err
				}
			}
			log.Info("Rolling back unpaid orders", "sale", fs.SaleKey(), "interval", interval)
			err = rb.Run(cmd.Context())
			log.Info("Rollback stopped", "sale", fs.SaleKey())
			return err
		},
	}
	sf.bind(cmd)
	f := cmd.Flags()
	f.DurationVar(&interval, "interval", time.Second, "time between passes")
	f.IntVar(&batch, "batch", 500, "orders fetched per query")
	f.IntVar(&concurrency, "concurrency", 8, "orders cancelled and returned at once")
	f.StringVar(&metricsAddr, "metrics-addr", ":9091", "serve /metrics and /healthz here (empty: off)")
	f.BoolVar(&once, "once", false, "make one pass and exit")
	return cmd
}

func serveRollbackMetrics(ctx context.Context, addr string, rb *rollback.Rollback, log interface{ Error(string, ...any) }) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(rb.Metrics().Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Error("Metrics server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return nil
}
