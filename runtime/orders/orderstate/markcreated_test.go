package orderstate_test

import (
	"context"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
)

// TestMarkCreatedOnlyExistingRecords: the worker's status update advances
// the records of admitted orders and never writes one for an order this
// Redis does not hold (a replica promoted without it): such an order must
// stay unknown to the orders hash, where the audit looks for it, instead of
// looking admitted.
func TestMarkCreatedOnlyExistingRecords(t *testing.T) {
	t.Parallel()
	f := setup(t, 10)
	ctx := context.Background()
	admitted := f.buy(t, "alice")
	paid := f.buy(t, "bob")
	if err := orderstate.Settle(ctx, f.rdb, paid, 1); err != nil {
		t.Fatal(err)
	}
	unknown := order.Order{OrderNo: "never-admitted-1", Sale: f.saleKey, SKU: f.sku, User: "carol"}
	if err := orderstate.MarkCreated(ctx, f.rdb, nil, []order.Order{*admitted, *paid, unknown}); err != nil {
		t.Fatal(err)
	}
	recs, err := f.rdb.HGetAll(ctx, f.k.Orders).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := recs[admitted.OrderNo]; got != "created alice" {
		t.Errorf("admitted order's record %q, want %q", got, "created alice")
	}
	if got := recs[paid.OrderNo]; got != "paid bob" {
		t.Errorf("paid order's record %q, want %q", got, "paid bob")
	}
	if got, ok := recs[unknown.OrderNo]; ok {
		t.Errorf("MarkCreated wrote %q for an order the orders hash did not hold", got)
	}
}
