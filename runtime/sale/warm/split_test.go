package warm_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// splitSale is a sale whose SKU "a" is split into n buckets.
func splitSale(t *testing.T, rdb redis.UniversalClient, stock int64, n int32) *v1alpha1.FlashSale {
	fs := sale(t, rdb, stock)
	fs.Spec.SKUs[0].Buckets = n
	fs.Spec.SKUs[0].PerUserLimit = 10
	return fs
}

func warmOK(t *testing.T, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) warm.SKUResult {
	t.Helper()
	res, err := warm.Warm(context.Background(), rdb, fs)
	if err != nil {
		t.Fatal(err)
	}
	return res.SKUs[0]
}

// TestWarmSplitOnThreePrimaries: a SKU split into 3 buckets gets its stock
// in 3 shares (the remainder to the lowest buckets), each bucket's keys on
// its own primary of the 3-master cluster, bucket 0's declared stock, every
// bucket's stream with the relay group; the result sums the buckets and
// shows each. Warming again changes nothing.
func TestWarmSplitOnThreePrimaries(t *testing.T) {
	rdb := testutil.RedisCluster(t).Client(t)
	ctx := context.Background()
	fs := splitSale(t, rdb, 100, 3)
	got := warmOK(t, rdb, fs)
	if got.Action != "created" || got.Delta != 100 || got.Remaining != 100 || got.Initial != 100 || got.Declared() != 100 || len(got.Buckets) != 3 {
		t.Fatalf("warm: %+v", got)
	}
	ks := keys.Buckets(fs.SaleKey(), "a", 3)
	primaries := map[string]int{}
	for b, want := range []int64{34, 33, 33} {
		if br := got.Buckets[b]; br.Bucket != b || br.Action != "created" || br.Remaining != want || br.Initial != want || br.Debt != 0 {
			t.Fatalf("bucket %d: %+v, want %d", b, br, want)
		}
		primaries[primaryOf(t, rdb, ks[b].Stock)] = b
		groups, err := rdb.XInfoGroups(ctx, ks[b].Stream).Result()
		if err != nil || len(groups) != 1 || groups[0].Name != keys.RelayGroup {
			t.Fatalf("bucket %d relay group: %v %v", b, groups, err)
		}
	}
	if len(primaries) != 3 {
		t.Fatalf("3 buckets on %d primaries: %v", len(primaries), primaries)
	}
	if d, err := rdb.Get(ctx, ks[0].Declared).Int64(); err != nil || d != 100 {
		t.Fatalf("declared key %d, %v", d, err)
	}
	for _, k := range ks[1:] {
		if n, _ := rdb.Exists(ctx, k.Declared).Result(); n != 0 {
			t.Fatalf("bucket %d has a declared key", k.Bucket)
		}
	}
	buyer := newBuyer(t, rdb, fs)
	buyer.buy(1, 5)
	again := warmOK(t, rdb, fs)
	if again.Action != "unchanged" || again.Delta != 0 || again.Remaining != 95 || again.Initial != 100 || again.Buckets[1].Remaining != 28 {
		t.Fatalf("rerun: %+v", again)
	}
}

// primaryOf is the address of the primary serving key's slot, from
// CLUSTER SLOTS (the cluster's own answer, not keys.Slot's).
func primaryOf(t *testing.T, rdb redis.UniversalClient, key string) string {
	t.Helper()
	ctx := context.Background()
	slot, err := rdb.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	ranges, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ranges {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			return r.Nodes[0].Addr
		}
	}
	t.Fatalf("no primary serves slot %d", slot)
	return ""
}

// TestWarmSplitCompletesACrashedCreation: a warm-up that died after some
// buckets is completed by the next, with the shares of the stock bucket 0
// was created with, even when the spec changed the stock in between.
func TestWarmSplitCompletesACrashedCreation(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := splitSale(t, rdb, 100, 3)
	warmOK(t, rdb, fs)
	k2 := keys.ForBucket(fs.SaleKey(), "a", 2, 3)
	rdb.Del(ctx, k2.Stock, k2.Initial) // bucket 2 was never created
	fs.Spec.SKUs[0].Stock = 130
	got := warmOK(t, rdb, fs)
	if got.Action != "raised" || got.Remaining != 130 || got.Declared() != 130 ||
		got.Buckets[0].Remaining != 64 || got.Buckets[2].Action != "created" || got.Buckets[2].Remaining != 33 {
		t.Fatalf("rerun after a crash and a raise: %+v", got)
	}
}

// TestWarmSplitRaiseAndLower: buyers hold units in buckets 1 and 2, bucket
// 0 sells nothing; a raise goes to bucket 0; a lowering below what buyers
// hold takes back every unsold unit of every bucket and bucket 0 owes the
// rest, so each return, in whichever bucket, pays it before any unit goes
// back on sale; a lowering above it leaves exactly the difference
// on sale. The conservation law holds after every step.
func TestWarmSplitRaiseAndLower(t *testing.T) {
	for name, rdb := range map[string]redis.UniversalClient{"standalone": testutil.Redis(t), "cluster": testutil.RedisCluster(t).Client(t)} {
		t.Run(name, func(t *testing.T) { raiseAndLower(t, rdb) })
	}
}

