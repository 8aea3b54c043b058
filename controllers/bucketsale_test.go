package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// TestSplitSKUHalfDoneTransfer: a seckill pod that died between the two
// steps of a transfer leaves units given by one bucket and taken in by none;
// the operator's next status poll completes the transfer, so the units are on
// sale again in the receiving bucket and the SKU's figures still add up. On
// a standalone Redis the split gains nothing, and BucketsSpread says so. A
// bucket's counter lost mid-sale is reported, not re-created.
func TestSplitSKUHalfDoneTransfer(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.SKUs[0].Stock, fs.Spec.SKUs[0].Buckets = 30, 3
		fs.Spec.RateLimit.RequestsPerSecond = 25_000
	})
	warmAndOpen(t, e, false)
	e.wantBuckets("warmed", "1001", 30, 0, 10, 10, 10)
	e.wantCond(v1alpha1.ConditionBucketsSpread, metav1.ConditionFalse, v1alpha1.ReasonBucketsColocated)
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonBucketsColocated, "SKU 1001", "standalone Redis")
	for _, st := range e.get().Status.SKUs {
		// The sale's 25,000/s would want 3 shards, but a standalone Redis has one.
		if st.SuggestedBuckets != 1 {
			t.Fatalf("SKU %s suggests %d buckets on a standalone Redis, want 1", st.ID, st.SuggestedBuckets)
		}
	}

	bs := keys.Buckets(e.ns+"/"+saleName, "1001", 3)
	giveOnly(t, e.uc, bs[1], bs[2], 4)
	if n, err := buckets.InFlight(e.ctx, e.uc, e.ns+"/"+saleName, "1001", 3); err != nil || n != 4 {
		t.Fatalf("in flight after the give: %d %v, want 4", n, err)
	}
	e.reconcile()
	e.wantBuckets("the transfer completed", "1001", 30, 0, 10, 6, 14)
	if n, err := buckets.InFlight(e.ctx, e.uc, e.ns+"/"+saleName, "1001", 3); err != nil || n != 0 {
		t.Fatalf("in flight after the poll: %d %v, want 0", n, err)
	}

	// One bucket's counter lost mid-sale is a loss like a whole SKU's: not
	// re-created at its share (that would sell its sold units again).
	if err := e.uc.Del(e.ctx, bs[2].Stock).Err(); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionFalse, v1alpha1.ReasonKeysMissing)
	if n := e.uc.Exists(e.ctx, bs[2].Stock).Val(); n != 0 {
		t.Fatal("the lost bucket's counter was re-created mid-sale")
	}
}

