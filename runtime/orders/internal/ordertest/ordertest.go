// Package ordertest holds what the tests of the order packages (rollback,
// audit) share about SKUs split into buckets: warming every bucket, and
// buyers spread evenly over the buckets.
package ordertest

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

// Warm warms fs (warm.Warm) and makes sure every bucket of each split SKU
// holds its share of the stock (stock/n, the remainder to the lowest
// buckets), with the relay group on its stream. While warm gives a split
// SKU's whole stock to bucket 0, this spreads it the way the design says
// warm will; once warm spreads it, this finds it spread and does nothing.
func Warm(t testing.TB, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) {
	t.Helper()
	ctx := context.Background()
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	for _, sku := range fs.Spec.SKUs {
		n := sku.BucketCount()
		if n == 1 {
			continue
		}
		ks := keys.Buckets(fs.SaleKey(), sku.ID, n)
		spread, err := rdb.Exists(ctx, ks[1].Initial).Result()
		if err != nil {
			t.Fatal(err)
		}
		if spread == 1 {
			continue
		}
		for b, k := range ks {
			share := Share(sku.Stock, n, b)
			pipe := rdb.TxPipeline() // one bucket: one hash tag
			pipe.Set(ctx, k.Stock, share, 0)
			pipe.Set(ctx, k.Initial, share, 0)
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			err := rdb.XGroupCreateMkStream(ctx, k.Stream, keys.RelayGroup, "0").Err()
			if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
				t.Fatal(err)
			}
		}
	}
}

// Share is bucket b's share of stock split into n buckets.
func Share(stock int64, n, b int) int64 {
	s := stock / int64(n)
	if int64(b) < stock%int64(n) {
		s++
	}
	return s
}

// Buyers returns stock user ids (prefix followed by a number), as many in
// each bucket of a SKU split into n buckets as that bucket's Share: every
// buyer buys in their home bucket (keys.Home), so these sell every bucket
// out exactly, without moving stock between buckets.
func Buyers(prefix string, stock int64, n int) []string {
	want := make([]int64, n)
	for b := range want {
		want[b] = Share(stock, n, b)
	}
	out := make([]string, 0, stock)
	for i := 0; int64(len(out)) < stock; i++ {
		u := fmt.Sprintf("%s%d", prefix, i)
		if b := keys.Home(u, n); want[b] > 0 {
			want[b]--
			out = append(out, u)
		}
	}
	return out
}
