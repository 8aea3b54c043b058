package rollback_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
)

// TestCancelAllBeforeTheDeadline: the orders of a sale being deleted are
// cancelled and their units returned although their payment window is still
// open, racing payments through the same compare-and-set: every order ends
// paid or cancelled, never both, and stock comes back for exactly the
// cancelled ones. A second call finds nothing left to do.
func TestCancelAllBeforeTheDeadline(t *testing.T) {
	const n = 200
	ctx := context.Background()
	f := setup(t, n, time.Now().Add(time.Hour))
	rb, err := rollback.New(rollback.Config{SaleKey: f.fs.SaleKey(), Redis: f.rdb, Orders: f.store, Concurrency: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// The rollback's own loop cancels nothing: no deadline has passed.
	if p, err := rb.RunOnce(ctx); err != nil || p.Cancelled != 0 {
		t.Fatalf("RunOnce cancelled %d (%v) an hour before the deadline", p.Cancelled, err)
	}

	var paid sync.Map
	var wg sync.WaitGroup
	for i := 0; i < n; i += 2 { // a payment for every other order, racing the cancels
		wg.Add(1)
		go func(o int) {
			defer wg.Done()
			res, _, err := f.store.Pay(ctx, f.fs.SaleKey(), f.orders[o].OrderNo, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if res == orderdb.PaidNow {
				paid.Store(f.orders[o].OrderNo, true)
				if err := orderstate.Settle(ctx, f.rdb, &f.orders[o], 1); err != nil {
					t.Error(err)
				}
			}
		}(i)
	}
	p, err := rb.CancelAll(ctx)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	c := f.counts(t)
	npaid := 0
	paid.Range(func(any, any) bool { npaid++; return true })
	if int64(npaid) != c.Paid || int64(p.Cancelled) != c.Cancelled || c.Paid+c.Cancelled != n {
		t.Fatalf("paid %d (answered %d), cancelled %d (pass %+v) of %d", c.Paid, npaid, c.Cancelled, p, n)
	}
	if p.Returned != p.Cancelled {
		t.Fatalf("pass %+v: every cancelled order's unit must be returned", p)
	}
	f.checkRedis(t)

	if again, err := rb.CancelAll(ctx); err != nil || again.Cancelled+again.Returned+again.Finished != 0 {
		t.Fatalf("second CancelAll did %+v (%v), want nothing", again, err)
	}
}
