// Package relay moves admitted orders from the SKU streams in Redis to the
// sale's Kafka topic. Each SKU stream (each bucket's, for a SKU split into
// buckets) is read by its own goroutine as one consumer of the relay group
// (streams of different SKUs or buckets may live on different cluster
// shards); a batch is produced with an idempotent producer keyed by user,
// and only the entries Kafka acknowledged are XACKed and XDELed, so the
// stream holds exactly the orders still in flight. While Kafka is away the
// entries stay in Redis and the batch is retried with backoff.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Config configures a Relay.
type Config struct {
	// SaleKey is "namespace/name"; SKUs are the ids whose streams are
	// relayed, the stream of every bucket of each (Buckets: nil when no SKU
	// is split).
	SaleKey string
	SKUs    []string
	Buckets orderstate.Buckets
	Redis   redis.UniversalClient
	// Kafka is where the sale's topic lives; Partitions is used when the
	// relay has to (re)create the topic.
	Kafka      kafkautil.Options
	Partitions int32
	// Consumer is this process's name in the stream group (the pod id).
	Consumer string
	// Count, Block, MinIdle: see streamgroup.Reader (defaults 500, 1s, 30s).
	Count   int64
	Block   time.Duration
	MinIdle time.Duration
	Backoff backoff.Backoff
	// ShutdownGrace bounds finishing the batch in hand after ctx ended
	// (default streamgroup.DefaultGrace).
	ShutdownGrace time.Duration
	// WaitReplicas, when above 0, relays an order only once that many
	// Redis replicas have it (streamgroup.Reader.WaitReplicas); Replication
	// counts those waits.
	WaitReplicas int
	Replication  *streamgroup.ReplicaMetrics
	Metrics      *Metrics
	Logger       *slog.Logger
}

// Relay is the stream → Kafka half of the pipeline.
type Relay struct {
	cfg   Config
	topic string
	prod  *kafkautil.Producer
	m     *Metrics
	log   *slog.Logger
}

