package orderstate_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestOrdersOfBuckets: a SKU split into three buckets, an order admitted in
// each of buckets 1 and 2 by the real purchase script, on one Redis and on a
// 3-master Redis Cluster (the buckets on three shards). Lookup, MarkCreated,
// Settle and Release find each order in its own bucket: the released unit
// goes back to bucket 2's stock and holders, never bucket 0's. Given a
// bucket count that lacks the order's bucket (a caller that forgot the
// sale's bucket counts), they fail and touch nothing, instead of releasing
// in bucket 0, finding nothing there, and letting the caller record the
// unit as returned; Lookup says no such order.
func TestOrdersOfBuckets(t *testing.T) {
	t.Run("redis", func(t *testing.T) { ordersOfBuckets(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { ordersOfBuckets(t, testutil.RedisCluster(t).Client(t)) })
}

func ordersOfBuckets(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	saleKey := "ns-" + testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	const sku, n = "1001", 3
	ks := keys.Buckets(saleKey, sku, n)
	for _, k := range ks {
		if err := rdb.Set(ctx, k.Stock, 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	script, err := purchase.New(rdb, saleKey, purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	buy := func(b int) *order.Order {
		t.Helper()
		now := time.Now()
		user := "u" + keys.OrderSuffix(b)
		res, err := script.Purchase(ctx, purchase.Request{SKU: sku, Bucket: b, Buckets: n, User: user, Limit: 1, Amount: "1.00",
			Nonce: user, Now: now, Deadline: now.Add(time.Minute)})
		if err != nil || res.Outcome != purchase.Admitted {
			t.Fatalf("purchase in bucket %d: %+v %v", b, res, err)
		}
		return &order.Order{OrderNo: res.OrderNo, Sale: saleKey, SKU: sku, User: user}
	}
	paid, cancelled := buy(1), buy(2)

	// Without the bucket counts: refused, nothing moves, nothing is known.
	if _, err := orderstate.ReleaseUnit(ctx, rdb, cancelled, 1); err == nil {
		t.Fatal("released an order of bucket 2 of a SKU said to have 1 bucket")
	}
	if err := orderstate.MarkCreated(ctx, rdb, nil, []order.Order{*paid}); err == nil {
		t.Fatal("marked an order of bucket 1 created without the bucket counts")
	}
	if err := orderstate.Settle(ctx, rdb, paid, 1); err == nil {
		t.Fatal("settled an order of bucket 1 of a SKU said to have 1 bucket")
	}
	if _, ok, err := orderstate.Lookup(ctx, rdb, saleKey, sku, 1, cancelled.OrderNo); ok || err != nil {
		t.Fatalf("Lookup with one bucket: known %v, %v; want unknown", ok, err)
	}
	if in, err := rdb.ZScore(ctx, ks[2].Expiry, cancelled.OrderNo).Result(); err != nil || in == 0 {
		t.Fatalf("bucket 2's expiry set lost the order: %v %v", in, err)
	}

	// With them: each order in its bucket.
	bk := orderstate.Buckets{sku: n}
	if err := orderstate.MarkCreated(ctx, rdb, bk, []order.Order{*paid, *cancelled}); err != nil {
		t.Fatal(err)
	}
	if err := orderstate.Settle(ctx, rdb, paid, n); err != nil {
		t.Fatal(err)
	}
	if got, err := orderstate.ReleaseUnit(ctx, rdb, cancelled, n); err != nil || got != orderstate.BackOnSale {
		t.Fatalf("release in bucket 2: %v %v", got, err)
	}
	for o, want := range map[*order.Order]order.Status{paid: order.Paid, cancelled: order.Cancelled} {
		if rec, ok, err := orderstate.Lookup(ctx, rdb, saleKey, sku, n, o.OrderNo); err != nil || !ok || rec.Status != want {
			t.Fatalf("order %s: %+v %v %v; want %s", o.OrderNo, rec, ok, err, want)
		}
	}
	for b, want := range []int64{1, 0, 1} {
		if got, err := rdb.Get(ctx, ks[b].Stock).Int64(); err != nil || got != want {
			t.Fatalf("bucket %d stock %d (%v), want %d", b, got, err, want)
		}
	}
	if held, err := rdb.HLen(ctx, ks[2].Holders).Result(); err != nil || held != 0 {
		t.Fatalf("bucket 2 holders %d (%v) after the release, want 0", held, err)
	}
}
