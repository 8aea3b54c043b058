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

// fixture is one warmed SKU of a fresh sale on the shared Redis.
type fixture struct {
	rdb     *redis.Client
	saleKey string
	sku     string
	k       keys.SKU
	script  *purchase.Script
}

func setup(t *testing.T, stock int) *fixture {
	t.Helper()
	rdb := testutil.Redis(t)
	saleKey := "ns-" + testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	f := &fixture{rdb: rdb, saleKey: saleKey, sku: "1001", k: keys.ForSKU(saleKey, "1001")}
	var err error
	if f.script, err = purchase.New(rdb, saleKey, purchase.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := f.script.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(context.Background(), f.k.Stock, stock, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return f
}

// buy admits one order of user through the real purchase script.
func (f *fixture) buy(t *testing.T, user string) *order.Order {
	t.Helper()
	now := time.Now()
	res, err := f.script.Purchase(context.Background(), purchase.Request{
		SKU: f.sku, User: user, Limit: 1, Amount: "1.00", Nonce: user,
		Now: now, Deadline: now.Add(time.Minute),
	})
	if err != nil || res.Outcome != purchase.Admitted {
		t.Fatalf("purchase by %s: %+v %v", user, res, err)
	}
	return &order.Order{OrderNo: res.OrderNo, Sale: f.saleKey, SKU: f.sku, User: user}
}

// shows fails the test unless Lookup, and QueueAll, read o's record as
// status and o's buyer.
func (f *fixture) shows(t *testing.T, o *order.Order, status order.Status) {
	t.Helper()
	ctx := context.Background()
	rec, ok, err := orderstate.Lookup(ctx, f.rdb, f.saleKey, o.SKU, 1, o.OrderNo)
	if err != nil || !ok {
		t.Fatalf("Lookup(%s) = %+v, %t, %v", o.OrderNo, rec, ok, err)
	}
	if want := (orderstate.Record{Status: status, User: o.User}); rec != want {
		t.Fatalf("Lookup(%s) = %+v, want %+v", o.OrderNo, rec, want)
	}
	pipe := f.rdb.TxPipeline()
	all := orderstate.QueueAll(ctx, pipe, keys.ForSKU(f.saleKey, o.SKU))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := all()
	if err != nil || recs.ByOrder[o.OrderNo] != rec || len(recs.Malformed) != 0 {
		t.Fatalf("QueueAll read %+v (%v), Lookup read %+v", recs, err, rec)
	}
}

func (f *fixture) int(t *testing.T, key string) int64 {
	t.Helper()
	n, err := f.rdb.Get(context.Background(), key).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestWritersAgreeWithLookup: the record the purchase script writes, and the
// one each orderstate script writes, reads back as the status it meant and
// the buyer who made the order.
func TestWritersAgreeWithLookup(t *testing.T) {
	f := setup(t, 10)
	ctx := context.Background()

	paid := f.buy(t, "user:1@shop.example")
	f.shows(t, paid, order.Queued)
	if moved, err := orderstate.Advance(ctx, f.rdb, paid, 1, order.Created); err != nil || !moved {
		t.Fatalf("Advance to created: %t %v", moved, err)
	}
	f.shows(t, paid, order.Created)
	if err := orderstate.Settle(ctx, f.rdb, paid, 1); err != nil {
		t.Fatal(err)
	}
	f.shows(t, paid, order.Paid)

	batch := []order.Order{*f.buy(t, "u2"), *f.buy(t, "u3")}
	if err := orderstate.MarkCreated(ctx, f.rdb, nil, batch); err != nil {
		t.Fatal(err)
	}
	f.shows(t, &batch[0], order.Created)
	f.shows(t, &batch[1], order.Created)

	if returned, err := orderstate.Release(ctx, f.rdb, &batch[1], 1); err != nil || !returned {
		t.Fatalf("Release: %t %v", returned, err)
	}
	f.shows(t, &batch[1], order.Cancelled)
}

// TestAdvanceForwardOnly: a status never moves back, so a late "created"
// from the worker cannot hide a payment or a cancellation, and the record
// keeps the buyer who made the order.
func TestAdvanceForwardOnly(t *testing.T) {
	f := setup(t, 10)
	ctx := context.Background()
	o := f.buy(t, "u1")

	steps := []struct {
		to    order.Status
		moved bool
		shown order.Status
	}{
		{order.Queued, false, order.Queued},
		{order.Created, true, order.Created},
		{order.Created, false, order.Created},
		{order.Queued, false, order.Created},
		{order.Paid, true, order.Paid},
		{order.Created, false, order.Paid},
		{order.Cancelled, false, order.Paid},
	}
	for i, s := range steps {
		moved, err := orderstate.Advance(ctx, f.rdb, o, 1, s.to)
		if err != nil || moved != s.moved {
			t.Fatalf("step %d: Advance to %s moved %t (%v), want %t", i, s.to, moved, err, s.moved)
		}
		f.shows(t, o, s.shown)
	}

	// A different user in the call never takes the order over.
	o2 := f.buy(t, "u2")
	intruded := *o2
	intruded.User = "intruder"
	if moved, err := orderstate.Advance(ctx, f.rdb, &intruded, 1, order.Created); err != nil || !moved {
		t.Fatalf("Advance: %t %v", moved, err)
	}
	f.shows(t, o2, order.Created)
}

// TestReleaseExactlyOnce: a cancelled order's unit goes back to stock and
// its buyer's slot is freed once, however often Release runs; a paid order's
// unit never goes back.
func TestReleaseExactlyOnce(t *testing.T) {
	f := setup(t, 2)
	ctx := context.Background()
	cancelled, paid := f.buy(t, "u1"), f.buy(t, "u2")
	if n := f.int(t, f.k.Stock); n != 0 {
		t.Fatalf("stock after two purchases = %d", n)
	}

	for i := range 3 {
		returned, err := orderstate.Release(ctx, f.rdb, cancelled, 1)
		if err != nil || returned != (i == 0) {
			t.Fatalf("Release #%d returned %t (%v)", i+1, returned, err)
		}
	}
	if n := f.int(t, f.k.Stock); n != 1 {
		t.Fatalf("stock after releasing one order three times = %d, want 1", n)
	}
	if held, err := f.rdb.HExists(ctx, f.k.Holders, "u1").Result(); err != nil || held {
		t.Fatalf("the cancelled buyer still holds a unit (%v)", err)
	}
	f.shows(t, cancelled, order.Cancelled)

	if err := orderstate.Settle(ctx, f.rdb, paid, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rdb.ZScore(ctx, f.k.Expiry, paid.OrderNo).Result(); err != redis.Nil {
		t.Fatalf("a paid order is still in the expiry set (%v)", err)
	}
	if returned, err := orderstate.Release(ctx, f.rdb, paid, 1); err != nil || returned {
		t.Fatalf("Release of a paid order returned %t (%v)", returned, err)
	}
	if n := f.int(t, f.k.Stock); n != 1 {
		t.Fatalf("stock after releasing a paid order = %d, want 1", n)
	}
	if held, _ := f.rdb.HGet(ctx, f.k.Holders, "u2").Result(); held != "1" {
		t.Fatalf("the paying buyer holds %q units, want 1", held)
	}
	f.shows(t, paid, order.Paid)
}

// TestLookupUnknownAndMalformed: an order Redis never admitted is not found
// (no error); a record no writer makes is an error for Lookup and is set
// apart by QueueAll, never read as some status.
func TestLookupUnknownAndMalformed(t *testing.T) {
	f := setup(t, 1)
	ctx := context.Background()
	if rec, ok, err := orderstate.Lookup(ctx, f.rdb, f.saleKey, f.sku, 1, "1001-000000000000000000000000"); ok || err != nil {
		t.Fatalf("unknown order: %+v %t %v", rec, ok, err)
	}
	good := f.buy(t, "u1")
	bad := map[string]string{"1001-a": "queued", "1001-b": "shipped u1", "1001-c": "paid ", "1001-d": ""}
	for no, v := range bad {
		f.rdb.HSet(ctx, f.k.Orders, no, v)
		if rec, ok, err := orderstate.Lookup(ctx, f.rdb, f.saleKey, f.sku, 1, no); err == nil || ok {
			t.Errorf("record %q read as %+v, %t", v, rec, ok)
		}
	}
	pipe := f.rdb.Pipeline()
	all := orderstate.QueueAll(ctx, pipe, keys.ForSKU(f.saleKey, f.sku))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := all()
	if err != nil || len(recs.ByOrder) != 1 || recs.ByOrder[good.OrderNo].User != "u1" || len(recs.Malformed) != len(bad) {
		t.Fatalf("QueueAll = %+v, %v", recs, err)
	}
	for no, v := range bad {
		if recs.Malformed[no] != v {
			t.Errorf("malformed %s = %q, want %q", no, recs.Malformed[no], v)
		}
	}
}

// TestQueueAllEmpty: a SKU with no orders (or no keys) has no records.
func TestQueueAllEmpty(t *testing.T) {
	f := setup(t, 0)
	ctx := context.Background()
	pipe := f.rdb.Pipeline()
	all := orderstate.QueueAll(ctx, pipe, keys.ForSKU(f.saleKey, "never-warmed"))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if recs, err := all(); err != nil || len(recs.ByOrder)+len(recs.Malformed) != 0 {
		t.Fatalf("QueueAll of an empty SKU = %+v, %v", recs, err)
	}
}

// TestBehind: a record lags MySQL exactly when Advance (the Lua side of the
// same rule) would move it there.
func TestBehind(t *testing.T) {
	all := []order.Status{order.Queued, order.Created, order.Paid, order.Cancelled}
	f := setup(t, len(all)*len(all))
	ctx := context.Background()
	for _, shown := range all {
		for _, actual := range all {
			o := f.buy(t, "u-"+shown.String()+"-"+actual.String())
			if shown != order.Queued {
				if _, err := orderstate.Advance(ctx, f.rdb, o, 1, shown); err != nil {
					t.Fatal(err)
				}
			}
			behind := orderstate.Record{Status: shown, User: o.User}.Behind(actual)
			moved, err := orderstate.Advance(ctx, f.rdb, o, 1, actual)
			if err != nil || moved != behind {
				t.Errorf("shown %s, MySQL %s: Behind = %t, but Advance moved %t (%v)", shown, actual, behind, moved, err)
			}
		}
	}
	if (orderstate.Record{Status: order.Created}).Behind(order.Queued) || !(orderstate.Record{Status: order.Queued}).Behind(order.Paid) {
		t.Fatal("Behind is not forward-only")
	}
}
