package rollback_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
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
	rdb    *redis.Client
	dsn    string
	store  *orderdb.Store
	fs     *v1alpha1.FlashSale
	k      keys.SKU
	orders []order.Order
}

// setup warms a one-SKU sale with n units, sells all of them through the
// purchase script to n buyers, and makes every order durable in MySQL with
// the given deadline, the way the worker does (insert, show created, delete
// the stream entry).
func setup(t *testing.T, n int, deadline time.Time) *fixture {
	t.Helper()
	ctx := context.Background()
	rdb := testutil.Redis(t)
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
			SKUs:      []v1alpha1.SKU{{ID: "1001", Stock: int64(n), Price: "3999.00", PerUserLimit: 1}},
		},
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	db, dsn := testutil.OrderDB(t)
	f := &fixture{rdb: rdb, dsn: dsn, store: orderdb.New(db), fs: fs, k: keys.ForSKU(fs.SaleKey(), "1001")}

	script, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{AutoPipeline: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, n)
	for i := range n {
		go func() {
			res, err := script.Purchase(ctx, purchase.Request{
				SKU: "1001", User: "u" + strconv.Itoa(i), Limit: 1, Amount: "3999.00", Nonce: fmt.Sprintf("n%d", i),
				Now: now, Deadline: deadline, TokenTTL: 10 * time.Second,
			})
			if err == nil && res.Outcome != purchase.Admitted {
				err = fmt.Errorf("purchase %d: %s", i, res.Outcome)
			}
			done <- err
		}()
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := rdb.XRange(ctx, f.k.Stream, "-", "+").Result()
	if err != nil || len(msgs) != n {
		t.Fatalf("stream: %d entries, %v", len(msgs), err)
	}
	ids := make([]string, 0, n)
	for _, m := range msgs {
		o, err := order.FromStream(m.Values)
		if err != nil {
			t.Fatal(err)
		}
		o.Deadline = deadline.UTC().Truncate(time.Millisecond)
		f.orders = append(f.orders, o)
		ids = append(ids, m.ID)
	}
	if _, err := f.store.InsertBatch(ctx, f.orders); err != nil {
		t.Fatal(err)
	}
	if err := orderstate.MarkCreated(ctx, rdb, nil, f.orders); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XDel(ctx, f.k.Stream, ids...).Err(); err != nil {
		t.Fatal(err)
	}
	if s := f.stock(t); s != 0 {
		t.Fatalf("stock after selling out: %d", s)
	}
	return f
}

func (f *fixture) stock(t *testing.T) int64 {
	t.Helper()
	n, err := f.rdb.Get(context.Background(), f.k.Stock).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// statusCounts counts the sale's rows by status and the cancelled rows not marked returned.
func (f *fixture) counts(t *testing.T) orderdb.Counts {
	t.Helper()
	c, err := f.store.CountBySKU(context.Background(), f.fs.SaleKey())
	if err != nil {
		t.Fatal(err)
	}
	if c["1001"] == nil {
		return orderdb.Counts{}
	}
	return *c["1001"]
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
	holders, err := f.rdb.HGetAll(ctx, f.k.Holders).Result()
	if err != nil {
		t.Fatal(err)
	}
	shown, err := f.rdb.HGetAll(ctx, f.k.Orders).Result()
	if err != nil {
		t.Fatal(err)
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
	if n, _ := f.rdb.ZCard(ctx, f.k.Expiry).Result(); n != 0 {
		t.Fatalf("%d orders still in the expiry set", n)
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
