package buckets

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// A lowering of a split SKU's stock is applied to bucket 0 alone, and bucket
// 0 owes the whole of what it cannot take back (its debt), exactly as an
// unsplit SKU would. For that to hold, units must flow only toward bucket 0
// while the lowering is applied and while its debt is owed: otherwise a
// refill carries units out of bucket 0 between the gathering and the
// lowering (they stay on sale elsewhere), or a unit returned to another
// bucket goes back on sale there while bucket 0 still owes it.
//
// Hold (keys.SKU.Hold, one per bucket) says so. While a bucket has one:
//   - give.lua refuses to give to any bucket but bucket 0 (bucket 0 gives
//     none at all), so no refill moves units out of bucket 0 or between two
//     other buckets;
//   - the release script of package orderstate does not put a returned unit
//     back on sale in a bucket ≥ 1: it forwards it to bucket 0 by writing a
//     transfer record of this package's format into the bucket's outbox
//     (ReturnID, CompleteReturn), and bucket 0's take pays its debt first.
//
// The values: bucket 0's Hold is "L <id>" while the warm-up that set it is
// applying its lowering and "D <id>" once it has; the other buckets' Holds
// are "<id>". Holds are set bucket 0 first and cleared bucket 0 last, so a
// bucket ≥ 1 never has a Hold without bucket 0 having one.
var (
	//go:embed holdzero.lua
	holdZeroSource string
	//go:embed unhold.lua
	unholdSource string

	holdZeroScript = redis.NewScript(holdZeroSource)
	unholdScript   = redis.NewScript(unholdSource)
)

// Hold sets the Holds of every bucket of the SKU (split into n buckets)
// before a lowering of its stock: bucket 0's first. The warm-up then
// completes the transfers in flight, gathers the unsold units into bucket
// 0, applies the lowering there and calls EndLowering.
func Hold(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) error {
	id, err := newID()
	if err != nil {
		return err
	}
	ks := keys.Buckets(saleKey, sku, n)
	if err := rdb.Set(ctx, ks[0].Hold, "L "+id, 0).Err(); err != nil {
		return fmt.Errorf("buckets: hold SKU %s bucket 0: %w", sku, err)
	}
	for _, k := range ks[1:] {
		if err := rdb.Set(ctx, k.Hold, id, 0).Err(); err != nil {
			return fmt.Errorf("buckets: hold SKU %s bucket %d: %w", sku, k.Bucket, err)
		}
	}
	return nil
}

// EndLowering is called by the warm-up after it applied its lowering (and
// by every warm-up of a split SKU: a warm-up interrupted mid-lowering left
// Holds that the next one ends). It marks the lowering applied, then clears
// the Holds if bucket 0 owes nothing (else ClearHold does once it does).
func EndLowering(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) (bool, error) {
	return clearHold(ctx, rdb, keys.Buckets(saleKey, sku, n), "end")
}

// ClearHold deletes the Holds of the SKU's n buckets once bucket 0 owes
// nothing and no lowering is being applied, so that refills spread units
// again and returned units go back on sale in their bucket. The operator
// calls it at every poll. It says whether the SKU has no Holds afterwards.
func ClearHold(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) (bool, error) {
	return clearHold(ctx, rdb, keys.Buckets(saleKey, sku, n), "poll")
}

func clearHold(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU, mode string) (bool, error) {
	id, err := holdZeroScript.Run(ctx, rdb, []string{ks[0].Hold, ks[0].Debt}, mode).Text()
	if err != nil {
		return false, fmt.Errorf("buckets: read the hold of SKU %s: %w", ks[0].ID, err)
	}
	if id == "" {
		held, err := rdb.Exists(ctx, ks[0].Hold).Result()
		if err != nil {
			return false, fmt.Errorf("buckets: read the hold of SKU %s: %w", ks[0].ID, err)
		}
		return held == 0, nil
	}
	for _, k := range ks[1:] {
		if err := unholdScript.Run(ctx, rdb, []string{k.Hold}, id).Err(); err != nil {
			return false, fmt.Errorf("buckets: clear the hold of SKU %s bucket %d: %w", k.ID, k.Bucket, err)
		}
	}
	gone, err := unholdScript.Run(ctx, rdb, []string{ks[0].Hold, ks[0].Debt}, "D "+id).Int()
	if err != nil {
		return false, fmt.Errorf("buckets: clear the hold of SKU %s bucket 0: %w", ks[0].ID, err)
	}
	return gone == 1, nil
}

// returnPrefix starts the id of a return's transfer record: transfer ids
// are otherwise hex, so the two never collide.
const returnPrefix = "ret:"

// ReturnID is the id of the transfer record that forwards order orderNo's
// returned unit from its held bucket to bucket 0 (the release script writes
// it; one order is returned once, so the id is used once).
func ReturnID(orderNo string) string { return returnPrefix + orderNo }

// Return is where a forwarded return's unit went in bucket 0.
type Return struct {
	// PaidDebt: the unit paid bucket 0's debt and left the sale. OnSale: it
	// went on sale in bucket 0. Neither: another caller (Recover) took it in.
	PaidDebt, OnSale bool
}

// CompleteReturn takes the unit of order orderNo, returned to bucket from
// of the SKU (split into n buckets) and forwarded to bucket 0 by the release
// script, into bucket 0 (steps 2 and 3 of a transfer). It is Recover for
// one record: safe to run again, and alongside Recover.
func CompleteReturn(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n, from int, orderNo string) (Return, error) {
	if err := checkBuckets(n, from, 0); err != nil {
		return Return{}, err
	}
	ks := keys.Buckets(saleKey, sku, n)
	id := ReturnID(orderNo)
	v, err := rdb.HGet(ctx, ks[from].Outbox, id).Result()
	if errors.Is(err, redis.Nil) || v == closed {
		return Return{}, nil
	}
	if err != nil {
		return Return{}, fmt.Errorf("buckets: read the return of order %s: %w", orderNo, err)
	}
	r, err := parseRecord(id, from, v, n)
	if err != nil {
		return Return{}, fmt.Errorf("buckets: return of order %s: %w", orderNo, err)
	}
	if r.to != 0 {
		return Return{}, fmt.Errorf("buckets: return of order %s goes to bucket %d, not 0", orderNo, r.to)
	}
	took, err := complete(ctx, rdb, ks[from], ks[0], id, r.units)
	return Return{PaidDebt: took.paid > 0, OnSale: took.onSale > 0}, err
}
