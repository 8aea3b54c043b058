// Package streamsink is the Redis-only order pipeline: without Kafka, the
// worker reads the SKU streams (every bucket's, for a SKU split into
// buckets) with the relay consumer group and writes
// batches straight to MySQL. An entry is XACKed and XDELed only after the
// transaction holding its order committed (and the order shows "created");
// an entry that can never be stored moves to its stream's dead-letter stream
// with its reason, in the same MULTI that removes it from the order stream.
package streamsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Config configures a Sink.
type Config struct {
	// SaleKey is "namespace/name"; SKUs are the ids whose streams are
	// read, the stream of every bucket of each (Buckets: nil when no SKU is
	// split).
	SaleKey string
	SKUs    []string
	Buckets orderstate.Buckets
	Redis   redis.UniversalClient
	Writer  *dbsink.Writer
	// Consumer is this process's name in the stream group (the pod id).
	Consumer string
	// Concurrency is how many readers each SKU stream gets (default 2): one
	// reads while another waits for MySQL. Each is its own group consumer.
	Concurrency int
	// BatchSize is the most entries per transaction (default 500).
	BatchSize int64
	Block     time.Duration
	MinIdle   time.Duration
	Backoff   backoff.Backoff
	// ShutdownGrace bounds finishing the batch in hand after ctx ended
	// (default streamgroup.DefaultGrace).
	ShutdownGrace time.Duration
	// WaitReplicas, when above 0, stores an order only once that many Redis
	// replicas have it (streamgroup.Reader.WaitReplicas); Replication counts
	// those waits.
	WaitReplicas int
	Replication  *streamgroup.ReplicaMetrics
	Logger       *slog.Logger
}

// Sink is the Redis-only pipeline.
type Sink struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Sink.
func New(cfg Config) (*Sink, error) {
	if cfg.SaleKey == "" || len(cfg.SKUs) == 0 || cfg.Redis == nil || cfg.Writer == nil || cfg.Consumer == "" {
		return nil, errors.New("streamsink: sale, SKUs, redis, writer and consumer are required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff = backoff.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sink{cfg: cfg, log: cfg.Logger.With("component", "streamsink")}, nil
}

// Run moves orders until ctx ends, then finishes the batches in hand within
// ShutdownGrace.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, k := range s.cfg.Buckets.All(s.cfg.SaleKey, s.cfg.SKUs) {
		for i := range s.cfg.Concurrency {
			name := s.cfg.Consumer
			if i > 0 {
				name = fmt.Sprintf("%s-%d", s.cfg.Consumer, i)
			}
			loop := &streamgroup.Loop{
				Reader: streamgroup.Reader{
					RDB: s.cfg.Redis, Stream: k.Stream, Group: keys.RelayGroup, Consumer: name,
					Count: s.cfg.BatchSize, Block: s.cfg.Block, MinIdle: s.cfg.MinIdle,
					WaitReplicas: s.cfg.WaitReplicas, Replication: s.cfg.Replication,
				},
				DeadLetters: k.DeadLetters, Handle: s.store, Backoff: s.cfg.Backoff, Grace: s.cfg.ShutdownGrace,
				Logger: s.log.With("sku", k.ID, "bucket", k.Bucket, "consumer", name),
			}
			wg.Go(func() { loop.Run(ctx) })
		}
	}
	wg.Wait()
	return nil
}

// store is the loop's handler: it commits msgs to MySQL (or dead-letters
// them), then acknowledges them.
func (s *Sink) store(ctx context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
	items := make([]dbsink.Item, len(msgs))
	for i, m := range msgs {
		o, err := order.FromStream(m.Values)
		items[i] = dbsink.Item{Order: o, Err: err}
	}
	var dead []streamgroup.DeadEntry
	deadIdx := map[int]bool{}
	err := s.cfg.Writer.Write(ctx, items, func(_ context.Context, i int, reason string, attempts int) error {
		// Recorded by ack below, in the MULTI that removes the entry.
		dead = append(dead, streamgroup.DeadEntry{Msg: msgs[i], Reason: reason, Attempts: attempts})
		deadIdx[i] = true
		return nil
	})
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(msgs))
	for i, m := range msgs {
		if !deadIdx[i] {
			ids = append(ids, m.ID)
		}
	}
	// The orders are durable; an entry left unacknowledged is stored again
	// later as a duplicate, which is harmless.
	return ack(ids, dead)
}
