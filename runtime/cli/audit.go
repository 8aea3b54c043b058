package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// ErrAuditFailed is returned when the conservation law does not hold, an
// order is lost or stranded, or Redis disagrees with itself: the command
// exits non-zero.
var ErrAuditFailed = errors.New("audit failed")

// auditFlags are the audit command's flags.
type auditFlags struct {
	sf           saleFlags
	brokers      []string
	asJSON       bool
	repair       bool
	archive      bool
	abandon      bool
	stuckAfter   time.Duration
	waitReplicas int
	waitTimeout  time.Duration
	metricsAddr  string
	every        time.Duration
}

func newAuditCommand() *cobra.Command {
	var af auditFlags
	cmd := &cobra.Command{
		Use:   "audit --file sale.yaml --redis-addr HOST:PORT --mysql-dsn DSN [--kafka-brokers a,b] [--json] [--repair]",
		Short: "Check that every unit of stock and every order of a sale is accounted for",
		Long: `Compare Redis (stock, debt, buyers, stream, expiry set, orders), Kafka
(consumer-group lag, dead-letter topic) and MySQL for a sale, per SKU, and check

    initial = remaining + in flight (stream + Kafka + dead letters) + created + paid + returning

counting each order once, by its order number: every order the Redis snapshot
shows holding a unit is looked for in MySQL (its status now), else the stream,
Kafka, a dead-letter store. The law holds exactly while orders move, and breaks
as soon as one vanishes. Orders admitted in Redis that are nowhere downstream
are reported LOST; valid orders only in a dead-letter store are STRANDED. The
command exits non-zero when the law does not hold, anything is lost or
stranded, or Redis disagrees with itself.

--repair fixes what is safe: valid orders stranded in a stream (stuck longer
than --stuck-after) or in a dead-letter topic/stream are inserted into MySQL
and acknowledged, each batch only once --wait-replicas replicas have its
stream entries (by default the manifest's spec.redis.durability.replicas:
the wait the worker makes, so a failover cannot sell their units again;
entries the replicas lack stay, reported as failed repairs). When MySQL
refuses a batch, its orders are tried one by one: those MySQL takes are
stored, each refused one is reported with MySQL's error. Stale expiry entries
of paid orders are removed; statuses shown to result polling are brought up to
MySQL's. It then audits again.

--archive copies every message of the dead-letter streams and topics that is
not an order (and any still in the order streams or behind the Kafka group)
into the MySQL table seckill_dead_letter, which outlives the sale, and deletes
it from the dead-letter streams; the operator does the same before teardown.
--abandon-stranded also copies the valid orders MySQL lacks there (they stay
in their stores too): what spec.teardown.strandedOrders: Abandon does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return af.run(cmd) },
	}
	af.bind(cmd)
	return cmd
}

func (af *auditFlags) bind(cmd *cobra.Command) {
	af.sf.bind(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&af.brokers, "kafka-brokers", nil, "Kafka bootstrap brokers, comma separated (omit for a Redis-only sale); env "+envKafkaBrokers)
	fromEnv(f, "kafka-brokers", envKafkaBrokers)
	f.BoolVar(&af.asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&af.repair, "repair", false, "fix what is safe to fix, then audit again")
	f.BoolVar(&af.archive, "archive", false, "keep the dead letters that are not orders in the MySQL table seckill_dead_letter (after --repair), then audit again")
	f.BoolVar(&af.abandon, "abandon-stranded", false, "with --archive: keep the valid orders MySQL lacks there too")
	f.DurationVar(&af.stuckAfter, "stuck-after", 5*time.Minute, "a stream entry waiting this long (pending with a dead worker, or undelivered) is stuck")
	f.IntVar(&af.waitReplicas, "wait-replicas", -1, "with --repair: replicas that must have a stuck or dead-lettered stream entry before its order is stored in MySQL (-1: the manifest's spec.redis.durability.replicas)")
	f.DurationVar(&af.waitTimeout, "wait-timeout", audit.DefaultWaitTimeout, "with --repair: how long to wait for those replicas; entries they lack are left where they are")
	f.StringVar(&af.metricsAddr, "metrics-addr", "", "instead of printing once, audit every --every and serve the results as metrics here")
	f.DurationVar(&af.every, "every", 30*time.Second, "audit interval with --metrics-addr")
}

// run audits once and prints the report, failing when the audit does not
// hold; with --metrics-addr it audits every --every and serves the results.
func (af *auditFlags) run(cmd *cobra.Command) error {
	env, err := af.sf.open(cmd.Context())
	if err != nil {
		return err
	}
	defer env.Close()
	waitReplicas := af.waitReplicas
	if waitReplicas < 0 {
		waitReplicas = audit.DurabilityReplicas(env.sale)
	}
	a, err := audit.New(audit.Config{Sale: env.sale, Redis: env.rdb, Orders: orderdb.New(env.db), Brokers: nonEmpty(af.brokers),
		StuckAfter: af.stuckAfter, WaitReplicas: waitReplicas, WaitTimeout: af.waitTimeout, Logger: env.log})
	if err != nil {
		return err
	}
	if af.abandon && !af.archive {
		return errors.New("--abandon-stranded needs --archive")
	}
	if af.archive {
		// A database migrated by an older version lacks seckill_dead_letter.
		if _, err := orderdb.Migrate(cmd.Context(), env.db); err != nil {
			return err
		}
	}
	m := audit.NewMetrics()
	fix := auditFixes{repair: af.repair, archive: af.archive, abandon: af.abandon}
	once := func(ctx context.Context) (*audit.Report, error) {
		return auditOnce(ctx, a, m, fix, env.sale.SaleKey(), env.log)
	}
	if af.metricsAddr != "" {
		return serveAudit(cmd.Context(), af.metricsAddr, af.every, m, once, env.log)
	}
	rep, err := once(cmd.Context())
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if af.asJSON {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteText(out)
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		return ErrAuditFailed
	}
	return nil
}

// auditFixes are what auditOnce does beyond auditing.
type auditFixes struct{ repair, archive, abandon bool }

// auditOnce audits the sale saleKey; with repair it fixes what is safe,
// with archive it keeps the dead letters in seckill_dead_letter, and audits
// again, the report then carrying the repairs and the first report. It
// records the result (or the failure) in m.
func auditOnce(ctx context.Context, a *audit.Auditor, m *audit.Metrics, fix auditFixes, saleKey string,
	log interface{ Error(string, ...any) },
) (*audit.Report, error) {
	rep, err := a.Run(ctx)
	if err != nil {
		m.ObserveError(saleKey)
		return nil, err
	}
	if fix.repair || fix.archive {
		var repairs []audit.Repair
		var rerr error
		if fix.repair {
			repairs, rerr = a.Repair(ctx, rep)
		}
		if fix.archive {
			archived, aerr := a.Archive(ctx, rep, fix.abandon)
			// Valid orders left unarchived are the audit's stranded
			// orders, reported below: this command deletes no store.
			aerr = audit.WithoutUnkept(aerr)
			repairs, rerr = append(repairs, archived...), errors.Join(rerr, aerr)
		}
		after, err := a.Run(ctx)
		if err != nil {
			m.ObserveError(saleKey)
			return nil, errors.Join(rerr, err)
		}
		after.Repairs, after.Before = repairs, rep
		rep = after
		if rerr != nil {
			log.Error("Some repairs failed", "err", rerr)
		}
	}
	m.Observe(rep)
	return rep, nil
}

// serveAudit audits every interval and serves the last results as metrics
// until ctx ends.
func serveAudit(ctx context.Context, addr string, every time.Duration, m *audit.Metrics,
	once func(context.Context) (*audit.Report, error), log interface {
		Error(string, ...any)
		Info(string, ...any)
	},
) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("Auditing continuously", "addr", ln.Addr().String(), "every", every)
	for {
		if rep, err := once(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error("Audit failed", "err", err)
		} else if !rep.OK {
			log.Error("Audit does not hold", "why", fmt.Sprint(rep.Failures()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}
