package warm_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// bothRedis runs f on the standalone Redis and on the 3-master cluster.
func bothRedis(t *testing.T, f func(t *testing.T, rdb redis.UniversalClient)) {
	t.Run("standalone", func(t *testing.T) { f(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { f(t, testutil.RedisCluster(t).Client(t)) })
}

// TestLoweringRacingRefillsNeverOversells: 40 of 100 units are held, 20 in
// each of 2 buckets, and a pod keeps refilling bucket 1 from bucket 0
// whenever bucket 1 runs out, while the stock is lowered to 50. Exactly 10
// units may stay on sale, and none may be owed. Without the Holds, a refill
// between the gathering and the lowering carried units out of bucket 0,
// which then owed them while they stayed on sale in bucket 1 (20 too many
// in about half the trials).
func TestLoweringRacingRefillsNeverOversells(t *testing.T) {
	bothRedis(t, func(t *testing.T, rdb redis.UniversalClient) {
		for trial := range 30 {
			lowerRacingRefills(t, rdb, trial)
		}
	})
}

func lowerRacingRefills(t *testing.T, rdb redis.UniversalClient, trial int) {
	ctx := context.Background()
	fs := splitSale(t, rdb, 100, 2)
	warmOK(t, rdb, fs)
	b := newBuyer(t, rdb, fs)
	b.buy(0, 20)
	b.buy(1, 20)
	k1 := keys.ForBucket(fs.SaleKey(), "a", 1, 2)
	refill := buckets.NewRefiller(rdb, fs.SaleKey())
	stop, started, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			if i == 1 {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
			if s, _ := rdb.Get(ctx, k1.Stock).Int64(); s <= 0 {
				_, _ = refill.Refill(ctx, "a", 2, 1)
			}
		}
	}()
	<-started
	fs.Spec.SKUs[0].Stock = 50 // 40 held: 10 stay on sale
	_, err := warm.Warm(ctx, rdb, fs)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	got := warmOK(t, rdb, fs)
	checkSplit(t, got, 50)
	if got.Remaining != 10 || got.Debt != 0 {
		t.Fatalf("trial %d: lowered to 50 with 40 held racing refills: %d on sale, %d owed, want 10 and 0: %+v",
			trial, got.Remaining, got.Debt, got)
	}
}

// TestReturnToAnotherBucketPaysBucketZero: 8 of 10 units are held, 4 in
// each of 2 buckets; lowering to 4 leaves bucket 0 owing 4. A unit returned
// to bucket 1 pays that debt (it does not go back on sale in bucket 1), so
// the next buyer of bucket 1 is refused; once 4 units came back the debt is
// paid, the Holds are cleared, and a return goes back on sale in its own
// bucket again.
func TestReturnToAnotherBucketPaysBucketZero(t *testing.T) {
	bothRedis(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		fs := splitSale(t, rdb, 10, 2)
		warmOK(t, rdb, fs)
		b := newBuyer(t, rdb, fs)
		held0, held1 := b.buy(0, 4), b.buy(1, 4)
		fs.Spec.SKUs[0].Stock = 4
		got := warmOK(t, rdb, fs)
		checkSplit(t, got, 4)
		if got.Remaining != 0 || got.Buckets[0].Debt != 4 {
			t.Fatalf("lower to 4 with 8 held: %+v, want bucket 0 owing 4", got)
		}
		if r := b.release(held1[0]); r != orderstate.PaidDebt {
			t.Fatalf("return to bucket 1 while bucket 0 owes: %v, want it to pay the debt", r)
		}
		if out := b.try(1); out != purchase.SoldOut {
			t.Fatalf("a buyer of bucket 1 after the return: %v, want sold out", out)
		}
		got = warmOK(t, rdb, fs)
		checkSplit(t, got, 4)
		if got.Debt != 3 || got.Remaining != 0 {
			t.Fatalf("after one return: %+v, want 3 owed and nothing on sale", got)
		}
		clearHold := func() bool {
			t.Helper()
			ok, err := buckets.ClearHold(ctx, rdb, fs.SaleKey(), "a", 2)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if clearHold() || holds(t, rdb, fs.SaleKey()) != 2 {
			t.Fatal("the Holds went while bucket 0 still owes")
		}
		for _, o := range []int{1, 2} {
			if r := b.release(held1[o]); r != orderstate.PaidDebt {
				t.Fatalf("return %d to bucket 1: %v, want it to pay the debt", o, r)
			}
		}
		if r := b.release(held0[0]); r != orderstate.PaidDebt {
			t.Fatalf("last return, to bucket 0: %v, want it to pay the debt", r)
		}
		if !clearHold() || holds(t, rdb, fs.SaleKey()) != 0 {
			t.Fatal("the Holds stayed after the debt was paid")
		}
		if r := b.release(held1[3]); r != orderstate.BackOnSale {
			t.Fatalf("a return to bucket 1 with nothing owed: %v, want it back on sale", r)
		}
		got = warmOK(t, rdb, fs)
		checkSplit(t, got, 4)
		if got.Buckets[1].Remaining != 1 || got.Debt != 0 {
			t.Fatalf("after the debt was paid: %+v, want the last return on sale in bucket 1", got)
		}
	})
}

// TestRaiseAfterLoweringCancelsTheDebt: 70 of 100 units held (10 in bucket
// 0, 60 in bucket 1), lowered to 50: nothing on sale, 20 owed. A raise to
// 70 cancels the whole debt and puts nothing on sale (as for an unsplit
// SKU); a raise to 75 then puts exactly 5 on sale, and the Holds are gone.
func TestRaiseAfterLoweringCancelsTheDebt(t *testing.T) {
	bothRedis(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		fs := splitSale(t, rdb, 100, 2)
		fs.Spec.SKUs[0].PerUserLimit = 100
		warmOK(t, rdb, fs)
		if _, err := buckets.Move(ctx, rdb, fs.SaleKey(), "a", 2, 0, 1, 30); err != nil {
			t.Fatal(err)
		}
		b := newBuyer(t, rdb, fs)
		b.buy(0, 10)
		b.buy(1, 60)
		fs.Spec.SKUs[0].Stock = 50
		got := warmOK(t, rdb, fs)
		checkSplit(t, got, 50)
		if got.Remaining != 0 || got.Debt != 20 {
			t.Fatalf("lower to 50 with 70 held: %+v, want 20 owed", got)
		}
		for _, c := range []struct{ stock, onSale int64 }{{70, 0}, {75, 5}} {
			fs.Spec.SKUs[0].Stock = c.stock
			got = warmOK(t, rdb, fs)
			checkSplit(t, got, c.stock)
			if got.Remaining != c.onSale || got.Debt != 0 {
				t.Fatalf("raise to %d with 70 held: %+v, want %d on sale and nothing owed", c.stock, got, c.onSale)
			}
		}
		if n := holds(t, rdb, fs.SaleKey()); n != 0 {
			t.Fatalf("%d Holds left after the raise paid the debt", n)
		}
	})
}

