// Package dbsink makes batches of orders durable in MySQL for both ends of the
// order pipeline (the Kafka consumer and the Redis-only stream sink), with
// the same guarantees: every order is either committed (a duplicate counts as
// committed) or handed to a dead-letter callback with its reason, and Write
// returns nil only then, so the caller acknowledges its source only after.
//
// Transient errors (the server gone, a connection reset, a deadlock, a lock
// wait timeout, a read-only replica...) retry with exponential backoff for as
// long as the context lives and never skip an order. Data errors that no
// retry can cure (a value out of range, too long, malformed) are narrowed
// down by bisecting the batch; the offending row is retried a bounded number
// of times and then dead-lettered.
package dbsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
)

// Item is one message of a batch: a decoded order, or the error that made
// decoding it fail (a poison message, dead-lettered without a database try).
type Item struct {
	Order order.Order
	Err   error
}

// DeadLetter is called for an item that can never be stored: its index in
// the batch, the reason and how many attempts were made. It must record the
// item durably (or return an error, and is then called again after a backoff).
type DeadLetter func(ctx context.Context, idx int, reason string, attempts int) error

// Config configures a Writer.
type Config struct {
	Store *orderdb.Store
	// Redis, when set, gets the committed orders advanced to "created", in
	// the bucket of their SKU that holds them (Buckets: nil when no SKU of
	// the sale is split).
	Redis   redis.UniversalClient
	Buckets orderstate.Buckets
	// SaleKey ("namespace/name"), when set, is the only sale whose orders
	// are accepted; an order of another sale is dead-lettered (it would
	// otherwise be counted in the wrong sale's numbers).
	SaleKey string
	// MaxAttempts bounds the tries of a row MySQL refuses for its data (default 3).
	MaxAttempts int
	Backoff     backoff.Backoff
	Metrics     *Metrics
	Logger      *slog.Logger
}

// Writer writes batches.
type Writer struct {
	cfg Config
	log *slog.Logger
	m   *Metrics
}

