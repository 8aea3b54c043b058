package rollback

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// CancelAll cancels every order of the sale still awaiting payment,
// whatever its deadline, and returns its unit: what a sale deleted before
// its payment window closed does with orders nobody can pay any more (its
// pay endpoint goes with it), so that none stays created for ever with its
// unit out.
//
// It is a pass of the loop with the deadline taken away: it first finishes
// what an earlier pass left half-way, then wins the same compare-and-set
// (created → cancelled) before releasing a unit, so a payment that won just
// before keeps its order paid (counted in Lost) and no unit is returned
// twice. Unlike RunOnce it fails when any order was left behind (a cancel
// or a return that failed), so the caller retries before it deletes the
// sale's keys.
func (r *Rollback) CancelAll(ctx context.Context) (Pass, error) {
	var p Pass
	if err := r.finish(ctx, &p); err != nil {
		return p, err
	}
	failed, err := r.cancelUnpaid(ctx, &p)
	if err == nil && failed > 0 {
		err = fmt.Errorf("rollback: %d unpaid orders of %s could not be cancelled or their units returned", failed, r.cfg.SaleKey)
	}
	if p.Cancelled > 0 || p.Finished > 0 {
		r.log.Info("Cancelled every unpaid order", "sale", r.cfg.SaleKey, "cancelled", p.Cancelled,
			"returned", p.Returned, "finished", p.Finished, "lost", p.Lost)
	}
	return p, err
}

// cancelUnpaid cancels the created orders batch by batch until none is left
// or a batch moved nothing (a dead MySQL or Redis: the same rows would come
// back at once). It returns how many orders of the last batch failed.
func (r *Rollback) cancelUnpaid(ctx context.Context, p *Pass) (int, error) {
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		now := r.clk.Now()
		rows, err := r.cfg.Orders.Unpaid(ctx, r.cfg.SaleKey, r.cfg.Batch)
		if err != nil {
			r.m.errors.WithLabelValues(r.cfg.SaleKey, "list_unpaid").Inc()
			return 0, err
		}
		if len(rows) == 0 {
			return 0, nil
		}
		var mu sync.Mutex
		failed := 0
		r.each(ctx, rows, func(ctx context.Context, row *orderdb.Row) {
			o := r.cancelOne(ctx, row, now)
			mu.Lock()
			defer mu.Unlock()
			o.addTo(p)
			if o.failed {
				failed++
			}
		})
		if failed > 0 {
			return failed, nil
		}
	}
}

// outcome is what cancelling one order did.
type outcome struct{ won, lost, returned, failed bool }

func (o outcome) addTo(p *Pass) {
	if o.won {
		p.Cancelled++
	}
	if o.lost {
		p.Lost++
	}
	if o.returned {
		p.Returned++
	}
}

// cancelOne wins the cancel of one unpaid order and returns its unit; a
// failed return is finished by the next pass's first step.
func (r *Rollback) cancelOne(ctx context.Context, row *orderdb.Row, now time.Time) outcome {
	won, err := r.cfg.Orders.CancelUnpaid(ctx, row.OrderNo, now)
	if err != nil {
		r.m.errors.WithLabelValues(r.cfg.SaleKey, "cancel").Inc()
		r.log.Warn("Cancel failed", "sale", r.cfg.SaleKey, "order", row.OrderNo, "err", err)
		return outcome{failed: true}
	}
	if !won {
		return outcome{lost: true}
	}
	r.m.cancelled.WithLabelValues(r.cfg.SaleKey, row.SKU).Inc()
	back, err := r.release(ctx, row)
	return outcome{won: true, returned: err == nil && back, failed: err != nil}
}
