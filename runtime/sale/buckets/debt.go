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

// SpreadDebt makes bucket to's debt no larger than what its buyers hold,
// by handing the excess to the other buckets: each gives its unsold units
// first (they pay to's debt and leave the sale) and then owes units its own
// buyers hold (a debt their returns pay off there). A lowering applied to
// bucket 0 of a split SKU may owe more than bucket 0's buyers hold; after
// this, every unit owed is owed where a buyer holds one, so every returned
// unit pays its own bucket's debt before it goes back on sale. It returns
// the units moved, and how much of to's debt no bucket could take (units
// owed for which no buyer holds a unit: only when the counters are off).
func SpreadDebt(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n, to int) (moved, left int64, err error) {
	ks := keys.Buckets(saleKey, sku, n)
	if to < 0 || to >= len(ks) {
		return 0, 0, fmt.Errorf("buckets: cannot spread the debt of bucket %d of %d", to, n)
	}
	if _, err := recoverAll(ctx, rdb, ks); err != nil {
		return 0, 0, err
	}
	for range refillRounds {
		fs, err := readFigures(ctx, rdb, ks)
		if err != nil {
			return moved, 0, err
		}
		excess := fs[to].Debt - fs[to].Held()
		if excess <= 0 {
			return moved, 0, nil
		}
		m, err := spreadRound(ctx, rdb, ks, fs, to, excess)
		moved += m
		if err != nil || m == 0 {
			return moved, excess, err
		}
	}
	return moved, 0, fmt.Errorf("buckets: spreading the debt of SKU %s bucket %d did not settle", ks[to].ID, to)
}

// spreadRound asks each other bucket, in turn, for what it can give of
// excess (its stock, then what its buyers hold beyond its own debt).
func spreadRound(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU, fs []Figures, to int, excess int64) (int64, error) {
	var moved int64
	for b, f := range fs {
		capacity := max(f.Stock, 0) + max(f.Held()-f.Debt, 0)
		if b == to || capacity <= 0 || excess <= 0 {
			continue
		}
		m, err := move(ctx, rdb, ks[b], ks[to], min(excess, capacity), true)
		moved += m
		excess -= m
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}