func raiseAndLower(t *testing.T, rdb redis.UniversalClient) {
	fs := splitSale(t, rdb, 30, 3)
	warmOK(t, rdb, fs)
	b := newBuyer(t, rdb, fs)
	held1, held2 := b.buy(1, 4), b.buy(2, 3)
	fs.Spec.SKUs[0].Stock = 40
	got := warmOK(t, rdb, fs)
	checkSplit(t, got, 40)
	if got.Action != "raised" || got.Buckets[0].Remaining != 20 {
		t.Fatalf("raise: %+v", got)
	}
	fs.Spec.SKUs[0].Stock = 5 // buyers hold 7: 2 owed
	got = warmOK(t, rdb, fs)
	checkSplit(t, got, 5)
	if got.Action != "lowered" || got.Remaining != 0 || got.Debt != 2 {
		t.Fatalf("lower to 5 with 7 held: %+v, want nothing on sale and 2 owed", got)
	}
	// Every returned unit pays the debt before any goes back on sale.
	returns := slices.Concat(held1, held2)
	for _, o := range returns[:2] {
		if r := b.release(o); r != orderstate.PaidDebt {
			t.Fatalf("return of %s: %v, want it to pay the debt", o.OrderNo, r)
		}
	}
	if r := b.release(returns[2]); r != orderstate.BackOnSale {
		t.Fatalf("third return: %v, want it back on sale", r)
	}
	got = warmOK(t, rdb, fs)
	checkSplit(t, got, 5)
	if got.Action != "unchanged" || got.Remaining != 1 || got.Debt != 0 {
		t.Fatalf("after 3 returns: %+v", got)
	}
	fs.Spec.SKUs[0].Stock = 10 // 4 held: 6 on sale, wherever they were
	got = warmOK(t, rdb, fs)
	checkSplit(t, got, 10)
	if got.Remaining != 6 || got.Debt != 0 {
		t.Fatalf("raise to 10 with 4 held: %+v", got)
	}
	b.buy(1, 2) // bucket 1 must refill from bucket 0
	fs.Spec.SKUs[0].Stock = 7
	got = warmOK(t, rdb, fs)
	checkSplit(t, got, 7)
	if got.Remaining != 1 || got.Debt != 0 || got.Buckets[0].Remaining != 1 {
		t.Fatalf("lower to 7 with 6 held: %+v, want the one unsold unit, in bucket 0", got)
	}
}

// checkSplit checks the law after a warm-up: per SKU Σ(initial − debt) +
// in flight = declared; only bucket 0 owes, as an unsplit SKU would: no
// more than the SKU's buyers hold, and only with nothing on sale anywhere.
func checkSplit(t *testing.T, got warm.SKUResult, declared int64) {
	t.Helper()
	if got.Declared() != declared || got.InFlight != 0 {
		t.Fatalf("declared %d (in flight %d), want %d: %+v", got.Declared(), got.InFlight, declared, got)
	}
	if got.Debt > got.Initial-got.Remaining || (got.Debt > 0 && got.Remaining != 0) {
		t.Fatalf("the SKU owes %d with %d held and %d on sale: %+v", got.Debt, got.Initial-got.Remaining, got.Remaining, got)
	}
	for _, b := range got.Buckets[1:] {
		if b.Debt != 0 || b.Remaining < 0 {
			t.Fatalf("bucket %d owes %d (only bucket 0 may) or has %d on sale: %+v", b.Bucket, b.Debt, b.Remaining, got)
		}
	}
}

// buyer buys through the real purchase script (refilling its bucket from
// the others when it runs out, as a seckill pod does) and returns units
// through the real release script.
type buyer struct {
	t      *testing.T
	rdb    redis.UniversalClient
	fs     *v1alpha1.FlashSale
	script *purchase.Script
	refill *buckets.Refiller
	n      int
}

func newBuyer(t *testing.T, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) *buyer {
	s, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &buyer{t: t, rdb: rdb, fs: fs, script: s, refill: buckets.NewRefiller(rdb, fs.SaleKey())}
}

// buy makes units purchases in bucket b, by distinct users.
func (b *buyer) buy(bucket, units int) []*order.Order {
	b.t.Helper()
	ctx := context.Background()
	n := b.fs.Spec.SKUs[0].BucketCount()
	var out []*order.Order
	for len(out) < units {
		b.n++
		user := "user" + strconv.Itoa(b.n)
		now := time.Now()
		res, err := b.script.Purchase(ctx, purchase.Request{SKU: "a", Bucket: bucket, Buckets: n, User: user, Limit: 10,
			Amount: "1.00", Nonce: user, Now: now, Deadline: now.Add(time.Hour)})
		if err != nil {
			b.t.Fatal(err)
		}
		if res.Outcome == purchase.SoldOut {
			if m, err := b.refill.Refill(ctx, "a", n, bucket); err != nil || m == 0 {
				b.t.Fatalf("bucket %d sold out, refill %d, %v", bucket, m, err)
			}
			continue
		}
		if res.Outcome != purchase.Admitted {
			b.t.Fatalf("purchase in bucket %d: %+v", bucket, res)
		}
		out = append(out, &order.Order{OrderNo: res.OrderNo, Sale: b.fs.SaleKey(), SKU: "a", User: user})
	}
	return out
}

func (b *buyer) release(o *order.Order) orderstate.Returned {
	b.t.Helper()
	r, err := orderstate.ReleaseUnit(context.Background(), b.rdb, o, b.fs.Spec.SKUs[0].BucketCount())
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// TestWarmOneBucketAsBefore: a SKU with buckets: 1 gets exactly the keys a
// SKU got before buckets existed: no declared key, no bucket tag.
func TestWarmOneBucketAsBefore(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := splitSale(t, rdb, 10, 1)
	if got := warmOK(t, rdb, fs); got.Buckets != nil || got.InFlight != 0 || got.Declared() != 10 {
		t.Fatalf("warm: %+v", got)
	}
	k := keys.ForSKU(fs.SaleKey(), "a")
	found, err := rdb.Keys(ctx, "fs:{"+fs.SaleKey()+"/*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(found)
	want := []string{k.Initial, k.Stream, k.Stock}
	slices.Sort(want)
	if !slices.Equal(found, want) {
		t.Fatalf("keys %v, want %v", found, want)
	}
}
