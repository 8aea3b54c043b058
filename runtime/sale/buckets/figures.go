package buckets

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Figures are one bucket's counters.
type Figures struct {
	Bucket int
	// Stock is units on sale, Initial = Stock + units buyers hold, Debt the
	// units this bucket owes (a returned unit pays it off first).
	Stock, Initial, Debt int64
}

// Held is the units buyers hold in the bucket.
func (f Figures) Held() int64 { return f.Initial - f.Stock }

// Read reads the counters of every bucket of the SKU, bucket 0 first, in
// one pipelined round (not one instant: a transfer may be in flight).
func Read(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) ([]Figures, error) {
	return readFigures(ctx, rdb, keys.Buckets(saleKey, sku, n))
}

func readFigures(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU) ([]Figures, error) {
	cmds := make([][3]*redis.StringCmd, len(ks))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for b, k := range ks {
			cmds[b] = [3]*redis.StringCmd{p.Get(ctx, k.Stock), p.Get(ctx, k.Initial), p.Get(ctx, k.Debt)}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("buckets: read counters of SKU %s: %w", ks[0].ID, err)
	}
	out := make([]Figures, len(ks))
	for b, c := range cmds {
		var v [3]int64
		for i, cmd := range c {
			n, err := cmd.Int64()
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("buckets: read counters of SKU %s bucket %d: %w", ks[b].ID, b, err)
			}
			v[i] = n
		}
		out[b] = Figures{Bucket: b, Stock: v[0], Initial: v[1], Debt: v[2]}
	}
	return out, nil
}
