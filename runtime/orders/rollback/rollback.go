// Package rollback cancels the orders whose payment deadline passed and
// returns their stock to Redis, exactly once.
//
// Every pass does two things, in this order:
//
//  1. finish what an earlier pass (of this or another process) left half-way:
//     orders cancelled in MySQL whose unit is not recorded as back in Redis
//     (stock_returned = 0) are released (orderstate.Release) and marked;
//  2. cancel the expired orders with the compare-and-set created → cancelled;
//     only for the ones this call won, release the unit and mark it returned.
//
// The MySQL CAS decides who owns an order (a payment and a rollback, or two
// rollbacks, can never both win); orderstate.Release is idempotent (it is
// guarded by ZREM on the expiry set), so a process that dies between the
// two steps, or two processes finishing the same order, return the unit once.
// A sold-out SKU reopens through its stock counter, which every seckill pod
// polls.
package rollback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/utils/clock"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
)

// afterCancel, when set (by tests only), runs after a won cancel and before
// the unit is released: the window a crash may hit.
var afterCancel func(orderNo string)

// Config is what a Rollback needs. SaleKey, Redis and Orders are required.
type Config struct {
	// SaleKey is the sale's "namespace/name".
	SaleKey string
	Redis   redis.UniversalClient
	Orders  *orderdb.Store
	// Buckets are the bucket counts of the sale's SKUs
	// (orderstate.BucketsOf): a unit goes back to the bucket its order came
	// from. nil when no SKU of the sale is split.
	Buckets orderstate.Buckets
	// Clock decides which deadlines have passed (default: the real clock).
	Clock clock.Clock
	// Interval between passes (default 1 s).
	Interval time.Duration
	// Batch is how many orders one query fetches (default 500).
	Batch int
	// Concurrency is how many orders are worked on at once (default 8).
	Concurrency int
	// MaxPerPass bounds the orders one pass cancels, so a huge backlog does
	// not starve the finishing step (default 20,000).
	MaxPerPass int
	Metrics    *Metrics
	Logger     *slog.Logger
}

// Rollback is the cancel-and-return loop of one sale.
type Rollback struct {
	cfg Config
	clk clock.Clock
	m   *Metrics
	log *slog.Logger
}

