package purchase_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestBatchFailingMidWayWritesNothing: a batch whose later purchase carries
// a malformed argument (a limit or a payment deadline that is not a number)
// fails as a whole and leaves every key as it was: in particular no stream
// entry (an order for the pipeline) for an earlier purchase of the batch
// without its stock decrement.
func TestBatchFailingMidWayWritesNothing(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	if err := purchase.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name string
		arg  int // of the 7 per purchase
	}{{"limit", 2}, {"deadline", 4}} {
		t.Run(bad.name, func(t *testing.T) {
			saleKey := testutil.UniqueName(t) + "/s"
			for _, p := range keys.Patterns(saleKey) {
				testutil.CleanupKeys(t, rdb, p)
			}
			k := keys.ForSKU(saleKey, "x")
			rdb.Set(ctx, k.Stock, 10, 0)
			now := time.Now()
			batch := make([]purchase.Request, 3)
			for i := range batch {
				batch[i] = purchase.Request{SKU: "x", User: fmt.Sprintf("u%d", i), Limit: 1, Amount: "1",
					Nonce: fmt.Sprintf("n%d", i), Now: now, Deadline: now.Add(time.Minute)}
			}
			ks, args := purchase.Call(saleKey, batch)
			args[3+7*2+bad.arg] = "x" // the third purchase's
			if err := rdb.EvalSha(ctx, purchase.SHA(), ks, args...).Err(); err == nil {
				t.Fatal("a batch with a malformed argument succeeded")
			}
			for _, key := range []string{k.Stream, k.Holders, k.Seq, k.Expiry, k.Orders, k.Tokens} {
				if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
					t.Errorf("%s written by the failed batch (%v)", key, err)
				}
			}
			if st, _ := rdb.Get(ctx, k.Stock).Int64(); st != 10 {
				t.Errorf("stock %d after the failed batch, want 10", st)
			}
		})
	}
}
