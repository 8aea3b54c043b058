package purchase_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func TestSKUOf(t *testing.T) {
	no := purchase.OrderNo("shop/sale", "sku-with-dash", "u", 1, 0)
	if sku, ok := purchase.SKUOf(no); !ok || sku != "sku-with-dash" {
		t.Fatalf("SKUOf(%s) = %s %t", no, sku, ok)
	}
	for _, bad := range []string{"", "-", "1001", "1001-xyz", "1001-0123456789abcdef0123456", "-0123456789abcdef01234567", "1001-0123456789ABCDEF01234567"} {
		if _, ok := purchase.SKUOf(bad); ok {
			t.Errorf("SKUOf(%q) accepted", bad)
		}
	}
}

// TestScriptAllOrNothing calls the script directly: refusals write nothing,
// the order number is the documented function, and a missing counter is
// reported as not warmed rather than created.
func TestScriptAllOrNothing(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	saleKey := testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	s, err := purchase.New(rdb, saleKey, purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	req := purchase.Request{SKU: "x", User: "u", Limit: 1, Amount: "1.00", Nonce: "n1", Now: now, Deadline: now.Add(time.Minute)}
	r, err := s.Purchase(ctx, req)
	if err != nil || r.Outcome != purchase.NotWarmed {
		t.Fatalf("cold SKU: %+v %v", r, err)
	}
	k := keys.ForSKU(saleKey, "x")
	if n, _ := rdb.Exists(ctx, k.Stock, k.Holders, k.Seq, k.Stream, k.Expiry, k.Orders, k.Tokens).Result(); n != 0 {
		t.Fatalf("a refused purchase created %d keys", n)
	}
	rdb.Set(ctx, k.Stock, 1, 0)
	r, err = s.Purchase(ctx, req)
	if err != nil || r.Outcome != purchase.Admitted || r.Remaining != 0 || r.OrderNo != purchase.OrderNo(saleKey, "x", "u", 1, 0) {
		t.Fatalf("purchase: %+v %v", r, err)
	}
	req.Nonce, req.User = "n2", "v"
	if r, _ := s.Purchase(ctx, req); r.Outcome != purchase.SoldOut {
		t.Fatalf("second buyer: %+v", r)
	}
	if got := rdb.HGet(ctx, k.Tokens, "n1").Val(); got != r.OrderNo {
		t.Fatalf("token n1 remembers order %q, want %s", got, r.OrderNo)
	}
	if ok, _ := rdb.HExists(ctx, k.Tokens, "n2").Result(); ok {
		t.Fatal("a refused purchase consumed its token")
	}
}

// TestRetryLongAfterTheTokenExpired: a token's order is found again however
// long after the token expired the retry comes and whatever the skew between
// the pod's clock and Redis': a pod may accept a token until the expiry
// written in it by its own clock, so no clock may decide when the record of
// its order goes. The record has no expiry (Redis never drops it on its own:
// only teardown, with the sale's other keys), and a retry made an hour after
// the token expired, by a pod whose clock runs an hour ahead or behind,
// gets the same order and sells nothing.
func TestRetryLongAfterTheTokenExpired(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	saleKey := testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	s, err := purchase.New(rdb, saleKey, purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	k := keys.ForSKU(saleKey, "x")
	rdb.Set(ctx, k.Stock, 10, 0)
	for i, skew := range []time.Duration{0, time.Hour, -time.Hour} {
		podNow := time.Now().Add(skew) // the pod's clock, skew ahead of Redis'
		req := purchase.Request{SKU: "x", User: "u" + strconv.Itoa(i), Limit: 2, Amount: "1.00",
			Nonce: "n" + strconv.Itoa(i), Now: podNow, Deadline: podNow.Add(time.Minute)}
		first, err := s.Purchase(ctx, req)
		if err != nil || first.Outcome != purchase.Admitted {
			t.Fatalf("skew %v: %+v %v", skew, first, err)
		}
		if ttl, err := rdb.PTTL(ctx, k.Tokens).Result(); err != nil || ttl != -1 {
			t.Fatalf("skew %v: the tokens' records expire in %v (%v): Redis would drop them on its own", skew, ttl, err)
		}
		req.Now = podNow.Add(time.Hour) // an hour after a 10 s token expired
		req.Deadline = req.Now.Add(time.Minute)
		retry, err := s.Purchase(ctx, req)
		if err != nil || retry.Outcome != purchase.Replayed || retry.OrderNo != first.OrderNo {
			t.Errorf("skew %v: retry an hour later: %+v %v, want the order %s replayed", skew, retry, err, first.OrderNo)
		}
	}
	if got := rdb.Get(ctx, k.Stock).Val(); got != "7" {
		t.Errorf("stock %s after 3 purchases and their retries, want 7", got)
	}
}
