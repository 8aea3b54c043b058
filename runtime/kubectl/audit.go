package kubectl

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// ErrNotConserved makes the audit command exit non-zero.
var ErrNotConserved = errors.New("not conserved")

// auditFlags override what the sale's Secrets say, for a plugin that runs
// outside the cluster (through kubectl port-forward, say).
type auditFlags struct {
	asJSON        bool
	defaultSecret string
	redisAddr     string
	mysqlDSN      string
	kafkaBrokers  []string
	timeout       time.Duration
}

func newAuditCommand(o *options) *cobra.Command {
	var af auditFlags
	cmd := &cobra.Command{
		Use:   "audit NAME [--json]",
		Short: "Audit a sale against its own Redis, MySQL and Kafka and print the conservation table",
		Long: `Resolve the sale's endpoints as the operator does (spec.redis.addressSecretRef,
spec.mysql.dsnSecretRef, spec.kafka.brokersSecretRef, else the keys redis-address,
mysql-dsn, kafka-brokers of the Secret flashsale-endpoints in the sale's
namespace), connect to them from where this runs, and run the audit of
flashsale audit: per SKU,

    initial = remaining + in flight (stream + Kafka + dead letters) + created + paid + returning

It exits non-zero when the stock is not conserved, an order is lost or
stranded, or Redis disagrees with itself. The audit only reads; repairs are
flashsale audit --repair's. When the Secrets name in-cluster addresses this
machine cannot reach, port-forward them and pass --redis-addr, --mysql-dsn,
--kafka-brokers.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return af.run(cmd, o, args[0]) },
	}
	f := cmd.Flags()
	f.BoolVar(&af.asJSON, "json", false, "print the report as JSON")
	f.StringVar(&af.defaultSecret, "endpoints-secret", controllers.DefaultEndpointsSecret, "the operator's default endpoints Secret (its --default-secret)")
	f.StringVar(&af.redisAddr, "redis-addr", "", "use this Redis address (HOST:PORT, comma separated for a cluster) instead of the sale's")
	f.StringVar(&af.mysqlDSN, "mysql-dsn", "", "use this MySQL DSN instead of the sale's")
	f.StringSliceVar(&af.kafkaBrokers, "kafka-brokers", nil, "use these Kafka brokers instead of the sale's")
	f.DurationVar(&af.timeout, "timeout", 10*time.Second, "bound on connecting to each dependency")
	return cmd
}

func (af *auditFlags) run(cmd *cobra.Command, o *options, name string) error {
	ctx := cmd.Context()
	c, ns, err := o.client()
	if err != nil {
		return err
	}
	fs, err := getSale(ctx, c, ns, name)
	if err != nil {
		return err
	}
	ep, err := controllers.ResolveEndpoints(ctx, c, af.defaultSecret, fs)
	if err != nil {
		return fmt.Errorf("resolve the endpoints of %s: %w", ref(fs), err)
	}
	af.override(&ep)
	rdb, db, err := af.connect(ctx, ep)
	if err != nil {
		return err
	}
	defer func() { _ = rdb.Close(); _ = db.Close() }()
	a, err := audit.New(audit.Config{Sale: fs, Redis: rdb, Orders: orderdb.New(db), Brokers: ep.KafkaBrokers,
		Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))})
	if err != nil {
		return err
	}
	rep, err := a.Run(ctx)
	if err != nil {
		return fmt.Errorf("audit %s: %w", ref(fs), err)
	}
	return writeReport(cmd.OutOrStdout(), rep, af.asJSON)
}

// writeReport prints the table and a verdict, and fails when it does not hold.
func writeReport(w io.Writer, rep *audit.Report, asJSON bool) error {
	if asJSON {
		if err := rep.WriteJSON(w); err != nil {
			return err
		}
	} else {
		if err := rep.WriteText(w); err != nil {
			return err
		}
		verdict := "verdict: conserved\n"
		if !rep.OK {
			verdict = "verdict: NOT CONSERVED\n"
		}
		if _, err := io.WriteString(w, verdict); err != nil {
			return err
		}
	}
	if !rep.OK {
		return fmt.Errorf("%w: %s", ErrNotConserved, strings.Join(rep.Failures(), "; "))
	}
	return nil
}

func (af *auditFlags) override(ep *controllers.Endpoints) {
	if af.redisAddr != "" {
		ep.RedisAddrs = strings.Split(af.redisAddr, ",")
	}
	if af.mysqlDSN != "" {
		ep.MySQLDSN = af.mysqlDSN
	}
	if len(af.kafkaBrokers) > 0 {
		ep.KafkaBrokers = af.kafkaBrokers
	}
}

// connect opens Redis and MySQL, each checked with a round trip.
func (af *auditFlags) connect(ctx context.Context, ep controllers.Endpoints) (redis.UniversalClient, *sql.DB, error) {
	var rdb redis.UniversalClient
	if ep.RedisCluster {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: ep.RedisAddrs, Password: ep.RedisPassword, DialTimeout: af.timeout})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: ep.RedisAddrs[0], Password: ep.RedisPassword, DialTimeout: af.timeout})
	}
	pctx, cancel := context.WithTimeout(ctx, af.timeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("connect to redis %s: %w", strings.Join(ep.RedisAddrs, ","), err)
	}
	db, err := orderdb.Open(ep.MySQLDSN)
	if err == nil {
		if err = db.PingContext(pctx); err != nil {
			_ = db.Close()
		}
	}
	if err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("connect to mysql: %w", err)
	}
	return rdb, db, nil
}
