package buckets

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// refillTimeout bounds one shared refill: it runs for every caller waiting
// on it, so it must not end when the first caller gives up.
const refillTimeout = 5 * time.Second

// refillRounds bounds the rounds of one refill. A round that moves nothing
// saw stock that buyers took meanwhile, so the sale progressed; many such
// rounds in a row mean something is wrong rather than busy.
const refillRounds = 64

// Refiller refills a bucket that ran out from the other buckets of its SKU,
// for the seckill pods.
type Refiller struct {
	rdb     redis.UniversalClient
	saleKey string
	// group makes concurrent refills of one bucket in this pod one transfer
	// (golang.org/x/sync is already in the module graph).
	group singleflight.Group
	// joining counts the calls that reached the group, for a test to know
	// they all overlap.
	joining atomic.Int64
}

// NewRefiller returns a Refiller for sale saleKey.
func NewRefiller(rdb redis.UniversalClient, saleKey string) *Refiller {
	return &Refiller{rdb: rdb, saleKey: saleKey}
}

// Refill is called when bucket to of sku (split into n buckets) answered
// SOLD_OUT. It moves unsold units into it from the other buckets and returns
// how many; 0 with a nil error means every bucket is out and nothing is in
// flight: the SKU is sold out. Concurrent calls for one bucket share one transfer.
//
// It moves about half the richest other bucket's stock (at least 1), so
// stock follows demand without emptying a bucket whose buyers are busy too.
// When the bucket was refilled meanwhile (another pod), it moves nothing and
// returns the bucket's stock: any positive answer means "try again".
// Before answering 0 it completes any transfer in flight and looks again.
// While the SKU's buckets are held (see Hold) and units would have to leave
// bucket 0 or go between two other buckets, it answers an error wrapping
// ErrHeld: units are on sale, just not movable now (not a sell-out).
func (r *Refiller) Refill(ctx context.Context, sku string, n, to int) (int64, error) {
	if n <= 1 {
		return 0, nil
	}
	if to < 0 || to >= n {
		return 0, fmt.Errorf("buckets: cannot refill bucket %d of %d", to, n)
	}
	r.joining.Add(1)
	ch := r.group.DoChan(sku+"#"+strconv.Itoa(to)+"/"+strconv.Itoa(n), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refillTimeout)
		defer cancel()
		return refill(ctx, r.rdb, keys.Buckets(r.saleKey, sku, n), to)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return 0, res.Err
		}
		return res.Val.(int64), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func refill(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU, to int) (int64, error) {
	quiet := 0
	for range refillRounds {
		stocks, err := readStocks(ctx, rdb, ks)
		if err != nil {
			return 0, err
		}
		if stocks[to] > 0 {
			return stocks[to], nil
		}
		from := richest(stocks, to)
		if from >= 0 {
			quiet = 0
			m, err := move(ctx, rdb, ks[from], ks[to], (stocks[from]+1)/2)
			if errors.Is(err, ErrHeld) {
				// A lowering of the SKU is being applied, or bucket 0 still
				// owes part of it: no unit may leave for this bucket now,
				// but units are on sale in bucket from. Not a sell-out:
				// the buyer retries once the operator clears the Holds.
				// (A genuine sell-out while held, bucket 0 owing debt and
				// no stock anywhere, never gets here: nothing is richest.)
				return 0, fmt.Errorf("buckets: refill of bucket %d of SKU %s from bucket %d: %w", to, ks[to].ID, from, err)
			}
			if m > 0 || err != nil {
				return m, err
			}
			continue // buyers took it first: look again
		}
		recs, err := openRecords(ctx, rdb, ks)
		if err != nil {
			return 0, err
		}
		if len(recs) > 0 {
			quiet = 0
			if _, err := recoverAll(ctx, rdb, ks); err != nil {
				return 0, err
			}
			continue
		}
		// The buckets are read one by one, so a unit moving between two of
		// them can be missed by one round; it cannot hide from two rounds in
		// a row unless it moves twice in between. Two quiet rounds: sold out.
		if quiet++; quiet == 2 {
			return 0, nil
		}
	}
	return 0, fmt.Errorf("buckets: refill of bucket %d of SKU %s: stock kept vanishing for %d rounds", to, ks[to].ID, refillRounds)
}

// richest is the bucket other than to with the most stock, or -1 when every
// other bucket is out.
func richest(stocks []int64, to int) int {
	best := -1
	for b, s := range stocks {
		if b != to && s > 0 && (best < 0 || s > stocks[best]) {
			best = b
		}
	}
	return best
}

// readStocks reads every bucket's stock counter in one pipelined round (a
// missing counter reads 0).
func readStocks(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU) ([]int64, error) {
	cmds := make([]*redis.StringCmd, len(ks))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for b, k := range ks {
			cmds[b] = p.Get(ctx, k.Stock)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("buckets: read stock of SKU %s: %w", ks[0].ID, err)
	}
	out := make([]int64, len(ks))
	for b, c := range cmds {
		n, err := c.Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("buckets: read stock of SKU %s bucket %d: %w", ks[b].ID, b, err)
		}
		out[b] = n
	}
	return out, nil
}
