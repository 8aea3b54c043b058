// Package worker assembles the order pipeline of one sale in one process:
// relay (streams → Kafka) and consumer (Kafka → MySQL) when the sale has
// spec.kafka, or the Redis-only stream sink (streams → MySQL) when it has not.
// `flashsale worker` runs it; tests and the benchmark run it in-process.
package worker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/consumer"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/relay"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/streamsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
)

// Config is one worker.
type Config struct {
	Sale  *v1alpha1.FlashSale
	Redis redis.UniversalClient
	DB    *sql.DB
	// Brokers of Kafka; required exactly when the sale has spec.kafka.
	Brokers []string
	// Kafka are the client options (a zero Version means kafkautil.DefaultVersion);
	// their Brokers and ClientID are set from Brokers and PodID.
	Kafka kafkautil.Options
	// PodID names this worker in the stream group and the Kafka client id.
	PodID string
	// BatchSize and FlushInterval of MySQL batches (defaults 500 and 50ms).
	BatchSize     int
	FlushInterval time.Duration
	// ClaimMinIdle is how long a dead worker's stream entries wait before
	// another worker claims them (default 30s).
	ClaimMinIdle time.Duration
	// MaxAttempts of a row MySQL refuses, before it is dead-lettered (default 3).
	MaxAttempts int
	// SessionTimeout of the Kafka group membership (default 10s).
	SessionTimeout time.Duration
	// SinkConcurrency is the number of readers per SKU stream in Redis-only mode (default 2).
	SinkConcurrency int
	// ShutdownGrace bounds finishing the batches in hand after the context
	// ended, in every part: relay, consumer and stream sink (default 15s).
	ShutdownGrace time.Duration
	// WaitReplicas, when above 0, moves an order out of its stream only once
	// that many Redis replicas have it (`flashsale worker --wait-replicas`,
	// spec.redis.durability.replicas): an order the primary took but no
	// replica has never reaches MySQL or Kafka, so a failover cannot sell
	// its unit twice. Such orders wait, pending in the stream, while the
	// primary lacks replicas (flashsale_worker_orders_held_for_replicas).
	WaitReplicas int
	Backoff      backoff.Backoff
	Registry     prometheus.Registerer
	Logger       *slog.Logger
}

// Worker runs the pipeline.
type Worker struct {
	cfg    Config
	writer *dbsink.Writer
	relay  *relay.Relay
	cons   *consumer.Consumer
	sink   *streamsink.Sink
	ready  atomic.Bool
}

// KafkaMode reports whether fs moves orders through Kafka.
func KafkaMode(fs *v1alpha1.FlashSale) bool { return fs.Spec.Kafka != nil }

// New checks cfg against the sale and builds the parts.
func New(cfg Config) (*Worker, error) {
	if cfg.Sale == nil || cfg.Redis == nil || cfg.DB == nil {
		return nil, errors.New("worker: sale, redis and MySQL are required")
	}
	if cfg.PodID == "" {
		return nil, errors.New("worker: pod id is required")
	}
	fs := cfg.Sale
	switch {
	case KafkaMode(fs) && len(cfg.Brokers) == 0:
		return nil, fmt.Errorf("sale %s has spec.kafka: give the brokers with --kafka-brokers (or FLASHSALE_KAFKA_BROKERS)", fs.SaleKey())
	case !KafkaMode(fs) && len(cfg.Brokers) > 0:
		return nil, fmt.Errorf("sale %s has no spec.kafka, so it runs Redis-only; drop --kafka-brokers or add spec.kafka to the manifest", fs.SaleKey())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	saleKey := fs.SaleKey()
	skus := fs.SKUIDs()
	bk := orderstate.BucketsOf(fs)
	replication := streamgroup.NewReplicaMetrics(cfg.Registry)
	w := &Worker{cfg: cfg}
	w.writer = dbsink.New(dbsink.Config{
		Store: orderdb.New(cfg.DB), Redis: cfg.Redis, Buckets: bk, SaleKey: saleKey, MaxAttempts: cfg.MaxAttempts,
		Backoff: cfg.Backoff, Metrics: dbsink.NewMetrics(cfg.Registry), Logger: cfg.Logger,
	})
	var err error
	if KafkaMode(fs) {
		ko := cfg.Kafka
		ko.Brokers = cfg.Brokers
		ko.ClientID = "flashsale-worker-" + cfg.PodID
		w.relay, err = relay.New(relay.Config{
			SaleKey: saleKey, SKUs: skus, Buckets: bk, Redis: cfg.Redis, Kafka: ko, Partitions: fs.Spec.Kafka.Partitions,
			Consumer: cfg.PodID, Count: int64(cfg.BatchSize), MinIdle: cfg.ClaimMinIdle, Backoff: cfg.Backoff,
			ShutdownGrace: cfg.ShutdownGrace, WaitReplicas: cfg.WaitReplicas, Replication: replication,
			Metrics: relay.NewMetrics(cfg.Registry), Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
		w.cons, err = consumer.New(consumer.Config{
			SaleKey: saleKey, Kafka: ko, Partitions: fs.Spec.Kafka.Partitions,
			Writer: w.writer, BatchSize: cfg.BatchSize, FlushInterval: cfg.FlushInterval,
			SessionTimeout: cfg.SessionTimeout, ShutdownGrace: cfg.ShutdownGrace, Backoff: cfg.Backoff,
			Metrics: consumer.NewMetrics(cfg.Registry), Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
	} else {
		w.sink, err = streamsink.New(streamsink.Config{
			SaleKey: saleKey, SKUs: skus, Buckets: bk, Redis: cfg.Redis, Writer: w.writer, Consumer: cfg.PodID,
			Concurrency: cfg.SinkConcurrency, BatchSize: int64(cfg.BatchSize), MinIdle: cfg.ClaimMinIdle,
			Backoff: cfg.Backoff, ShutdownGrace: cfg.ShutdownGrace,
			WaitReplicas: cfg.WaitReplicas, Replication: replication, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Ready reports whether the pipeline is running.
func (w *Worker) Ready() bool { return w.ready.Load() }

// Run runs the pipeline until ctx ends, then finishes the batches in hand.
func (w *Worker) Run(ctx context.Context) error {
	v, err := orderdb.Version(ctx, w.cfg.DB)
	if err != nil {
		return fmt.Errorf("read MySQL schema version: %w", err)
	}
	if v == 0 {
		return errors.New("MySQL has no seckill_order schema yet: run `flashsale migrate` first")
	}
	w.ready.Store(true)
	defer w.ready.Store(false)
	if w.sink != nil {
		return w.sink.Run(ctx)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.relay.Run(ctx) })
	wg.Go(func() { _ = w.cons.Run(ctx) })
	wg.Wait()
	return nil
}
