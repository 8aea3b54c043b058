// Package consumer is the Kafka → MySQL half of the order pipeline: a sarama
// consumer group on the sale's topic that writes batches of orders to MySQL
// (dbsink: one transaction each, duplicates are success) and marks a
// partition's offset only after the batch holding its messages committed.
// Offsets are committed right after marking; nothing unmarked is ever
// committed. A message that can never be stored goes to the dead-letter
// topic with its reason and origin in headers, and is marked after that.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Dead-letter headers.
const (
	HeaderError           = "error"
	HeaderAttempts        = "attempts"
	HeaderSourceTopic     = "source-topic"
	HeaderSourcePartition = "source-partition"
	HeaderSourceOffset    = "source-offset"
)

// Config configures a Consumer.
type Config struct {
	// SaleKey is "namespace/name".
	SaleKey string
	Kafka   kafkautil.Options
	// Partitions of the sale's topic: when set, the consumer creates the
	// topic if it is missing before joining the group, instead of failing
	// sessions until the relay has created it.
	Partitions int32
	// Partitions of the dead-letter topic when it has to be created (default 1).
	DeadLetterPartitions int32
	Writer               *dbsink.Writer
	// BatchSize flushes a batch when it holds this many messages (default 500).
	BatchSize int
	// FlushInterval flushes a batch this long after its first message (default 50ms).
	FlushInterval time.Duration
	// SessionTimeout of the group membership (default 10s).
	SessionTimeout time.Duration
	// ShutdownGrace bounds finishing the batch in hand after ctx ended (default 15s).
	ShutdownGrace time.Duration
	Backoff       backoff.Backoff
	Metrics       *Metrics
	Logger        *slog.Logger
}

// Consumer is the consumer group member.
type Consumer struct {
	cfg      Config
	topic    string
	dlqTopic string
	group    string
	dlq      *kafkautil.Producer
	m        *Metrics
	log      *slog.Logger
}