// New checks cfg and returns a Relay.
func New(cfg Config) (*Relay, error) {
	if cfg.SaleKey == "" || len(cfg.SKUs) == 0 || cfg.Redis == nil || len(cfg.Kafka.Brokers) == 0 {
		return nil, errors.New("relay: sale, SKUs, redis and kafka brokers are required")
	}
	if cfg.Consumer == "" {
		return nil, errors.New("relay: consumer name (pod id) is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff = backoff.Default
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 12
	}
	topic := keys.Topic(cfg.SaleKey)
	if cfg.Kafka.ClientID == "" {
		cfg.Kafka.ClientID = "flashsale-relay-" + cfg.Consumer
	}
	return &Relay{
		cfg: cfg, topic: topic, m: cfg.Metrics, log: cfg.Logger.With("component", "relay"),
		prod: kafkautil.NewProducer(cfg.Kafka, map[string]int32{topic: cfg.Partitions}),
	}, nil
}

// Run relays until ctx ends; the batch in hand when it ends is still
// produced and acknowledged within ShutdownGrace. It returns nil after a
// clean stop.
func (r *Relay) Run(ctx context.Context) error {
	defer r.prod.Close()
	var wg sync.WaitGroup
	for _, k := range r.cfg.Buckets.All(r.cfg.SaleKey, r.cfg.SKUs) {
		log := r.log.With("sku", k.ID, "bucket", k.Bucket)
		loop := &streamgroup.Loop{
			Reader: streamgroup.Reader{
				RDB: r.cfg.Redis, Stream: k.Stream, Group: keys.RelayGroup, Consumer: r.cfg.Consumer,
				Count: r.cfg.Count, Block: r.cfg.Block, MinIdle: r.cfg.MinIdle,
				WaitReplicas: r.cfg.WaitReplicas, Replication: r.cfg.Replication,
			},
			DeadLetters: k.DeadLetters,
			Handle: func(ctx context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
				return r.relay(ctx, msgs, ack, log)
			},
			Backoff: r.cfg.Backoff, Grace: r.cfg.ShutdownGrace,
			RedisErrors: r.m.Errors.WithLabelValues("redis"), Logger: log,
		}
		wg.Go(func() { loop.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// relay is the loop's handler: it produces msgs and acknowledges what Kafka
// took, then retries the rest with backoff while ctx lives. An entry that is
// not an order of this sale is dead-lettered.
func (r *Relay) relay(ctx context.Context, msgs []redis.XMessage, ack streamgroup.Ack, log *slog.Logger) error {
	var (
		done []string
		dead []streamgroup.DeadEntry
		out  = make([]*sarama.ProducerMessage, 0, len(msgs))
	)
	for _, m := range msgs {
		o, err := order.FromStream(m.Values)
		if err == nil && o.Sale != r.cfg.SaleKey {
			err = fmt.Errorf("order %s belongs to sale %q", o.OrderNo, o.Sale)
		}
		var val []byte
		if err == nil {
			val, err = o.Marshal()
		}
		if err != nil {
			dead = append(dead, streamgroup.DeadEntry{Msg: m, Reason: err.Error(), Attempts: 1})
			continue
		}
		out = append(out, &sarama.ProducerMessage{
			Topic: r.topic, Key: sarama.StringEncoder(o.User), Value: sarama.ByteEncoder(val),
			Metadata: m.ID,
		})
	}
	for try := 1; ; try++ {
		failed, err := r.send(out)
		if len(out) > len(failed) {
			ok := make(map[*sarama.ProducerMessage]bool, len(failed))
			for _, f := range failed {
				ok[f] = true
			}
			for _, p := range out {
				if !ok[p] {
					done = append(done, p.Metadata.(string))
				}
			}
			r.m.Relayed.Add(float64(len(out) - len(failed)))
		}
		if len(done) > 0 || len(dead) > 0 {
			if aerr := ack(done, dead); aerr != nil {
				return aerr
			}
			r.m.DeadLetters.Add(float64(len(dead)))
			done, dead = done[:0], nil
		}
		if err == nil {
			return nil
		}
		out = failed
		r.m.Errors.WithLabelValues("kafka").Inc()
		log.Warn("Kafka did not take the batch; the orders stay in Redis, retrying", "orders", len(out), "attempt", try, "err", err)
		if serr := r.cfg.Backoff.Sleep(ctx, try); serr != nil {
			return fmt.Errorf("%d orders left pending in Redis: %w", len(out), err)
		}
	}
}

// send produces out and returns the messages Kafka did not acknowledge.
func (r *Relay) send(out []*sarama.ProducerMessage) ([]*sarama.ProducerMessage, error) {
	if len(out) == 0 {
		return nil, nil
	}
	prod, err := r.prod.Get()
	if err != nil {
		return out, err
	}
	start := time.Now()
	err = prod.SendMessages(out)
	r.m.ProduceLatency.Observe(time.Since(start).Seconds())
	if err == nil {
		return nil, nil
	}
	// Rebuild the producer: Kafka may have restarted or lost the topic.
	r.prod.Invalidate(prod)
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) {
		failed := make([]*sarama.ProducerMessage, 0, len(perrs))
		for _, pe := range perrs {
			failed = append(failed, pe.Msg)
		}
		return failed, perrs[0].Err
	}
	return out, err
}

// Metrics of the relay.
type Metrics struct {
	Relayed        prometheus.Counter
	DeadLetters    prometheus.Counter
	Errors         *prometheus.CounterVec
	ProduceLatency prometheus.Histogram
}

// NewMetrics creates the relay metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_orders_relayed_total",
			Help: "Orders produced to Kafka and acknowledged in the Redis stream.",
		}),
		DeadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_relay_dead_letters_total",
			Help: "Stream entries that are not orders, moved to the SKU's dead-letter stream.",
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_relay_errors_total",
			Help: "Relay failures by dependency (each is retried).",
		}, []string{"dependency"}),
		ProduceLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_worker_produce_seconds",
			Help:    "Time for Kafka to acknowledge one relayed batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Relayed, m.DeadLetters, m.Errors, m.ProduceLatency)
	}
	return m
}
