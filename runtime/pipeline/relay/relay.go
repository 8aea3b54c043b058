// Package relay moves admitted orders from the SKU streams in Redis to the
// sale's Kafka topic. Each SKU stream is read by its own goroutine as one
// consumer of the relay group (streams of different SKUs may live on
// different cluster shards); a batch is produced with an idempotent producer
// keyed by user, and only the entries Kafka acknowledged are XACKed and
// XDELed, so the stream holds exactly the orders still in flight. While Kafka
// is away the entries stay in Redis and the batch is retried with backoff.
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
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Config configures a Relay.
type Config struct {
	// Sale is "namespace/name"; SKUs are the ids whose streams are relayed.
	Sale  string
	SKUs  []string
	Redis redis.UniversalClient
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
	Metrics *Metrics
	Logger  *slog.Logger
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
	if cfg.Sale == "" || len(cfg.SKUs) == 0 || cfg.Redis == nil || len(cfg.Kafka.Brokers) == 0 {
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
	topic := keys.Topic(cfg.Sale)
	if cfg.Kafka.ClientID == "" {
		cfg.Kafka.ClientID = "flashsale-relay-" + cfg.Consumer
	}
	return &Relay{
		cfg: cfg, topic: topic, m: cfg.Metrics, log: cfg.Logger.With("component", "relay"),
		prod: kafkautil.NewProducer(cfg.Kafka, map[string]int32{topic: cfg.Partitions}),
	}, nil
}

// Run relays until ctx ends; the batch in hand when it ends is still
// produced and acknowledged. It returns nil after a clean stop.
func (r *Relay) Run(ctx context.Context) error {
	defer r.prod.Close()
	var wg sync.WaitGroup
	for _, sku := range r.cfg.SKUs {
		wg.Go(func() { r.runSKU(ctx, sku) })
	}
	wg.Wait()
	return nil
}

func (r *Relay) runSKU(ctx context.Context, sku string) {
	k := keys.ForSKU(r.cfg.Sale, sku)
	rd := &streamgroup.Reader{
		RDB: r.cfg.Redis, Stream: k.Stream, Group: keys.RelayGroup, Consumer: r.cfg.Consumer,
		Count: r.cfg.Count, Block: r.cfg.Block, MinIdle: r.cfg.MinIdle,
	}
	log := r.log.With("sku", sku)
	// The batch in hand is finished with this context even after ctx ended,
	// for a bounded time (SIGTERM gives a pod 30s by default).
	finish, cancel := graceful(ctx, 15*time.Second)
	defer cancel()
	for try := 1; ctx.Err() == nil; {
		msgs, err := rd.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.m.Errors.WithLabelValues("redis").Inc()
			log.Warn("Reading the order stream failed; retrying", "err", err)
			_ = r.cfg.Backoff.Sleep(ctx, try)
			try++
			continue
		}
		try = 1
		if len(msgs) == 0 {
			continue
		}
		if err := r.relay(finish, k, msgs, log); err != nil && finish.Err() == nil {
			log.Error("Relaying a batch failed", "err", err)
		}
	}
}

// relay produces msgs and acknowledges what Kafka took, retrying the rest.
func (r *Relay) relay(ctx context.Context, k keys.SKU, msgs []redis.XMessage, log *slog.Logger) error {
	var (
		done []string
		dead []streamgroup.DeadEntry
		out  = make([]*sarama.ProducerMessage, 0, len(msgs))
	)
	for _, m := range msgs {
		if m.Values == nil { // deleted while pending: nothing to send
			done = append(done, m.ID)
			continue
		}
		o, err := order.FromStream(m.Values)
		if err == nil && o.Sale != r.cfg.Sale {
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
			if aerr := r.ack(ctx, k, done, dead, log); aerr != nil {
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

func (r *Relay) ack(ctx context.Context, k keys.SKU, ids []string, dead []streamgroup.DeadEntry, log *slog.Logger) error {
	for try := 1; ; try++ {
		err := streamgroup.Done(ctx, r.cfg.Redis, k.Stream, keys.RelayGroup, k.DeadLetters, ids, dead)
		if err == nil {
			return nil
		}
		// Not acknowledged means produced again later: a duplicate Kafka
		// message, harmless downstream. Still try hard to avoid it.
		r.m.Errors.WithLabelValues("redis").Inc()
		log.Warn("Acknowledging relayed entries failed; retrying", "entries", len(ids), "attempt", try, "err", err)
		if serr := r.cfg.Backoff.Sleep(ctx, try); serr != nil {
			return err
		}
	}
}

// graceful returns a context that ends d after parent ends.
func graceful(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(d, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
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