// New checks cfg and returns a Consumer.
func New(cfg Config) (*Consumer, error) {
	if cfg.SaleKey == "" || len(cfg.Kafka.Brokers) == 0 || cfg.Writer == nil {
		return nil, errors.New("consumer: sale, kafka brokers and writer are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 50 * time.Millisecond
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 15 * time.Second
	}
	if cfg.DeadLetterPartitions <= 0 {
		cfg.DeadLetterPartitions = 1
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff = backoff.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Kafka.ClientID == "" {
		cfg.Kafka.ClientID = "flashsale-consumer"
	}
	dlq := keys.DeadLetterTopic(cfg.SaleKey)
	return &Consumer{
		cfg: cfg, topic: keys.Topic(cfg.SaleKey), dlqTopic: dlq, group: keys.ConsumerGroup(cfg.SaleKey),
		dlq: kafkautil.NewProducer(cfg.Kafka, map[string]int32{dlq: cfg.DeadLetterPartitions}),
		m:   cfg.Metrics, log: cfg.Logger.With("component", "consumer"),
	}, nil
}

func (c *Consumer) saramaConfig() *sarama.Config {
	sc := c.cfg.Kafka.Config()
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Only marked offsets are ever committed, and we commit them ourselves
	// right after marking.
	sc.Consumer.Offsets.AutoCommit.Enable = false
	sc.Consumer.Return.Errors = true
	sc.Consumer.Group.Session.Timeout = c.cfg.SessionTimeout
	sc.Consumer.Group.Heartbeat.Interval = c.cfg.SessionTimeout / 4
	sc.Consumer.Group.Rebalance.Timeout = max(c.cfg.SessionTimeout, 10*time.Second)
	sc.Consumer.Group.Rebalance.Retry.Max = 2
	sc.Consumer.Fetch.Default = 1 << 20
	sc.Consumer.MaxWaitTime = 100 * time.Millisecond
	sc.ChannelBufferSize = 2 * c.cfg.BatchSize
	return sc
}

// Run consumes until ctx ends; the batches in hand are committed and marked
// before it returns. Kafka being away is retried with backoff forever.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.dlq.Close()
	for try := 1; ctx.Err() == nil; try++ {
		group, client, err := c.join()
		if err != nil {
			c.m.Errors.WithLabelValues("kafka").Inc()
			c.log.Warn("Joining the consumer group failed; retrying", "group", c.group, "attempt", try, "err", err)
			_ = c.cfg.Backoff.Sleep(ctx, try)
			continue
		}
		if c.consume(ctx, group) {
			try = 0
		}
		_ = client.Close()
		if ctx.Err() == nil {
			_ = c.cfg.Backoff.Sleep(ctx, max(try, 1))
		}
	}
	return nil
}

// join connects, makes sure the topic exists (when Partitions is set) and
// returns a consumer group on the client; the caller closes both. Joining a
// group on a topic that does not exist yet (the relay and the consumer start
// together for a new sale) fails the session only after sarama's metadata
// retries and a backoff, which delayed the first batch by about half a
// second.
func (c *Consumer) join() (sarama.ConsumerGroup, sarama.Client, error) {
	client, err := sarama.NewClient(c.cfg.Kafka.Brokers, c.saramaConfig())
	if err != nil {
		return nil, nil, err
	}
	if c.cfg.Partitions > 0 {
		if err := kafkautil.EnsureTopic(client, c.topic, c.cfg.Partitions); err != nil {
			_ = client.Close()
			return nil, nil, err
		}
	}
	group, err := sarama.NewConsumerGroupFromClient(c.group, client)
	if err != nil {
		_ = client.Close()
		return nil, nil, err
	}
	return group, client, nil
}

// consume runs sessions on group until ctx ends or the group fails, then
// closes it; it reports whether any session ran.
func (c *Consumer) consume(ctx context.Context, group sarama.ConsumerGroup) bool {
	var wg sync.WaitGroup
	defer func() {
		_ = group.Close() // ends the Errors channel
		wg.Wait()
	}()
	wg.Go(func() {
		for err := range group.Errors() {
			c.log.Warn("Consumer group error", "err", err)
		}
	})
	ran := false
	failures := 0
	for ctx.Err() == nil {
		h := &handler{c: c}
		err := group.Consume(ctx, []string{c.topic}, h)
		ran = ran || h.setup
		if err == nil {
			failures = 0
			continue
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) || ctx.Err() != nil {
			return ran
		}
		failures++
		c.m.Errors.WithLabelValues("kafka").Inc()
		c.log.Warn("Consumer group session failed", "attempt", failures, "err", err)
		if failures >= 3 {
			return ran // rebuild the client: brokers may have restarted
		}
		_ = c.cfg.Backoff.Sleep(ctx, failures)
	}
	return ran
}

type handler struct {
	c     *Consumer
	setup bool
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error { h.setup = true; return nil }

func (h *handler) Cleanup(sess sarama.ConsumerGroupSession) error {
	sess.Commit()
	return nil
}

// ConsumeClaim double-buffers a partition: a committer goroutine writes one
// batch at a time, in offset order, and marks its last offset after the
// commit, while this goroutine keeps reading the claim and gathers the next
// batch. Reading and committing in one goroutine stalled the whole broker
// fetch: sarama waits for every partition to take its messages before it
// fetches again, so each partition's MySQL commit held up the others (and
// the relay's freshly produced orders sat in Kafka).
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	c := h.c
	lag := c.m.Lag.WithLabelValues(strconv.Itoa(int(claim.Partition())))
	// Unbuffered: the committer takes the next batch only when it is idle,
	// so at most one batch is being committed and one gathered, and a
	// partial batch keeps growing while it waits.
	queue := make(chan []*sarama.ConsumerMessage)
	failed := make(chan struct{}) // closed when a batch could not be stored
	done := make(chan struct{})
	var werr error // set by the committer before it closes failed
	go func() {
		defer close(done)
		for b := range queue {
			if werr != nil {
				continue // nothing after a failed batch is stored or marked
			}
			if err := c.flush(sess, b); err != nil {
				werr = err
				close(failed)
				continue
			}
			last := b[len(b)-1]
			lag.Set(float64(max(claim.HighWaterMarkOffset()-last.Offset-1, 0)))
		}
	}()

	batch := make([]*sarama.ConsumerMessage, 0, c.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// finish hands over the batch in hand (the committer finishes it
	// within ShutdownGrace even after the session ended) and waits for the
	// committer; werr is safe to read once done is closed.
	finish := func() error {
		if len(batch) > 0 {
			select {
			case queue <- batch:
			case <-failed:
			}
		}
		close(queue)
		<-done
		return werr
	}
	due := false // the batch's FlushInterval is over: hand it over as soon as possible
	for {
		var out chan<- []*sarama.ConsumerMessage
		if len(batch) >= c.cfg.BatchSize || (due && len(batch) > 0) {
			out = queue
		}
		in := claim.Messages()
		if len(batch) >= c.cfg.BatchSize {
			in = nil // full: wait for the committer
		}
		select {
		case m, ok := <-in:
			if !ok {
				return finish()
			}
			if len(batch) == 0 {
				timer.Reset(c.cfg.FlushInterval)
			}
			batch = append(batch, m)
		case out <- batch:
			timer.Stop()
			due = false
			batch = make([]*sarama.ConsumerMessage, 0, c.cfg.BatchSize)
		case <-timer.C:
			due = true
		case <-failed:
			return finish()
		case <-sess.Context().Done():
			return finish()
		}
	}
}

// flush stores batch (all of one partition, in offset order), then marks
// and commits the last offset.
func (c *Consumer) flush(sess sarama.ConsumerGroupSession, batch []*sarama.ConsumerMessage) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(sess.Context()))
	defer cancel()
	stop := context.AfterFunc(sess.Context(), func() { time.AfterFunc(c.cfg.ShutdownGrace, cancel) })
	defer stop()
	items := make([]dbsink.Item, len(batch))
	for i, m := range batch {
		o, err := order.Unmarshal(m.Value)
		items[i] = dbsink.Item{Order: o, Err: err}
	}
	err := c.cfg.Writer.Write(ctx, items, func(_ context.Context, i int, reason string, attempts int) error {
		return c.deadLetter(batch[i], reason, attempts)
	})
	if err != nil {
		// Nothing marked: the batch is delivered again (to us or another member).
		return fmt.Errorf("batch of %d at %s/%d@%d not stored: %w", len(batch), batch[0].Topic, batch[0].Partition, batch[0].Offset, err)
	}
	last := batch[len(batch)-1]
	sess.MarkMessage(last, "")
	sess.Commit()
	c.m.Consumed.Add(float64(len(batch)))
	return nil
}

