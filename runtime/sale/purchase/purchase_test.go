package purchase_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func TestSKUOf(t *testing.T) {
	no := purchase.OrderNo("shop/sale", "sku-with-dash", "u", 1)
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
	req := purchase.Request{SKU: "x", User: "u", Limit: 1, Amount: "1.00", Nonce: "n1", Now: now, Deadline: now.Add(time.Minute), TokenTTL: time.Second}
	r, err := s.Purchase(ctx, req)
	if err != nil || r.Outcome != purchase.NotWarmed {
		t.Fatalf("cold SKU: %+v %v", r, err)
	}
	k := keys.ForSKU(saleKey, "x")
	if n, _ := rdb.Exists(ctx, k.Stock, k.Holders, k.Seq, k.Stream, k.Expiry, k.Orders, k.Token("n1")).Result(); n != 0 {
		t.Fatalf("a refused purchase created %d keys", n)
	}
	rdb.Set(ctx, k.Stock, 1, 0)
	r, err = s.Purchase(ctx, req)
	if err != nil || r.Outcome != purchase.Admitted || r.Remaining != 0 || r.OrderNo != purchase.OrderNo(saleKey, "x", "u", 1) {
		t.Fatalf("purchase: %+v %v", r, err)
	}
	req.Nonce, req.User = "n2", "v"
	if r, _ := s.Purchase(ctx, req); r.Outcome != purchase.SoldOut {
		t.Fatalf("second buyer: %+v", r)
	}
	if ttl, _ := rdb.PTTL(ctx, k.Token("n1")).Result(); ttl <= 0 {
		t.Fatalf("token nonce key without a TTL: %v", ttl)
	}
	if n, _ := rdb.Exists(ctx, k.Token("n2")).Result(); n != 0 {
		t.Fatal("a refused purchase consumed its token")
	}
}
