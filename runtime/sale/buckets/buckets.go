// Package buckets moves unsold stock between the buckets of a SKU split into
// buckets (spec.skus[].buckets), crash-safely, and owns the transfer records
// (keys.SKU.Outbox and Inbox).
//
// STUB: the signatures below are the contract other packages code against;
// the implementation replaces the bodies.
package buckets

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

var errNotYet = errors.New("buckets: not implemented yet")

// Move moves up to n unsold units from bucket from to bucket to of SKU sku
// of sale saleKey and returns how many it moved (fewer when from has fewer).
func Move(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, from, to int, n int64) (int64, error) {
	return 0, errNotYet
}

// Refiller refills a bucket that ran out from the other buckets of its SKU,
// for the seckill pods.
type Refiller struct {
	rdb     redis.UniversalClient
	saleKey string
}

// NewRefiller returns a Refiller for sale saleKey.
func NewRefiller(rdb redis.UniversalClient, saleKey string) *Refiller {
	return &Refiller{rdb: rdb, saleKey: saleKey}
}

// Refill is called when bucket to of sku (split into n buckets) answered
// SOLD_OUT. It moves unsold units into it from the other buckets and returns
// how many; 0 with a nil error means every bucket is out: the SKU is sold
// out. Concurrent calls for one bucket share one transfer.
func (r *Refiller) Refill(ctx context.Context, sku string, n, to int) (int64, error) {
	return 0, errNotYet
}

// Gather moves every unsold unit of the SKU's n buckets into bucket to (a
// lowering of the stock takes them back from there) and returns how many.
func Gather(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n, to int) (int64, error) {
	return 0, errNotYet
}

// Recover completes every transfer a crash left half-done (given, not yet
// taken in) among the SKU's n buckets and returns how many it completed.
func Recover(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) (int, error) {
	return 0, errNotYet
}

// InFlight is the number of units of the SKU given by one bucket and not
// yet taken in by another: the conservation law counts them.
func InFlight(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) (int64, error) {
	return 0, errNotYet
}
