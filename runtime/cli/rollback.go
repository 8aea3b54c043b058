package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/rollback"
)

func newRollbackCommand() *cobra.Command {
	var (
		file        string
		dsn         string
		interval    time.Duration
		batch       int
		concurrency int
		metricsAddr string
		logFormat   string
		once        bool
		redis       redisconn.Options
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
			log := newLogger(logFormat)
			fs, err := manifest.Load(file)
			if err != nil {
				return err
			}
			if dsn == "" {
				return fmt.Errorf("no MySQL DSN: set --mysql-dsn or %s", envMySQLDSN)
			}
			rdb, err := redis.Client(cmd.Context())
			if err != nil {
				return err
			}
			defer rdb.Close()
			db, err := orderdb.Open(dsn)
			if err != nil {
				return err
			}
			defer db.Close()
			rb, err := rollback.New(rollback.Config{
				Sale: fs.SaleKey(), Redis: rdb, Orders: orderdb.New(db),
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
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	f.StringVar(&dsn, "mysql-dsn", os.Getenv(envMySQLDSN), "go-sql-driver DSN of the orders database; env "+envMySQLDSN)
	f.DurationVar(&interval, "interval", time.Second, "time between passes")
	f.IntVar(&batch, "batch", 500, "orders fetched per query")
	f.IntVar(&concurrency, "concurrency", 8, "orders cancelled and returned at once")
	f.StringVar(&metricsAddr, "metrics-addr", ":9091", "serve /metrics and /healthz here (empty: off)")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	f.BoolVar(&once, "once", false, "make one pass and exit")
	redis.Bind(f)
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