// TestDeleteSplitSaleOpenedBeforeItsStatusSaidSo: a sale deleted before its
// status said it opened is salvaged when orders wait in any bucket's stream,
// not only bucket 0's: here every order was admitted in bucket 1 or 2.
func TestDeleteSplitSaleOpenedBeforeItsStatusSaidSo(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[1].Buckets = 3 })
	warmAndOpen(t, e, false) // Redis-only, and no worker runs
	shop := e.startSeckill()
	var away []string
	for _, u := range users("unrecorded", 60) {
		if keys.Home(u, 3) != 0 && len(away) < 6 {
			away = append(away, u)
		}
	}
	per, accepted := shop.buyAll("1002", 3, away)
	if per[0] != 0 || len(accepted) != 6 {
		t.Fatalf("admitted per bucket %v, want 6 orders none in bucket 0", per)
	}
	fs := e.get()
	base := fs.DeepCopy()
	fs.Status.OpenedAt = nil
	if err := e.k8s.Status().Patch(e.ctx, fs, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		if err := e.k8s.Delete(e.ctx, e.deployment(comp)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	e.reconcile()
	if !e.gone() {
		t.Fatal("the sale waited although no worker was left to drain it")
	}
	if stored, kept := e.checkNoneDropped(accepted, nil); stored != 6 || kept != 0 {
		t.Fatalf("stored %d, archived %d; want the 6 orders stored", stored, kept)
	}
}

// TestSplitSKUDebtPaidAcrossBuckets: a split SKU lowered below what its
// buyers hold owes the difference in the bucket whose buyers hold it; when
// those buyers pay and another bucket's buyers do not, the units their
// cancelled orders return must pay the debt, as an unsplit SKU's do, not go
// back on sale in their own bucket and sell the SKU beyond its lowered stock.
func TestSplitSKUDebtPaidAcrossBuckets(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.SKUs = []v1alpha1.SKU{{ID: "1001", Stock: 6, Price: "3999.00", PerUserLimit: 1, Buckets: 2}}
	})
	warmAndOpen(t, e, false)
	e.startWorker()
	shop := e.startSeckill()
	var home [2][]string
	for _, u := range users("buyer", 60) {
		if b := keys.Home(u, 2); len(home[b]) < 4 {
			home[b] = append(home[b], u)
		}
	}
	_, paying := shop.buyAll("1001", 2, home[0][:3])
	shop.buyAll("1001", 2, home[1][:3])
	e.eventually("6 orders stored", func() bool {
		st := e.get().Status
		return st.Sold == 6 && st.QueueLag == 0 && e.created() == 6
	})
	for _, o := range paying {
		if a := shop.pay(o); a.Status != http.StatusOK {
			t.Fatalf("pay %s: %d %s", o, a.Status, a.Error)
		}
	}
	e.setStock(3)
	e.reconcile()
	e.wantBuckets("lowered to 3", "1001", 3, 6, 0, 0)
	e.wantHolds("1001", 2, true)

	e.clk.SetTime(e.t0.Add(12 * time.Minute))
	if p := e.rollbackOnce(); p.Cancelled != 3 || p.Returned != 3 {
		t.Fatalf("rollback pass %+v, want bucket 1's 3 unpaid orders cancelled and returned", p)
	}
	e.reconcile()
	e.wantBuckets("the unpaid orders cancelled", "1001", 3, 3, 0, 0)
	if st := e.get().Status.SKUs[0]; st.Debt != 0 || !st.SoldOut {
		t.Fatalf("status %+v, want the debt paid off and the SKU sold out", st)
	}
	// The debt paid, the poll cleared the Holds: refills may spread units
	// again, and a returned unit goes back on sale in its own bucket.
	e.wantHolds("1001", 2, false)
	for _, u := range []string{home[0][3], home[1][3]} {
		if a := shop.buy(u, "1001"); a.Status != http.StatusGone || a.Error != "SOLD_OUT" {
			t.Fatalf("purchase by %s (home bucket %d) after the lowering was paid off: %d %s, want 410 SOLD_OUT",
				u, keys.Home(u, 2), a.Status, a.Error)
		}
	}
}

// wantHolds fails unless every bucket of SKU sku (split into n) has a Hold
// (held) or none has.
func (e *env) wantHolds(sku string, n int, held bool) {
	e.t.Helper()
	for _, k := range keys.Buckets(e.ns+"/"+saleName, sku, n) {
		if got := e.uc.Exists(e.ctx, k.Hold).Val() == 1; got != held {
			e.t.Fatalf("SKU %s bucket %d has a Hold: %v, want %v", sku, k.Bucket, got, held)
		}
	}
}

