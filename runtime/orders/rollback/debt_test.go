package rollback_test

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

// TestRollbackPaysOffALowering: 10 units sold, the stock lowered to 6, then
// every order expires. The rollback returns all 10 units, and the first 4
// pay off what the lowering could not take back (they leave the sale and
// are counted as such); only 6 go back on sale.
func TestRollbackPaysOffALowering(t *testing.T) {
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	f := setup(t, 10, deadline)
	f.fs.Spec.SKUs[0].Stock = 6
	res, err := warm.Warm(ctx, f.rdb, f.fs)
	if err != nil {
		t.Fatal(err)
	}
	if s := res.SKUs[0]; s.Action != "lowered" || s.Debt != 4 || s.Remaining != 0 {
		t.Fatalf("lowering 10 → 6 with 10 sold: %+v, want debt 4", s)
	}

	m := rollback.NewMetrics()
	rb, err := rollback.New(rollback.Config{SaleKey: f.fs.SaleKey(), Redis: f.rdb, Orders: f.store,
		Clock: clocktesting.NewFakeClock(deadline.Add(time.Second)), Metrics: m, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	p, err := rb.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Cancelled != 10 || p.Returned != 10 {
		t.Fatalf("pass %+v, want 10 cancelled and returned", p)
	}
	if got := sumMetric(t, m.Registry, rollback.MetricDebtPaid); got != 4 {
		t.Fatalf("%s = %v, want 4", rollback.MetricDebtPaid, got)
	}
	if got := sumMetric(t, m.Registry, rollback.MetricReturned); got != 10 {
		t.Fatalf("%s = %v, want 10", rollback.MetricReturned, got)
	}
	initial, _ := f.rdb.Get(ctx, f.k.Initial).Int64()
	debt, _ := f.rdb.Get(ctx, f.k.Debt).Int64()
	if s := f.stock(t); s != 6 || initial != 6 || debt != 0 {
		t.Fatalf("stock %d, initial %d, debt %d after every order expired, want 6, 6, 0", s, initial, debt)
	}
}
