package seckill_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// homedIn returns a user whose home bucket (of n) is b, skipping used.
func homedIn(b, n int, used map[string]bool) string {
	for i := 0; ; i++ {
		u := "h" + strconv.Itoa(i)
		if !used[u] && keys.Home(u, n) == b {
			used[u] = true
			return u
		}
	}
}

// TestHeldSplitSKUIsNotSoldOut: a lowering holds a split SKU's buckets
// (units move only toward bucket 0) after gathering bucket 1's units into
// bucket 0. A buyer of the empty bucket 1 cannot be refilled now, but units
// are on sale: they get a retryable 503 (not a final 410), the pod does not
// close the SKU (a buyer of bucket 0 buys at once), and once the Holds are
// cleared the same token buys.
func TestHeldSplitSKUIsNotSoldOut(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "hot", Stock: 30, Price: "1.00", PerUserLimit: 1, Buckets: 3})
	s := startServer(t, rdb, fs, serverOpts{})
	sk := fs.SaleKey()
	if _, err := buckets.Move(ctx, rdb, sk, "hot", 3, 1, 0, 1000); err != nil { // as a gather would
		t.Fatal(err)
	}
	if err := buckets.Hold(ctx, rdb, sk, "hot", 3); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	u1, u0 := homedIn(1, 3, used), homedIn(0, 3, used)
	tk1 := s.token(u1, "hot")
	if r := s.purchase(u1, "hot", tk1.Token); r.Status != http.StatusServiceUnavailable || r.Error != "UNAVAILABLE" || r.RetryAfter == "" {
		t.Fatalf("buyer of the empty bucket 1 while held, units on sale in bucket 0: %d %s; want a retryable 503 UNAVAILABLE", r.Status, r.Body)
	}
	if r := s.buy(u0, "hot"); r.Status != http.StatusAccepted {
		t.Fatalf("buyer of bucket 0 right after: %d %s; want 202 (the SKU is on sale)", r.Status, r.Body)
	}
	if ok, err := buckets.EndLowering(ctx, rdb, sk, "hot", 3); err != nil || !ok {
		t.Fatalf("EndLowering with nothing owed: %t, %v", ok, err)
	}
	if r := s.purchase(u1, "hot", tk1.Token); r.Status != http.StatusAccepted {
		t.Fatalf("the same buyer and token once the Holds are cleared: %d %s; want 202", r.Status, r.Body)
	}
}

// TestHeldOwingSplitSKUIsSoldOut: every unit sold, then the stock lowered
// below the sold count: bucket 0 owes debt and the Holds stay, and no
// bucket has stock. That is a genuine sell-out: 410 SOLD_OUT, not endless
// 503s.
func TestHeldOwingSplitSKUIsSoldOut(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "hot", Stock: 3, Price: "1.00", PerUserLimit: 1, Buckets: 3})
	s := startServer(t, rdb, fs, serverOpts{})
	used := map[string]bool{}
	for b := range 3 {
		if r := s.buy(homedIn(b, 3, used), "hot"); r.Status != http.StatusAccepted {
			t.Fatalf("buyer of bucket %d: %d %s", b, r.Status, r.Body)
		}
	}
	lowered := fs.DeepCopy()
	lowered.Spec.SKUs[0].Stock = 1
	if _, err := warm.Warm(ctx, rdb, lowered); err != nil {
		t.Fatal(err)
	}
	k0 := keys.ForBucket(fs.SaleKey(), "hot", 0, 3)
	if d, _ := rdb.Get(ctx, k0.Debt).Int64(); d != 2 {
		t.Fatalf("bucket 0 owes %d after lowering 3 sold to 1; want 2", d)
	}
	if ok, err := buckets.ClearHold(ctx, rdb, fs.SaleKey(), "hot", 3); err != nil || ok {
		t.Fatalf("ClearHold while owing: %t, %v; want the Holds kept", ok, err)
	}
	for b := range 3 {
		if r := s.buy(homedIn(b, 3, used), "hot"); r.Status != http.StatusGone || r.Error != "SOLD_OUT" {
			t.Fatalf("buyer of bucket %d, held and owing, no stock anywhere: %d %s; want 410 SOLD_OUT", b, r.Status, r.Body)
		}
	}
}
