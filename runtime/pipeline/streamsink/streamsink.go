// Package streamsink is the Redis-only order pipeline: without Kafka, the
// worker reads the SKU streams with the relay consumer group and writes
// batches straight to MySQL. An entry is XACKed and XDELed only after the
// transaction holding its order committed (and the order shows "created");
// an entry that can never be stored moves to the SKU's dead-letter stream
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
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Config configures a Sink.
type Config struct {
	Sale   string
	SKUs   []string
	Redis  redis.UniversalClient
	Writer *dbsink.Writer
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
	// ShutdownGrace bounds finishing the batch in hand after ctx ended (default 15s).
	ShutdownGrace time.Duration
	Logger        *slog.Logger
}

// Sink is the Redis-only pipeline.
type Sink struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Sink.
func New(cfg Config) (*Sink, error) {
	if cfg.Sale == "" || len(cfg.SKUs) == 0 || cfg.Redis == nil || cfg.Writer == nil || cfg.Consumer == "" {
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
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sink{cfg: cfg, log: cfg.Logger.With("component", "streamsink")}, nil
}

// Run moves orders until ctx ends, then finishes the batches in hand.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, sku := range s.cfg.SKUs {
		for i := range s.cfg.Concurrency {
			name := s.cfg.Consumer
			if i > 0 {
				name = fmt.Sprintf("%s-%d", s.cfg.Consumer, i)
			}
			wg.Go(func() { s.run(ctx, sku, name) })
		}
	}
	wg.Wait()
	return nil
}

func (s *Sink) run(ctx context.Context, sku, consumer string) {
	k := keys.ForSKU(s.cfg.Sale, sku)
	rd := &streamgroup.Reader{
		RDB: s.cfg.Redis, Stream: k.Stream, Group: keys.RelayGroup, Consumer: consumer,
		Count: s.cfg.BatchSize, Block: s.cfg.Block, MinIdle: s.cfg.MinIdle,
	}
	log := s.log.With("sku", sku, "consumer", consumer)
	finish, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(s.cfg.ShutdownGrace, cancel) })
	defer stop()
	for try := 1; ctx.Err() == nil; {
		msgs, err := rd.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("Reading the order stream failed; retrying", "err", err)
			_ = s.cfg.Backoff.Sleep(ctx, try)
			try++
			continue
		}
		try = 1
		if len(msgs) == 0 {
			continue
		}
		if err := s.store(finish, k, msgs, log); err != nil {
			log.Warn("Batch left pending in Redis", "entries", len(msgs), "err", err)
		}
	}
}

// store commits msgs (or dead-letters them), then acknowledges them.
func (s *Sink) store(ctx context.Context, k keys.SKU, msgs []redis.XMessage, log *slog.Logger) error {
	items := make([]dbsink.Item, 0, len(msgs))
	src := make([]redis.XMessage, 0, len(msgs))
	var ids []string
	for _, m := range msgs {
		if m.Values == nil { // deleted while pending
			ids = append(ids, m.ID)
			continue
		}
		o, err := order.FromStream(m.Values)
		items = append(items, dbsink.Item{Order: o, Err: err})
		src = append(src, m)
	}
	var dead []streamgroup.DeadEntry
	deadIdx := map[int]bool{}
	err := s.cfg.Writer.Write(ctx, items, func(_ context.Context, i int, reason string, attempts int) error {
		// Recorded in the MULTI below, together with the acknowledgement.
		dead = append(dead, streamgroup.DeadEntry{Msg: src[i], Reason: reason, Attempts: attempts})
		deadIdx[i] = true
		return nil
	})
	if err != nil {
		return err
	}
	for i, m := range src {
		if !deadIdx[i] {
			ids = append(ids, m.ID)
		}
	}
	for try := 1; ; try++ {
		err := streamgroup.Done(ctx, s.cfg.Redis, k.Stream, keys.RelayGroup, k.DeadLetters, ids, dead)
		if err == nil {
			return nil
		}
		// The orders are durable; an unacknowledged entry is stored again
		// later as a duplicate, which is harmless. Still, try to avoid it.
		log.Warn("Acknowledging stored entries failed; retrying", "entries", len(ids), "attempt", try, "err", err)
		if serr := s.cfg.Backoff.Sleep(ctx, try); serr != nil {
			return err
		}
	}
}