func (c *Consumer) deadLetter(m *sarama.ConsumerMessage, reason string, attempts int) error {
	prod, err := c.dlq.Get()
	if err != nil {
		return err
	}
	msg := &sarama.ProducerMessage{
		Topic: c.dlqTopic,
		Key:   sarama.ByteEncoder(m.Key),
		Value: sarama.ByteEncoder(m.Value),
		Headers: []sarama.RecordHeader{
			{Key: []byte(HeaderError), Value: []byte(reason)},
			{Key: []byte(HeaderAttempts), Value: []byte(strconv.Itoa(attempts))},
			{Key: []byte(HeaderSourceTopic), Value: []byte(m.Topic)},
			{Key: []byte(HeaderSourcePartition), Value: []byte(strconv.Itoa(int(m.Partition)))},
			{Key: []byte(HeaderSourceOffset), Value: []byte(strconv.FormatInt(m.Offset, 10))},
		},
	}
	if m.Key == nil {
		msg.Key = nil
	}
	if _, _, err := prod.SendMessage(msg); err != nil {
		c.dlq.Invalidate(prod)
		return fmt.Errorf("produce dead letter: %w", err)
	}
	c.log.Warn("Message sent to the dead-letter topic", "topic", c.dlqTopic, "partition", m.Partition, "offset", m.Offset, "reason", reason)
	return nil
}

// Metrics of the consumer.
type Metrics struct {
	Consumed prometheus.Counter
	Lag      *prometheus.GaugeVec
	Errors   *prometheus.CounterVec
}

// NewMetrics creates the consumer metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Consumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_messages_consumed_total",
			Help: "Kafka messages stored (or dead-lettered) and marked.",
		}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flashsale_worker_consumer_lag",
			Help: "Messages behind the partition's high-water mark after the last committed batch.",
		}, []string{"partition"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_consumer_errors_total",
			Help: "Consumer failures by dependency (each is retried).",
		}, []string{"dependency"}),
	}
	if reg != nil {
		reg.MustRegister(m.Consumed, m.Lag, m.Errors)
	}
	return m
}
