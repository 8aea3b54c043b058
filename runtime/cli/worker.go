package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
)

// workerFlags are the worker command's flags.
type workerFlags struct {
	sale           saleFlags
	brokers        []string
	kafkaVersion   string
	metricsAddr    string
	podID          string
	batchSize      int
	flush          time.Duration
	claimMinIdle   time.Duration
	maxAttempts    int
	sessionTimeout time.Duration
	concurrency    int
	shutdownGrace  time.Duration
	waitReplicas   int
}

func newWorkerCommand() *cobra.Command {
	var wf workerFlags
	cmd := &cobra.Command{
		Use:   "worker --file sale.yaml --redis-addr HOST:PORT --mysql-dsn DSN [--kafka-brokers a,b]",
		Short: "Run the order pipeline of a sale: Redis streams → Kafka → MySQL (or streams → MySQL without Kafka)",
		Long: `Run the order pipeline of a sale.

With spec.kafka in the manifest, the relay moves admitted orders from the SKU
streams in Redis to the sale's Kafka topic (idempotent producer, keyed by
user) and the consumer group writes them to MySQL in batches, committing
offsets only after the rows are durable. Without spec.kafka, the orders go
from the streams straight to MySQL. Either way an order is acknowledged at
its source only after it is durable, and shows "created" to result polling.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return wf.run(cmd) },
	}
	wf.bind(cmd)
	return cmd
}

func (wf *workerFlags) bind(cmd *cobra.Command) {
	wf.sale.bind(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&wf.brokers, "kafka-brokers", nil, "Kafka bootstrap brokers, comma separated (required when the sale has spec.kafka); env "+envKafkaBrokers)
	fromEnv(f, "kafka-brokers", envKafkaBrokers)
	f.StringVar(&wf.kafkaVersion, "kafka-version", "", "Kafka protocol version to speak (default "+kafkautil.DefaultVersion.String()+")")
	f.StringVar(&wf.metricsAddr, "metrics-addr", ":9090", "serve /metrics, /healthz and /readyz here (empty: off)")
	f.StringVar(&wf.podID, "pod-id", "", "this worker's name in the stream consumer group (default: env POD_NAME, else the hostname)")
	fromEnv(f, "pod-id", "POD_NAME")
	f.IntVar(&wf.batchSize, "batch-size", 500, "orders per MySQL transaction (and per stream read)")
	f.DurationVar(&wf.flush, "flush-interval", 50*time.Millisecond, "flush a partial batch this long after its first order")
	f.DurationVar(&wf.claimMinIdle, "claim-min-idle", 30*time.Second, "claim stream entries a dead worker left pending after this long")
	f.IntVar(&wf.maxAttempts, "max-attempts", 3, "tries of an order MySQL refuses for its data before it is dead-lettered")
	f.DurationVar(&wf.sessionTimeout, "kafka-session-timeout", 10*time.Second, "Kafka consumer group session timeout")
	f.IntVar(&wf.concurrency, "stream-readers", 2, "readers per SKU stream in Redis-only mode")
	// Only replicas: the AOF setting (--wait-aof of the seckill) needs
	// nothing from the worker. An order on the primary's fsynced AOF
	// survives a restart of that primary, stream entry and all, and is
	// moved after the restart; only a failover to a replica can lose an
	// order the worker already stored, and that is what replicas cover.
	f.IntVar(&wf.waitReplicas, "wait-replicas", 0, "move an order out of its stream only once this many Redis replicas acknowledged it (Redis WAIT), so a failover never sells its unit twice; default: the manifest's spec.redis.durability.replicas")
	f.DurationVar(&wf.shutdownGrace, "shutdown-grace", streamgroup.DefaultGrace, "on SIGTERM, finish the batches in hand for at most this long; what is not done by then is redelivered (keep it below the pod's terminationGracePeriodSeconds)")
}

// run builds the sale's pipeline from the flags and runs it until the
// command ends.
func (wf *workerFlags) run(cmd *cobra.Command) error {
	ko := kafkautil.Options{}
	var err error
	if wf.kafkaVersion != "" {
		if ko.Version, err = sarama.ParseKafkaVersion(wf.kafkaVersion); err != nil {
			return fmt.Errorf("--kafka-version: %w", err)
		}
	}
	brokers := nonEmpty(wf.brokers)
	podID := wf.podID
	if podID == "" {
		podID, _ = os.Hostname()
	}
	env, err := wf.sale.open(cmd.Context())
	if err != nil {
		return err
	}
	defer env.Close()
	fs, log := env.sale, env.log
	waitReplicas, err := wf.replicas(cmd, fs)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	w, err := worker.New(worker.Config{
		Sale: fs, Redis: env.rdb, DB: env.db, Brokers: brokers, Kafka: ko, PodID: podID,
		BatchSize: wf.batchSize, FlushInterval: wf.flush, ClaimMinIdle: wf.claimMinIdle, MaxAttempts: wf.maxAttempts,
		SessionTimeout: wf.sessionTimeout, SinkConcurrency: wf.concurrency, ShutdownGrace: wf.shutdownGrace,
		WaitReplicas: waitReplicas, Backoff: backoff.Default, Registry: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	if wf.metricsAddr != "" {
		if err := serveWorkerProbes(cmd.Context(), wf.metricsAddr, reg, w, log); err != nil {
			return err
		}
	}
	mode := "redis-only"
	if worker.KafkaMode(fs) {
		mode = "kafka"
	}
	log.Info("Running the order pipeline", "sale", fs.SaleKey(), "mode", mode, "pod", podID,
		"db", redactDSN(wf.sale.dsn), "brokers", strings.Join(brokers, ","), "batch", wf.batchSize, "flush", wf.flush, "waitReplicas", waitReplicas)
	err = w.Run(cmd.Context())
	log.Info("Order pipeline stopped", "sale", fs.SaleKey(), "err", err)
	return err
}

// replicas is --wait-replicas if given, else the manifest's
// spec.redis.durability.replicas.
func (wf *workerFlags) replicas(cmd *cobra.Command, fs *v1alpha1.FlashSale) (int, error) {
	if cmd.Flags().Changed("wait-replicas") {
		if wf.waitReplicas < 0 {
			return 0, fmt.Errorf("--wait-replicas must be 0 or more, not %d", wf.waitReplicas)
		}
		return wf.waitReplicas, nil
	}
	if d := fs.Spec.Redis.Durability; d != nil {
		return int(d.Replicas), nil
	}
	return 0, nil
}

func serveWorkerProbes(ctx context.Context, addr string, reg *prometheus.Registry, w *worker.Worker, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = rw.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Ready() {
			http.Error(rw, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("Metrics server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	log.Info("Serving metrics and probes", "addr", ln.Addr().String())
	return nil
}