// New returns a Writer.
func New(cfg Config) *Writer {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff = backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Writer{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
}

// Metrics returns the writer's metrics.
func (w *Writer) Metrics() *Metrics { return w.m }

// Write makes every item durable or dead-letters it. It returns nil when all
// are done, or ctx's error when the context ended first (then some sub-batches
// may be committed: harmless, a redelivery of them is a duplicate).
func (w *Writer) Write(ctx context.Context, items []Item, dead DeadLetter) error {
	idx := make([]int, 0, len(items))
	for i := range items {
		reason := ""
		switch {
		case items[i].Err != nil:
			reason = "decode: " + items[i].Err.Error()
		case w.cfg.SaleKey != "" && items[i].Order.Sale != w.cfg.SaleKey:
			reason = fmt.Sprintf("order %s belongs to sale %q, not %q", items[i].Order.OrderNo, items[i].Order.Sale, w.cfg.SaleKey)
		case w.cfg.Redis != nil && w.cfg.Buckets.Check(&items[i].Order) != nil:
			// Never admitted (no purchase runs in a bucket the SKU lacks),
			// and Redis could never show it created: it would hold the
			// pipeline retrying.
			reason = w.cfg.Buckets.Check(&items[i].Order).Error()
		}
		if reason != "" {
			if err := w.deadLetter(ctx, dead, i, reason, 1); err != nil {
				return err
			}
			continue
		}
		idx = append(idx, i)
	}
	return w.insert(ctx, items, idx, dead)
}

func (w *Writer) deadLetter(ctx context.Context, dead DeadLetter, idx int, reason string, attempts int) error {
	for try := 1; ; try++ {
		err := dead(ctx, idx, reason, attempts)
		if err == nil {
			w.m.DeadLetters.Inc()
			w.log.Warn("Order dead-lettered", "reason", reason, "attempts", attempts)
			return nil
		}
		w.m.Retries.WithLabelValues("dead_letter").Inc()
		w.log.Error("Writing a dead letter failed; retrying", "err", err, "attempt", try)
		if err := w.cfg.Backoff.Sleep(ctx, try); err != nil {
			return err
		}
	}
}

// insert commits the orders items[idx...], bisecting on a data error.
func (w *Writer) insert(ctx context.Context, items []Item, idx []int, dead DeadLetter) error {
	if len(idx) == 0 {
		return nil
	}
	batch := make([]order.Order, len(idx))
	for j, i := range idx {
		batch[j] = items[i].Order
	}
	permanent := 0
	for try := 1; ; try++ {
		start := time.Now()
		n, err := w.cfg.Store.InsertBatch(ctx, batch)
		if err == nil {
			w.m.CommitLatency.Observe(time.Since(start).Seconds())
			w.m.BatchSize.Observe(float64(len(batch)))
			w.m.Inserted.WithLabelValues("new").Add(float64(n))
			w.m.Inserted.WithLabelValues("duplicate").Add(float64(int64(len(batch)) - n))
			return w.markCreated(ctx, batch)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !IsPermanent(err) {
			w.m.Retries.WithLabelValues("transient").Inc()
			w.log.Warn("MySQL batch failed; retrying", "orders", len(batch), "attempt", try, "err", err)
			if err := w.cfg.Backoff.Sleep(ctx, try); err != nil {
				return err
			}
			continue
		}
		if len(idx) > 1 {
			// Find the rows MySQL refuses: each half in its own transaction.
			w.m.Retries.WithLabelValues("bisect").Inc()
			mid := len(idx) / 2
			if err := w.insert(ctx, items, idx[:mid], dead); err != nil {
				return err
			}
			return w.insert(ctx, items, idx[mid:], dead)
		}
		permanent++
		if permanent >= w.cfg.MaxAttempts {
			return w.deadLetter(ctx, dead, idx[0], "mysql: "+err.Error(), permanent)
		}
		w.m.Retries.WithLabelValues("permanent").Inc()
		if err := w.cfg.Backoff.Sleep(ctx, permanent); err != nil {
			return err
		}
	}
}

// markCreated makes the committed orders show "created"; Redis being away is
// transient like MySQL being away: the source is not acknowledged until it
// is done, so a crash here redelivers and the status still moves.
func (w *Writer) markCreated(ctx context.Context, batch []order.Order) error {
	if w.cfg.Redis == nil {
		return nil
	}
	for try := 1; ; try++ {
		err := orderstate.MarkCreated(ctx, w.cfg.Redis, w.cfg.Buckets, batch)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.m.Retries.WithLabelValues("redis").Inc()
		w.log.Warn("Marking orders created in Redis failed; retrying", "orders", len(batch), "attempt", try, "err", err)
		if err := w.cfg.Backoff.Sleep(ctx, try); err != nil {
			return err
		}
	}
}

// permanentCodes are MySQL errors about the data of a row: no retry cures them.
var permanentCodes = map[uint16]bool{
	1048: true, // column cannot be null
	1264: true, // out of range value
	1265: true, // data truncated
	1292: true, // truncated incorrect value
	1364: true, // field has no default value
	1366: true, // incorrect value (e.g. bad string for a decimal)
	1406: true, // data too long
	1416: true, // cannot get geometry object
	1452: true, // foreign key fails
	3819: true, // check constraint violated
	4025: true, // MariaDB: check constraint violated
}

// IsPermanent reports whether err is a MySQL error about a row's data. Any
// other error (network, server gone, deadlock 1213, lock wait 1205, read-only
// 1290/1836, unknown) counts as transient: retrying forever is safer than
// skipping an order.
func IsPermanent(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return permanentCodes[me.Number]
	}
	return false
}

// Metrics of the MySQL side of the pipeline.
type Metrics struct {
	Inserted      *prometheus.CounterVec
	BatchSize     prometheus.Histogram
	CommitLatency prometheus.Histogram
	DeadLetters   prometheus.Counter
	Retries       *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Inserted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_orders_inserted_total",
			Help: "Orders committed to MySQL, by result: new rows or duplicates of rows already there.",
		}, []string{"result"}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_worker_batch_size",
			Help:    "Orders per committed MySQL transaction.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2000},
		}),
		CommitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flashsale_worker_commit_seconds",
			Help:    "Time to insert and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		DeadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flashsale_worker_dead_letters_total",
			Help: "Orders that can never be stored, sent to the dead-letter topic or stream.",
		}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_retries_total",
			Help: "Retries by kind: transient (MySQL away), permanent (a refused row), bisect, redis, dead_letter.",
		}, []string{"kind"}),
	}
	for _, r := range []string{"new", "duplicate"} {
		m.Inserted.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Inserted, m.BatchSize, m.CommitLatency, m.DeadLetters, m.Retries)
	}
	return m
}
