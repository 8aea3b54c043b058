package rollback_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/internal/ordertest"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type fixture struct {
	rdb   redis.UniversalClient
	dsn   string
	store *orderdb.Store
	fs    *v1alpha1.FlashSale
	bk    orderstate.Buckets
	// k are the keys of SKU 1001 (of its bucket 0, when it is split).
	k      keys.SKU
	orders []order.Order
}

// setup warms a one-SKU sale with n units, sells all of them through the
// purchase script to n buyers, and makes every order durable in MySQL with
// the given deadline, the way the worker does (insert, show created, delete
// the stream entry).
func setup(t *testing.T, n int, deadline time.Time) *fixture {
	t.Helper()
	return setupSale(t, testutil.Redis(t), deadline, v1alpha1.SKU{ID: "1001", Stock: int64(n), Price: "3999.00", PerUserLimit: 1})
}

// setupSale is setup for a sale of skus on rdb (a Redis Cluster client,
// say): every unit of every bucket of every SKU is sold, each buyer in
// their home bucket.
func setupSale(t *testing.T, rdb redis.UniversalClient, deadline time.Time, skus ...v1alpha1.SKU) *fixture {
	t.Helper()
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/sale") {
		testutil.CleanupKeys(t, rdb, p)
	}
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: "flashsale.dev/v1alpha1", Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sale"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Minute)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
			SKUs:      skus,
		},
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Warm(context.Background(), rdb, fs); err != nil {
		t.Fatal(err)
	}
	db, dsn := testutil.OrderDB(t)
	f := &fixture{rdb: rdb, dsn: dsn, store: orderdb.New(db), fs: fs, bk: orderstate.BucketsOf(fs), k: keys.ForSKU(fs.SaleKey(), "1001")}
	script, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{AutoPipeline: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, sku := range fs.Spec.SKUs {
		f.sell(t, script, sku, now, deadline)
	}
	for _, k := range f.bk.All(fs.SaleKey(), fs.SKUIDs()) {
		f.persist(t, k, deadline)
	}
	if s := f.stock(t); s != 0 {
		t.Fatalf("stock after selling out: %d", s)
	}
	return f
}

// sell sells every unit of sku, each buyer in their home bucket.
func (f *fixture) sell(t *testing.T, script *purchase.Script, sku v1alpha1.SKU, now, deadline time.Time) {
	t.Helper()
	n := sku.BucketCount()
	users := ordertest.Buyers("u"+sku.ID+"-", sku.Stock, n)
	done := make(chan error, len(users))
	for i, u := range users {
		go func() {
			res, err := script.Purchase(context.Background(), purchase.Request{
				SKU: sku.ID, Bucket: keys.Home(u, n), Buckets: n, User: u, Limit: 1, Amount: sku.Price,
				Nonce: fmt.Sprintf("n%s-%d", sku.ID, i), Now: now, Deadline: deadline,
			})
			if err == nil && res.Outcome != purchase.Admitted {
				err = fmt.Errorf("purchase by %s: %s", u, res.Outcome)
			}
			done <- err
		}()
	}
	for range users {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// persist moves the orders of bucket k from its stream to MySQL as the worker
// does, with the given deadline.
func (f *fixture) persist(t *testing.T, k keys.SKU, deadline time.Time) {
	t.Helper()
	ctx := context.Background()
	msgs, err := f.rdb.XRange(ctx, k.Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 {
		return
	}
	var orders []order.Order
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		o, err := order.FromStream(m.Values)
		if err != nil {
			t.Fatal(err)
		}
		o.Deadline = deadline.UTC().Truncate(time.Millisecond)
		orders = append(orders, o)
		ids = append(ids, m.ID)
	}
	if _, err := f.store.InsertBatch(ctx, orders); err != nil {
		t.Fatal(err)
	}
	if err := orderstate.MarkCreated(ctx, f.rdb, f.bk, orders); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.XDel(ctx, k.Stream, ids...).Err(); err != nil {
		t.Fatal(err)
	}
	f.orders = append(f.orders, orders...)
}

// buckets are the keys of every bucket of every SKU of the sale.
func (f *fixture) buckets() []keys.SKU { return f.bk.All(f.fs.SaleKey(), f.fs.SKUIDs()) }

// stock is the units on sale, over every bucket of every SKU.
func (f *fixture) stock(t *testing.T) int64 {
	t.Helper()
	var sum int64
	for _, k := range f.buckets() {
		n, err := f.rdb.Get(context.Background(), k.Stock).Int64()
		if err != nil {
			t.Fatal(err)
		}
		sum += n
	}
	return sum
}

// statusCounts counts the sale's rows by status and the cancelled rows not marked returned.
func (f *fixture) counts(t *testing.T) orderdb.Counts {
	t.Helper()
	c, err := f.store.CountBySKU(context.Background(), f.fs.SaleKey())
	if err != nil {
		t.Fatal(err)
	}
	var sum orderdb.Counts
	for _, s := range c {
		sum.Created += s.Created
		sum.Paid += s.Paid
		sum.Cancelled += s.Cancelled
		sum.Returning += s.Returning
	}
	return sum
}

// checkRedis checks the Redis side against the final MySQL statuses: stock
// equals the cancelled units, exactly the paid buyers hold a unit, the orders
// hash shows every final status, and the expiry set is empty.
func (f *fixture) checkRedis(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	c := f.counts(t)
	if c.Created != 0 || c.Returning != 0 {
		t.Fatalf("unfinished: %+v", c)
	}
	if got := f.stock(t); got != c.Cancelled {
		t.Fatalf("stock %d, but %d orders were cancelled (initial %d, paid %d)", got, c.Cancelled, len(f.orders), c.Paid)
	}
	// Buyers' ids differ between SKUs, and a buyer buys in one bucket.
	holders, shown := map[string]string{}, map[string]string{}
	var expiring int64
	for _, k := range f.buckets() {
		h, err := f.rdb.HGetAll(ctx, k.Holders).Result()
		if err != nil {
			t.Fatal(err)
		}
		maps.Copy(holders, h)
		s, err := f.rdb.HGetAll(ctx, k.Orders).Result()
		if err != nil {
			t.Fatal(err)
		}
		maps.Copy(shown, s)
		n, err := f.rdb.ZCard(ctx, k.Expiry).Result()
		if err != nil {
			t.Fatal(err)
		}
		expiring += n
	}
	for _, o := range f.orders {
		r, err := f.store.Get(ctx, o.OrderNo)
		if err != nil {
			t.Fatal(err)
		}
		want := map[order.Status]string{order.Paid: "1", order.Cancelled: ""}[r.Status]
		if holders[o.User] != want {
			t.Fatalf("order %s is %s but its buyer holds %q", o.OrderNo, r.Status, holders[o.User])
		}
		if shown[o.OrderNo] != r.Status.String()+" "+o.User {
			t.Fatalf("order %s is %s but result polling shows %q", o.OrderNo, r.Status, shown[o.OrderNo])
		}
		if r.Status == order.Cancelled && !r.StockReturned {
			t.Fatalf("order %s cancelled but not marked returned", o.OrderNo)
		}
	}
	if int64(len(holders)) != c.Paid {
		t.Fatalf("%d holders, %d paid", len(holders), c.Paid)
	}
	if expiring != 0 {
		t.Fatalf("%d orders still in the expiry sets", expiring)
	}
}

// sumMetric adds up every series of a metric family in reg.
func sumMetric(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}