// TestBucketCountCannotChange: a warmed SKU warmed again with another bucket
// count (removed and added again, or another manifest given to `flashsale
// warm`) is refused with an error naming the SKU and both counts, and
// nothing in Redis changes; before, new buckets put the stock on sale a
// second time (116 units on sale for 100).
func TestBucketCountCannotChange(t *testing.T) {
	for _, c := range []struct{ from, to int32 }{{2, 3}, {1, 2}, {2, 1}, {3, 2}} {
		t.Run(fmt.Sprintf("%d to %d", c.from, c.to), func(t *testing.T) {
			rdb := testutil.Redis(t)
			fs := splitSale(t, rdb, 100, c.from)
			warmOK(t, rdb, fs)
			before := dumpSale(t, rdb, fs.SaleKey())
			fs.Spec.SKUs[0].Buckets = c.to
			_, err := warm.Warm(context.Background(), rdb, fs)
			if !errors.Is(err, warm.ErrBucketCount) || !strings.Contains(err.Error(), "SKU a ") ||
				!strings.Contains(err.Error(), fmt.Sprintf("into %d bucket", c.from)) ||
				!strings.Contains(err.Error(), fmt.Sprintf("asks for %d", c.to)) {
				t.Fatalf("warm with %d buckets after %d: %v, want a refusal naming both", c.to, c.from, err)
			}
			if after := dumpSale(t, rdb, fs.SaleKey()); !maps.Equal(before, after) {
				t.Fatalf("a refused warm-up changed Redis:\nbefore %v\nafter  %v", before, after)
			}
			fs.Spec.SKUs[0].Buckets = c.from
			if got := warmOK(t, rdb, fs); got.Action != "unchanged" || got.Declared() != 100 {
				t.Fatalf("warm with the recorded count: %+v", got)
			}
		})
	}
}

