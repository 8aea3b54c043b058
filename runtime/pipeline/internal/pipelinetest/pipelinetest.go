// Package pipelinetest holds what the tests of the pipeline packages share:
// a sale of their own on the shared Redis, orders admitted into its SKU
// streams the way the purchase script admits them, what is left there, a
// MySQL the test can cut away, and running a part until the test ends.
package pipelinetest

import (
	"context"
	"database/sql"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// SaleKey returns a "namespace/name" of the test's own and deletes its keys
// in rdb when the test ends.
func SaleKey(t testing.TB, rdb redis.UniversalClient) string {
	t.Helper()
	saleKey := testutil.UniqueName(t) + "/sale"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	return saleKey
}

// Order is user's first order of sku in saleKey.
func Order(saleKey, sku, user, amount string) order.Order {
	return OrderIn(saleKey, sku, user, amount, 1)
}

// OrderIn is user's first order of sku in saleKey, a SKU split into n
// buckets: made in the user's home bucket (keys.Home), as the seckill
// makes it, so its order number carries that bucket's mark.
func OrderIn(saleKey, sku, user, amount string, n int) order.Order {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return order.Order{
		OrderNo: purchase.OrderNo(saleKey, sku, user, 1, keys.Home(user, n)), Sale: saleKey, SKU: sku, User: user, N: 1,
		Amount: amount, AdmittedAt: now, Deadline: now.Add(15 * time.Minute),
	}
}

// Admit appends orders to their SKU streams with the fields the purchase
// script writes, and records them "queued" for result polling; it returns
// the stream ids.
func Admit(t testing.TB, rdb redis.UniversalClient, orders ...order.Order) []string {
	t.Helper()
	return AdmitIn(t, rdb, nil, orders...)
}

// AdmitIn is Admit for SKUs split into buckets as bk counts them: each
// order goes to the stream and orders hash of the bucket its order number
// names.
func AdmitIn(t testing.TB, rdb redis.UniversalClient, bk orderstate.Buckets, orders ...order.Order) []string {
	t.Helper()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(orders))
	for i, o := range orders {
		k := bk.Order(&o)
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: k.Stream, Values: Entry(o)})
		pipe.HSet(ctx, k.Orders, o.OrderNo, "queued "+o.User)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("admit %d orders: %v", len(orders), err)
	}
	ids := make([]string, len(cmds))
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	return ids
}

// Entry is the fields of o's stream entry.
func Entry(o order.Order) []any {
	return []any{
		"order", o.OrderNo, "sale", o.Sale, "sku", o.SKU, "user", o.User, "n", strconv.FormatInt(o.N, 10),
		"amount", o.Amount, "at", o.AdmittedAt.UnixMilli(), "deadline", o.Deadline.UnixMilli(),
	}
}

// Left is how many entries the SKU streams of saleKey hold, and how many of
// them are pending in the relay group (delivered, not acknowledged).
func Left(t testing.TB, rdb redis.UniversalClient, saleKey string, skus ...string) (length, pending int64) {
	t.Helper()
	return LeftIn(t, rdb, nil, saleKey, skus...)
}

// LeftIn is Left over every bucket's stream of SKUs split as bk counts them.
func LeftIn(t testing.TB, rdb redis.UniversalClient, bk orderstate.Buckets, saleKey string, skus ...string) (length, pending int64) {
	t.Helper()
	ctx := context.Background()
	for _, k := range bk.All(saleKey, skus) {
		n, err := rdb.XLen(ctx, k.Stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		length += n
		p, err := rdb.XPending(ctx, k.Stream, keys.RelayGroup).Result()
		if err != nil && !redis.HasErrorPrefix(err, "NOGROUP") {
			t.Fatal(err)
		}
		if p != nil {
			pending += p.Count
		}
	}
	return length, pending
}

// Rows counts the rows of saleKey in MySQL.
func Rows(t testing.TB, db *sql.DB, saleKey string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM seckill_order WHERE sale = ?`, saleKey).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Start runs run in the background until the test ends or stop is called;
// stop returns how long run took to return after its context ended, and its
// error.
func Start(t testing.TB, run func(context.Context) error) (stop func() (time.Duration, error)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var (
		once sync.Once
		took time.Duration
		err  error
	)
	stop = func() (time.Duration, error) {
		once.Do(func() {
			at := time.Now()
			cancel()
			select {
			case err = <-done:
				took = time.Since(at)
			case <-time.After(30 * time.Second):
				t.Fatal("did not stop within 30s")
			}
		})
		return took, err
	}
	t.Cleanup(func() { _, _ = stop() })
	return stop
}

// Counter is the value of the counter name in reg, summed over the series
// whose single label has the value label ("": every series).
func Counter(t testing.TB, reg prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
