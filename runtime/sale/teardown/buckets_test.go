package teardown_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestDeleteKeysOfBuckets: on the 3-master cluster, a SKU split into 3
// buckets (each on its own primary) with orders, tokens' records, transfer
// records and a debt in every bucket loses every key of every bucket (a
// token's record, which has no expiry of its own, is gone with them), and
// the sale whose name it prefixes keeps its own.
func TestDeleteKeysOfBuckets(t *testing.T) {
	rdb := testutil.RedisCluster(t).Client(t)
	ctx := context.Background()
	ns := testutil.UniqueName(t)
	gone := warmSplitSale(t, rdb, ns, "sale")
	kept := warmSplitSale(t, rdb, ns, "sale2")
	ks := keys.Buckets(gone.SaleKey(), "a", 3)
	s, err := purchase.New(rdb, gone.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for b, k := range ks {
		now := time.Now()
		user := "u" + string(rune('0'+b))
		res, err := s.Purchase(ctx, purchase.Request{SKU: "a", Bucket: b, Buckets: 3, User: user, Limit: 1, Amount: "1",
			Nonce: "n" + user, Now: now, Deadline: now.Add(time.Hour)})
		if err != nil || res.Outcome != purchase.Admitted {
			t.Fatalf("purchase in bucket %d: %+v %v", b, res, err)
		}
		rdb.Set(ctx, k.Debt, 1, 0)
		if m, err := buckets.Move(ctx, rdb, gone.SaleKey(), "a", 3, b, (b+1)%3, 1); err != nil || m != 1 {
			t.Fatalf("move from bucket %d: %d %v", b, m, err)
		}
	}
	before := saleKeys(t, rdb, gone.SaleKey())
	for _, k := range ks {
		for _, key := range []string{k.Stock, k.Holders, k.Seq, k.Stream, k.Expiry, k.Orders, k.Outbox, k.Inbox, k.Tokens} {
			if !before[key] {
				t.Fatalf("bucket %d: the setup left no key %s", k.Bucket, key)
			}
		}
	}
	n, err := teardown.DeleteKeys(ctx, rdb, gone.SaleKey())
	if err != nil {
		t.Fatal(err)
	}
	if left := saleKeys(t, rdb, gone.SaleKey()); len(left) != 0 || n != int64(len(before)) {
		t.Fatalf("deleted %d of %d keys; left %v", n, len(before), left)
	}
	for _, k := range ks {
		nonce := "nu" + string(rune('0'+k.Bucket))
		if r, err := s.Replay(ctx, k, nonce); err != nil || r.Outcome != purchase.NoOrder {
			t.Errorf("bucket %d: token %s still finds %+v (%v) after teardown", k.Bucket, nonce, r, err)
		}
	}
	for _, k := range keys.Buckets(kept.SaleKey(), "a", 3) {
		if c, _ := rdb.Exists(ctx, k.Stock).Result(); c != 1 {
			t.Errorf("the other sale's bucket %d lost its stock", k.Bucket)
		}
	}
}

// warmSplitSale warms a sale whose SKU "a" is split into 3 buckets.
func warmSplitSale(t *testing.T, rdb redis.UniversalClient, ns, name string) *v1alpha1.FlashSale {
	t.Helper()
	fs := saleSpec(t, rdb, ns, name)
	fs.Spec.SKUs = fs.Spec.SKUs[:1]
	fs.Spec.SKUs[0].Buckets = 3
	fs.Spec.SKUs[0].Stock = 30
	warmSpec(t, rdb, fs)
	return fs
}

// saleKeys lists every key of sale on every primary (the sale-wide keys
// and every bucket's, whatever its slot).
func saleKeys(t *testing.T, rdb *redis.ClusterClient, sale string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	found := map[string]bool{}
	var mu sync.Mutex
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		all, err := node.Keys(ctx, "*").Result()
		for _, k := range all {
			if strings.HasPrefix(k, "fs:{"+sale+"}") || strings.HasPrefix(k, "fs:{"+sale+"/") {
				mu.Lock()
				found[k] = true
				mu.Unlock()
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
