package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/tools/demo"
)

func newDemoCommand() *cobra.Command {
	var (
		o     demo.Options
		redis redisconn.Options
	)
	cmd := &cobra.Command{
		Use:   "demo [--redis-addr HOST:PORT]",
		Short: "Run whole sales locally, one without and one with a waiting room: purchase API, pipeline, payment, rollback and audit against a spike of buyers and bots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rdb, err := redis.Client(cmd.Context())
			if err != nil {
				return err
			}
			defer rdb.Close()
			_, err = demo.Run(cmd.Context(), rdb, o, cmd.OutOrStdout())
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Buyers, "buyers", 5000, "distinct buyers arriving at once")
	f.IntVar(&o.Repeats, "repeats", 2000, "repeat clicks by buyers who already tried")
	f.IntVar(&o.Bots, "bots", 300, "bots: forged tokens, no token, hammering")
	f.Int64Var(&o.PhoneStock, "phone-stock", 100, "phones on sale (1 per buyer)")
	f.Int64Var(&o.CaseStock, "case-stock", 500, "cases on sale (3 per buyer)")
	f.Int64Var(&o.StickerStock, "sticker-stock", 10000, "stickers on sale (1 per buyer): plenty, so repeat clicks meet the per-user limit")
	f.IntVar(&o.Concurrency, "concurrency", 256, "requests in flight at once")
	f.StringVar(&o.MySQLDSN, "mysql-dsn", "root@tcp(127.0.0.1:3306)/", "MySQL/MariaDB server; the demo creates a database of its own and drops it afterwards; env "+envMySQLDSN)
	fromEnv(f, "mysql-dsn", envMySQLDSN)
	f.Float64Var(&o.PayShare, "pay-share", 0.7, "share of buyers who pay; the others let the payment deadline pass")
	f.DurationVar(&o.PaymentTimeout, "payment-timeout", 3*time.Second, "the sale's payment deadline")
	f.IntVar(&o.QueueBuyers, "queue-buyers", 3000, "buyers of a second sale, with a waiting room (spec.queue), run afterwards; 0: none")
	f.BoolVar(&o.Keep, "keep", false, "leave the sale's keys in Redis and its database in MySQL for inspection")
	redis.Bind(f)
	return cmd
}
