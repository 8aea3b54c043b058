package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/utils/clock"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestTeardownKeepHoldsValidDeadLetters: the teardown's archive step meets
// a valid order in the dead-letter stream that MySQL lacks (dead-lettered
// after the settle audit). Without force it holds the teardown (an
// OrdersStranded error, the entry still there) instead of letting the keys
// go with it; once the order is archived (Abandon, or a forced cleanup) the
// step passes.
func TestTeardownKeepHoldsValidDeadLetters(t *testing.T) {
	ctx := context.Background()
	rdb := testutil.Redis(t)
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/sale") {
		testutil.CleanupKeys(t, rdb, p)
	}
	sale, err := manifest.Parse([]byte(fmt.Sprintf(`apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: sale, namespace: %s}
spec:
  startTime: "2020-01-01T00:00:00Z"
  endTime: "2099-01-01T00:00:00Z"
  skus: [{id: "1001", stock: 20, price: "9.99", perUserLimit: 1}]
`, ns)))
	if err != nil {
		t.Fatal(err)
	}
	db, _ := testutil.OrderDB(t)
	c := &conns{rdb: rdb, db: db, orders: orderdb.New(db)}
	r := &FlashSaleReconciler{Clock: clock.RealClock{}, DialTimeout: time.Second}

	k := keys.ForSKU(sale.SaleKey(), "1001")
	now := time.Now()
	no := purchase.OrderNo(sale.SaleKey(), "1001", "u1", 1, 0)
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.DeadLetters, Values: []any{
		"source-id", "1-1", "error", "Error 4025: CONSTRAINT failed", "attempts", 3, "at", now.UnixMilli(),
		"f:order", no, "f:sale", sale.SaleKey(), "f:sku", "1001", "f:user", "u1", "f:n", "1", "f:amount", "9.99",
		"f:at", strconv.FormatInt(now.UnixMilli(), 10), "f:deadline", strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10),
	}}).Err(); err != nil {
		t.Fatal(err)
	}
	// A poison entry beside it is archived (and deleted) all the same.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: k.DeadLetters, Values: []any{"error", "decode", "f:order", "garbage"}}).Err(); err != nil {
		t.Fatal(err)
	}

	_, err = r.keepDeadLetters(ctx, sale, c, false)
	var de *DependencyError
	if !errors.As(err, &de) || de.Reason != v1alpha1.ReasonOrdersStranded {
		t.Fatalf("teardown's archive step with a valid dead letter MySQL lacks: %v, want it held (OrdersStranded)", err)
	}
	left, _ := rdb.XRange(ctx, k.DeadLetters, "-", "+").Result()
	if len(left) != 1 || left[0].Values["f:order"] != no {
		t.Fatalf("dead-letter stream after the held step: %v, want the valid order's entry only", left)
	}
	if n, _ := c.orders.CountDeadLetters(ctx, sale.SaleKey()); n.Orders != 0 || n.Poison != 1 {
		t.Fatalf("archived %+v, want the poison only (the order is not abandoned behind the policy's back)", n)
	}

	// A forced cleanup keeps it in seckill_dead_letter; then the step passes.
	kept, err := r.keepDeadLetters(ctx, sale, c, true)
	if err != nil || kept == "" {
		t.Fatalf("forced: %q %v", kept, err)
	}
	if _, err := r.keepDeadLetters(ctx, sale, c, false); err != nil {
		t.Fatalf("after the order was archived: %v", err)
	}
}