// Pass is what one pass did.
type Pass struct {
	// Finished: units returned for orders an earlier pass had cancelled.
	Finished int
	// Cancelled: orders this pass won the cancel of.
	Cancelled int
	// Returned: units this pass put back into Redis (Finished plus the
	// returns of Cancelled, minus those another process returned first).
	Returned int
	// Lost: expired orders whose cancel another party won (a payment just
	// before the deadline, or a second rollback process).
	Lost int
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Rollback, error) {
	if cfg.SaleKey == "" || cfg.Redis == nil || cfg.Orders == nil {
		return nil, errors.New("rollback: Sale, Redis and Orders are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.MaxPerPass <= 0 {
		cfg.MaxPerPass = 20000
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Rollback{cfg: cfg, clk: cfg.Clock, m: cfg.Metrics, log: cfg.Logger}, nil
}

// Metrics returns the loop's metrics.
func (r *Rollback) Metrics() *Metrics { return r.m }

// Run makes a pass every interval until ctx is done. A pass in progress when
// ctx ends finishes the order it is on (each order's steps run on a context
// that is not cancelled), so a graceful shutdown leaves nothing half-way; a
// crash is finished by the next pass of any process.
func (r *Rollback) Run(ctx context.Context) error {
	for {
		if _, err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("Rollback pass failed; retrying next interval", "sale", r.cfg.SaleKey, "err", err)
		}
		t := r.clk.NewTimer(r.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// RunOnce makes one pass: finish, then cancel and return.
func (r *Rollback) RunOnce(ctx context.Context) (Pass, error) {
	start := time.Now()
	var p Pass
	err := r.finish(ctx, &p)
	if err == nil {
		err = r.cancelExpired(ctx, &p)
	}
	r.m.passDuration.WithLabelValues(r.cfg.SaleKey).Observe(time.Since(start).Seconds())
	if err != nil {
		return p, err
	}
	r.m.lastSuccess.WithLabelValues(r.cfg.SaleKey).Set(float64(r.clk.Now().Unix()))
	if p.Cancelled > 0 || p.Finished > 0 {
		r.log.Info("Rollback pass", "sale", r.cfg.SaleKey, "cancelled", p.Cancelled, "returned", p.Returned,
			"finished", p.Finished, "lost", p.Lost, "took", time.Since(start).Round(time.Millisecond))
	}
	return p, nil
}

// finish returns the units of cancelled orders not yet marked returned.
func (r *Rollback) finish(ctx context.Context, p *Pass) error {
	for range r.cfg.MaxPerPass/r.cfg.Batch + 1 {
		if ctx.Err() != nil {
			return nil
		}
		rows, err := r.cfg.Orders.Unreturned(ctx, r.cfg.SaleKey, r.cfg.Batch)
		if err != nil {
			r.m.errors.WithLabelValues(r.cfg.SaleKey, "list_unreturned").Inc()
			return err
		}
		var mu sync.Mutex
		failed := 0
		r.each(ctx, rows, func(ctx context.Context, row *orderdb.Row) {
			back, err := r.release(ctx, row)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			p.Finished++
			if back {
				p.Returned++
			}
		})
		// Stop when the list is exhausted, or when nothing moved (a dead Redis:
		// the same rows would come back at once).
		if len(rows) < r.cfg.Batch || failed == len(rows) {
			return nil
		}
	}
	return nil
}

// cancelExpired cancels expired orders and returns the units of those won.
func (r *Rollback) cancelExpired(ctx context.Context, p *Pass) error {
	done := 0
	for done < r.cfg.MaxPerPass {
		if ctx.Err() != nil {
			return nil
		}
		now := r.clk.Now()
		rows, err := r.cfg.Orders.Expired(ctx, r.cfg.SaleKey, now, r.cfg.Batch)
		if err != nil {
			r.m.errors.WithLabelValues(r.cfg.SaleKey, "list_expired").Inc()
			return err
		}
		var mu sync.Mutex
		failed := 0
		r.each(ctx, rows, func(ctx context.Context, row *orderdb.Row) {
			won, err := r.cfg.Orders.Cancel(ctx, row.OrderNo, now)
			if err != nil {
				r.m.errors.WithLabelValues(r.cfg.SaleKey, "cancel").Inc()
				r.log.Warn("Cancel failed", "sale", r.cfg.SaleKey, "order", row.OrderNo, "err", err)
				mu.Lock()
				failed++
				mu.Unlock()
				return
			}
			if !won {
				mu.Lock()
				p.Lost++
				mu.Unlock()
				return
			}
			r.m.cancelled.WithLabelValues(r.cfg.SaleKey, row.SKU).Inc()
			if afterCancel != nil {
				afterCancel(row.OrderNo)
			}
			back, err := r.release(ctx, row)
			mu.Lock()
			defer mu.Unlock()
			p.Cancelled++
			if err == nil && back {
				p.Returned++
			}
			// A failed release is finished by the next pass's first step.
		})
		done += len(rows)
		if len(rows) < r.cfg.Batch || failed == len(rows) {
			return nil
		}
	}
	return nil
}

// release puts a cancelled order's unit back (idempotent) and records it.
func (r *Rollback) release(ctx context.Context, row *orderdb.Row) (bool, error) {
	unit, err := orderstate.ReleaseUnit(ctx, r.cfg.Redis, &row.Order, r.cfg.Buckets.Of(row.SKU))
	if err != nil {
		r.m.errors.WithLabelValues(r.cfg.SaleKey, "release").Inc()
		r.log.Warn("Returning stock failed; the next pass retries", "sale", r.cfg.SaleKey, "order", row.OrderNo, "err", err)
		return false, err
	}
	back := unit != orderstate.NotReturned
	if back {
		r.m.returned.WithLabelValues(r.cfg.SaleKey, row.SKU).Inc()
	}
	if unit == orderstate.PaidDebt {
		// The stock was lowered below what buyers held: this unit leaves the
		// sale instead of going back on sale.
		r.m.debtPaid.WithLabelValues(r.cfg.SaleKey, row.SKU).Inc()
	}
	if err := r.cfg.Orders.MarkReturned(ctx, row.OrderNo); err != nil {
		// The unit is back; the next pass releases again (a no-op) and marks.
		r.m.errors.WithLabelValues(r.cfg.SaleKey, "mark_returned").Inc()
		r.log.Warn("Recording the returned stock failed; the next pass retries", "sale", r.cfg.SaleKey, "order", row.OrderNo, "err", err)
		return back, fmt.Errorf("mark order %s returned: %w", row.OrderNo, err)
	}
	return back, nil
}

// each runs fn on every row with bounded concurrency. The steps of one order
// run on a context that outlives ctx by a few seconds, so a shutdown does
// not stop an order between its MySQL and Redis steps without need; rows not
// started when ctx ends are skipped.
func (r *Rollback) each(ctx context.Context, rows []orderdb.Row, fn func(context.Context, *orderdb.Row)) {
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range rows {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(row *orderdb.Row) {
			defer func() { <-sem; wg.Done() }()
			octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			fn(octx, row)
		}(&rows[i])
	}
	wg.Wait()
}