// TestClearHoldWaitsForTheLowering: while a warm-up applies a lowering
// (Holds set, the lowering not yet applied, so nothing owed yet) the
// operator's ClearHold leaves the Holds; the warm-up's end clears them when
// nothing is owed.
func TestClearHoldWaitsForTheLowering(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := splitSale(t, rdb, 10, 3)
	warmOK(t, rdb, fs)
	if err := buckets.Hold(ctx, rdb, fs.SaleKey(), "a", 3); err != nil {
		t.Fatal(err)
	}
	if ok, err := buckets.ClearHold(ctx, rdb, fs.SaleKey(), "a", 3); err != nil || ok || holds(t, rdb, fs.SaleKey()) != 3 {
		t.Fatalf("ClearHold during a lowering: %t, %v, %d Holds; want all 3 kept", ok, err, holds(t, rdb, fs.SaleKey()))
	}
	if m, err := buckets.Move(ctx, rdb, fs.SaleKey(), "a", 3, 0, 1, 1); !errors.Is(err, buckets.ErrHeld) || m != 0 {
		t.Fatalf("move out of a held bucket 0: %d, %v; want ErrHeld", m, err)
	}
	if ok, err := buckets.EndLowering(ctx, rdb, fs.SaleKey(), "a", 3); err != nil || !ok || holds(t, rdb, fs.SaleKey()) != 0 {
		t.Fatalf("EndLowering with nothing owed: %t, %v", ok, err)
	}
}

// try makes one purchase in bucket b (refilling once when it is out, as a
// pod does) and answers its outcome.
func (b *buyer) try(bucket int) purchase.Outcome {
	b.t.Helper()
	ctx := context.Background()
	n := b.fs.Spec.SKUs[0].BucketCount()
	b.n++
	user := fmt.Sprintf("try%d", b.n)
	for range 2 {
		now := time.Now()
		res, err := b.script.Purchase(ctx, purchase.Request{SKU: "a", Bucket: bucket, Buckets: n, User: user, Limit: 10,
			Amount: "1.00", Nonce: user, Now: now, Deadline: now.Add(time.Hour)})
		if err != nil {
			b.t.Fatal(err)
		}
		if res.Outcome != purchase.SoldOut {
			return res.Outcome
		}
		if m, err := b.refill.Refill(ctx, "a", n, bucket); err != nil || m == 0 {
			return purchase.SoldOut
		}
	}
	return purchase.SoldOut
}

// holds counts the SKU's buckets that have a Hold.
func holds(t *testing.T, rdb redis.UniversalClient, sale string) int {
	t.Helper()
	found := 0
	err := forEachKey(rdb, "fs:{"+sale+"/*", func(key string) {
		if strings.HasSuffix(key, ":hold") {
			found++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// forEachKey calls f on every key matching pattern (every primary of a
// cluster), one call at a time.
func forEachKey(rdb redis.UniversalClient, pattern string, f func(string)) error {
	ctx := context.Background()
	var mu sync.Mutex
	scan := func(ctx context.Context, c *redis.Client) error {
		keys, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			f(k)
		}
		return err
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, scan)
	}
	return scan(ctx, rdb.(*redis.Client))
}

// dumpSale is every key of the sale with its serialized value.
func dumpSale(t *testing.T, rdb redis.UniversalClient, sale string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var all []string
	for _, p := range keys.Patterns(sale) {
		if err := forEachKey(rdb, p, func(k string) { all = append(all, k) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range slices.Compact(slices.Sorted(slices.Values(all))) {
		v, err := rdb.Dump(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}
