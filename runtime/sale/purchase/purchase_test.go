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
	if err != nil || r.Outcome != purchase.Admitted || r.Remaining != 0 || r.OrderNo != purchase.OrderNo(saleKey, "x", "u", 1, 0) {
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

// TestReplayKeyOutlivesTheToken: the key that remembers a token's order
// must live as long as any pod may still accept the token, whatever the
// skew between the pod's clock and Redis'. A pod judges the token by the
// expiry written in it, so the key lives until that expiry plus
// ReplayMargin; and when the pod's clock is behind Redis', at least the
// token's remaining life on the pod plus the margin, counted from Redis' now.
func TestReplayKeyOutlivesTheToken(t *testing.T) {
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
	const ttl = 10 * time.Second
	for i, skew := range []time.Duration{0, time.Hour, -time.Hour, 45 * time.Second, -45 * time.Second} {
		redisNow, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		podNow := redisNow.Add(skew) // the pod's clock, skew ahead of Redis'
		exp := podNow.Add(ttl).Truncate(time.Millisecond)
		nonce := "n" + strconv.Itoa(i)
		r, err := s.Purchase(ctx, purchase.Request{SKU: "x", User: "u" + strconv.Itoa(i), Limit: 1, Amount: "1.00",
			Nonce: nonce, Now: podNow, Deadline: podNow.Add(time.Minute), TokenExpiry: exp})
		if err != nil || r.Outcome != purchase.Admitted {
			t.Fatalf("skew %v: %+v %v", skew, r, err)
		}
		at, err := rdb.PExpireTime(ctx, k.Token(nonce)).Result()
		if err != nil {
			t.Fatal(err)
		}
		expiresAt := time.UnixMilli(int64(at / time.Millisecond))
		// The pod accepts the token until its clock reads exp, i.e. until
		// Redis' clock reads exp - skew.
		lastAccepted := exp.Add(-skew)
		want := exp.Add(purchase.ReplayMargin) // by the token's own expiry
		if lastAccepted.Add(purchase.ReplayMargin).After(want) {
			want = lastAccepted.Add(purchase.ReplayMargin) // Redis ahead of the pod
		}
		// Redis' now moved a little between TIME and the script: allow 1 s.
		if expiresAt.Before(want) || expiresAt.After(want.Add(time.Second)) {
			t.Errorf("skew %v: the token key expires at %s, want %s (the token expires at %s by the pod's clock, %s by Redis')",
				skew, expiresAt.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano),
				exp.UTC().Format(time.RFC3339Nano), lastAccepted.UTC().Format(time.RFC3339Nano))
		}
	}
}
