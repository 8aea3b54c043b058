package controllers

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestSteadyStockTransferTakenDuringRead: a half-done transfer is taken in
// after the poll read the counters (the giver's without the units) and
// before it read the units in flight (none any more). Read once, the poll
// counts the 4 units nowhere and status breaks stock = remaining + sold −
// debt for that poll; the poll reads again until the units in flight are
// the same before and after the counters.
func TestSteadyStockTransferTakenDuringRead(t *testing.T) {
	ctx := context.Background()
	rdb := testutil.Redis(t)
	s := splitScope(v1alpha1.FlashSaleStatus{})
	s.sale.Namespace = testutil.UniqueName(t)
	saleKey := s.sale.SaleKey()
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	if _, err := warm.Warm(ctx, rdb, s.sale); err != nil {
		t.Fatal(err)
	}
	stock := s.sale.Spec.SKUs[0].Stock
	bs := keys.Buckets(saleKey, "1001", 3)
	// Step 1 of a transfer of 4 units from bucket 1 to bucket 2, alone.
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.DecrBy(ctx, bs[1].Stock, 4)
		p.DecrBy(ctx, bs[1].Initial, 4)
		p.HSet(ctx, bs[1].Outbox, "half-done", "4 2")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	old := afterStockRead
	afterStockRead = func() {
		if reads++; reads == 1 {
			if _, err := buckets.Recover(ctx, rdb, saleKey, "1001", 3); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { afterStockRead = old })

	f := &liveFigures{}
	if err := readSteadyStock(ctx, rdb, s.sale, f); err != nil {
		t.Fatal(err)
	}
	setFigures(&s.fs.Status, s.sale, f, s.now)
	got := s.fs.Status.SKUs[0]
	if got.Remaining+got.Sold-got.Debt != stock || got.Remaining != stock || reads != 2 || len(f.problems) != 0 {
		t.Fatalf("after %d reads: %+v: remaining + sold − debt ≠ the declared %d (problems %v)", reads, got, stock, f.problems)
	}
}