// giveOnly runs step 1 of a transfer alone (give.lua's effect: the units
// leave from's stock and initial into an open outbox record naming to), as
// a seckill pod that died right after it leaves it.
func giveOnly(t *testing.T, rdb redis.UniversalClient, from, to keys.SKU, units int64) {
	t.Helper()
	ctx := context.Background()
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.DecrBy(ctx, from.Stock, units)
		p.DecrBy(ctx, from.Initial, units)
		p.HSet(ctx, from.Outbox, "crashed-pod-transfer", fmt.Sprintf("%d %d", units, to.Bucket))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wantBuckets fails unless SKU sku's status shows stock declared, sold
// units held, and the buckets' remaining stock rem (bucket 0 first), with
// stock = remaining + sold − debt for the SKU and each bucket's sold adding
// up to the SKU's.
func (e *env) wantBuckets(what, sku string, stock, sold int64, rem ...int64) {
	e.t.Helper()
	var st *v1alpha1.SKUStatus
	for _, s := range e.get().Status.SKUs {
		if s.ID == sku {
			st = &s
		}
	}
	if st == nil {
		e.t.Fatalf("%s: no status of SKU %s", what, sku)
	}
	var got []int64
	var bucketSold, remaining int64
	for _, b := range st.Buckets {
		got = append(got, b.Remaining)
		bucketSold += b.Sold
		remaining += b.Remaining
	}
	if !reflect.DeepEqual(got, rem) || st.Stock != stock || st.Sold != sold || bucketSold != sold || remaining != st.Remaining {
		e.t.Fatalf("%s: SKU %s status %+v; want stock %d, sold %d, buckets' remaining %v", what, sku, *st, stock, sold, rem)
	}
	if st.Stock != st.Remaining+st.Sold-st.Debt {
		e.t.Fatalf("%s: %+v: stock ≠ remaining + sold − debt", what, *st)
	}
}

// TestSaleOnRedisCluster runs a whole sale with spec.redis.mode: cluster on
// a local 3-master Redis Cluster: a SKU split into 3 buckets and one not
// split go Pending → Warming → Active; the status shows each bucket on its
// own primary and BucketsSpread=True; purchases through the seckill API (each
// buyer in their home bucket), payments, a stock raise and a lowering
// mid-sale move the figures and keep stock = remaining + sold − debt; the
// sale settles (the unpaid orders cancelled, their units back in the buckets
// that sold them), the audit finds the law kept, and teardown leaves no key
// of the sale on any shard.
func TestSaleOnRedisCluster(t *testing.T) {
	e := newEnv(t, envOpts{cluster: true})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.SKUs = []v1alpha1.SKU{
			{ID: "hot", Stock: 90, Price: "3999.00", PerUserLimit: 1, Buckets: 3},
			{ID: "cold", Stock: 20, Price: "19.90", PerUserLimit: 1},
		}
		fs.Spec.RateLimit.RequestsPerSecond = 25_000
	})
	e.reconcile()
	e.wantPhase(v1alpha1.PhasePending)
	warmAndOpen(t, e, false)
	stopWorker := e.startWorker()
	e.wantBuckets("warmed", "hot", 90, 0, 30, 30, 30)
	e.wantSpreadOnClusterPrimaries("hot")
	e.wantCond(v1alpha1.ConditionBucketsSpread, metav1.ConditionTrue, v1alpha1.ReasonBucketsSpread)
	for _, st := range e.get().Status.SKUs {
		if st.SuggestedBuckets != 3 {
			t.Fatalf("SKU %s suggests %d buckets for 25,000/s on 3 primaries, want 3", st.ID, st.SuggestedBuckets)
		}
	}

	// 30 buyers of the hot SKU, each in their home bucket, and 5 of the
	// other; 10 of them pay.
	shop := e.startSeckill()
	buys, hot := shop.buyAll("hot", 3, users("hot-buyer", 30))
	shop.buyAll("cold", 1, users("cold-buyer", 5))
	e.eventually("35 orders in status", func() bool {
		st := e.get().Status
		return st.Sold == 35 && st.QueueLag == 0
	})
	for _, o := range hot[:10] {
		if a := shop.pay(o); a.Status != http.StatusOK {
			t.Fatalf("pay %s: %d %s", o, a.Status, a.Error)
		}
	}
	e.wantBuckets("30 sold", "hot", 90, 30, 30-buys[0], 30-buys[1], 30-buys[2])

	// A raise goes to bucket 0; a lowering first gathers every unsold unit
	// into bucket 0 and takes them back from there.
	e.setSKUStock("hot", 120)
	e.reconcile()
	e.wantBuckets("raised to 120", "hot", 120, 30, 60-buys[0], 30-buys[1], 30-buys[2])
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonStockRaised, "SKU hot stock raised by 30")
	e.setSKUStock("hot", 50)
	e.reconcile()
	e.wantBuckets("lowered to 50", "hot", 50, 30, 20, 0, 0)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonStockLowered, "SKU hot stock lowered from 120 to 50")

	// The end, then the payment window: the rollback returns the unit of
	// every unpaid order to the bucket that sold it, and the sale settles.
	e.clk.SetTime(e.t0.Add(20 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	e.clk.SetTime(e.t0.Add(21*time.Minute + time.Second))
	if p := e.rollbackOnce(); p.Cancelled != 25 || p.Returned != 25 {
		t.Fatalf("rollback pass %+v, want the 25 unpaid orders cancelled and returned", p)
	}
	stopWorker()
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	fs := e.get()
	if a := fs.Status.Audit; a == nil || !a.Conserved || a.Initial != 70 {
		t.Fatalf("final audit %+v, want conserved over 70 units (50 hot, 20 cold)", a)
	}
	if fs.Status.Paid != 10 || fs.Status.Cancelled != 25 {
		t.Fatalf("final status paid %d cancelled %d, want 10 and 25", fs.Status.Paid, fs.Status.Cancelled)
	}
	e.wantCond(v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	e.wantNoKeysOnAnyShard()
}

// wantSpreadOnClusterPrimaries fails unless each bucket of sku shows the
// primary that holds its slot, and no two share one.
func (e *env) wantSpreadOnClusterPrimaries(sku string) {
	e.t.Helper()
	cc := e.uc.(*redis.ClusterClient)
	seen := map[string]bool{}
	for _, st := range e.get().Status.SKUs {
		if st.ID != sku {
			continue
		}
		for _, b := range st.Buckets {
			m, err := cc.MasterForKey(e.ctx, keys.ForBucket(e.ns+"/"+saleName, sku, int(b.Bucket), len(st.Buckets)).Stock)
			if err != nil {
				e.t.Fatal(err)
			}
			if b.Primary == "" || b.Primary != m.Options().Addr || seen[b.Primary] {
				e.t.Fatalf("bucket %d on %q (its slot is on %s; seen %v): want each on its own primary", b.Bucket, b.Primary, m.Options().Addr, seen)
			}
			seen[b.Primary] = true
		}
	}
	if len(seen) != 3 {
		e.t.Fatalf("SKU %s on primaries %v, want 3", sku, seen)
	}
}

// buyAll buys sku through the shop for each user (each in their home
// bucket) and returns how many orders each of the SKU's n buckets admitted
// (an order number names its bucket) and the order numbers.
func (s *shop) buyAll(sku string, n int, users []string) ([]int64, []string) {
	s.e.t.Helper()
	per := make([]int64, n)
	var orders []string
	for _, u := range users {
		a := s.buy(u, sku)
		if a.Status != http.StatusAccepted {
			s.e.t.Fatalf("purchase of %s by %s: %d %s", sku, u, a.Status, a.Error)
		}
		b, _ := keys.BucketOf(a.OrderNo)
		if b != keys.Home(u, n) {
			s.e.t.Fatalf("order %s of %s admitted in bucket %d, not their home bucket %d", a.OrderNo, u, b, keys.Home(u, n))
		}
		per[b]++
		orders = append(orders, a.OrderNo)
	}
	return per, orders
}

// setSKUStock sets the declared stock of SKU sku.
func (e *env) setSKUStock(sku string, n int64) {
	e.t.Helper()
	fs := e.get()
	for i := range fs.Spec.SKUs {
		if fs.Spec.SKUs[i].ID == sku {
			fs.Spec.SKUs[i].Stock = n
		}
	}
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		e.t.Fatal(err)
	}
}

// wantNoKeysOnAnyShard SCANs every master of the cluster for a key of the
// sale.
func (e *env) wantNoKeysOnAnyShard() {
	e.t.Helper()
	var mu sync.Mutex
	var left []string
	err := e.uc.(*redis.ClusterClient).ForEachMaster(e.ctx, func(ctx context.Context, node *redis.Client) error {
		for _, p := range keys.Patterns(e.ns + "/" + saleName) {
			iter := node.Scan(ctx, 0, p, 1000).Iterator()
			for iter.Next(ctx) {
				mu.Lock()
				left = append(left, node.Options().Addr+" "+iter.Val())
				mu.Unlock()
			}
			if err := iter.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if len(left) > 0 {
		e.t.Fatalf("keys of the torn-down sale left:\n  %s", strings.Join(left, "\n  "))
	}
}

// TestSplitSKUMalformedTransferRecord: one transfer record the operator
// cannot complete (here a malformed one, as a bug or a hand edit leaves it)
// is that SKU's trouble, not the sale's: the poll still writes the figures,
// the sale shows Degraded (TransfersStuck, a Warning Event) naming the SKU,
// and the steps after the poll still run (the periodic audit here), instead
// of the whole reconcile stopping at its first step and the sale never
// settling. Once the record is fixed the sale is healthy again.
func TestSplitSKUMalformedTransferRecord(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[0].Stock, fs.Spec.SKUs[0].Buckets = 30, 3 })
	warmAndOpen(t, e, false)
	bs := keys.Buckets(e.ns+"/"+saleName, "1001", 3)
	if err := e.uc.HSet(e.ctx, bs[1].Outbox, "bad", "garbage").Err(); err != nil {
		t.Fatal(err)
	}
	before := e.get().Status.LastRefreshTime
	e.clk.SetTime(e.clk.Now().Add(time.Minute)) // past the audit interval
	e.reconcile()
	e.wantCond(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonTransfersStuck)
	if c := e.cond(v1alpha1.ConditionDegraded); !strings.Contains(c.Message, "SKU 1001") || !strings.Contains(c.Message, "malformed") {
		t.Fatalf("Degraded says %q, want it to name SKU 1001 and the malformed record", c.Message)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonTransfersStuck, "SKU 1001")
	fs := e.get()
	if fs.Status.LastRefreshTime == nil || !fs.Status.LastRefreshTime.After(before.Time) || fs.Status.Stock != int64(30+fs.Spec.SKUs[1].Stock) {
		t.Fatalf("the poll wrote no figures: refreshed %v (before %v), stock %d", fs.Status.LastRefreshTime, before, fs.Status.Stock)
	}
	// The periodic audit, a later step, ran (it cannot count the units in
	// flight either, and says so).
	e.wantCond(v1alpha1.ConditionStockConsistent, metav1.ConditionUnknown, v1alpha1.ReasonAuditFailed)
	if c := e.cond(v1alpha1.ConditionStockConsistent); !strings.Contains(c.Message, "malformed") {
		t.Fatalf("StockConsistent says %q, want the audit's failure on the malformed record", c.Message)
	}
	e.wantPhase(v1alpha1.PhaseActive)

	if err := e.uc.HDel(e.ctx, bs[1].Outbox, "bad").Err(); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.wantCond(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy)
}

// TestBucketCountChangeIsAConfigError: a split SKU removed from the spec and
// added back with another bucket count passes the CEL rule (no old value to
// compare), but its units live in the buckets it was warmed with. The sale
// says so as ConfigValid=False naming the SKU, Redis is left as it was, and
// putting the count back heals it.
func TestBucketCountChangeIsAConfigError(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[0].Stock, fs.Spec.SKUs[0].Buckets = 30, 2 })
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantCond(v1alpha1.ConditionConfigValid, metav1.ConditionTrue, v1alpha1.ReasonConfigValid)
	saleKey := e.ns + "/" + saleName
	stocks := func() []string {
		var out []string
		for _, k := range keys.Buckets(saleKey, "1001", 2) {
			out = append(out, e.uc.Get(e.ctx, k.Stock).Val())
		}
		return out
	}
	before := stocks()

	setSKUs := func(mod func([]v1alpha1.SKU) []v1alpha1.SKU) {
		t.Helper()
		fs := e.get()
		fs.Spec.SKUs = mod(fs.Spec.SKUs)
		if err := e.k8s.Update(e.ctx, fs); err != nil {
			t.Fatal(err)
		}
		e.reconcile()
	}
	phone := e.get().Spec.SKUs[0]
	setSKUs(func(s []v1alpha1.SKU) []v1alpha1.SKU { return s[1:] })
	setSKUs(func(s []v1alpha1.SKU) []v1alpha1.SKU {
		again := phone
		again.Buckets = 3
		return append([]v1alpha1.SKU{again}, s...)
	})
	e.wantCond(v1alpha1.ConditionConfigValid, metav1.ConditionFalse, v1alpha1.ReasonConfigInvalid)
	if msg := e.cond(v1alpha1.ConditionConfigValid).Message; !strings.Contains(msg, "spec.skus[].buckets") ||
		!strings.Contains(msg, "SKU 1001") || !strings.Contains(msg, "asks for 3") {
		t.Fatalf("ConfigValid message %q does not name the field, the SKU and the count", msg)
	}
	if after := stocks(); !slices.Equal(before, after) {
		t.Fatalf("a refused bucket count changed the stock: %v, then %v", before, after)
	}
	if n := e.uc.Exists(e.ctx, keys.Buckets(saleKey, "1001", 3)[2].Stock).Val(); n != 0 {
		t.Fatal("a third bucket was created")
	}

	// The CEL rule keeps the count of a SKU in the spec: it goes out and
	// back in with its old count, as it went.
	setSKUs(func(s []v1alpha1.SKU) []v1alpha1.SKU { return s[1:] })
	setSKUs(func(s []v1alpha1.SKU) []v1alpha1.SKU { return append([]v1alpha1.SKU{phone}, s...) })
	e.wantCond(v1alpha1.ConditionConfigValid, metav1.ConditionTrue, v1alpha1.ReasonConfigValid)
	if after := stocks(); !slices.Equal(before, after) {
		t.Fatalf("the stock changed once the count was put back: %v, then %v", before, after)
	}
}
