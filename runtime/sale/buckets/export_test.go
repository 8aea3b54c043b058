package buckets

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// SetBetween replaces the hook between the steps of a transfer until the
// test ends.
func SetBetween(t interface{ Cleanup(func()) }, f func(step string)) {
	old := between
	between = f
	t.Cleanup(func() { between = old })
}

// Joining is how many Refill calls have reached the singleflight group.
func (r *Refiller) Joining() int64 { return r.joining.Load() }

// Give runs step 1 of a transfer alone: what a crash right after it leaves.
func Give(ctx context.Context, rdb redis.UniversalClient, from, to keys.SKU, id string, units int64) (int64, error) {
	return giveScript.Run(ctx, rdb, []string{from.Stock, from.Initial, from.Outbox, from.Hold}, id, units, to.Bucket).Int64()
}
