package warm

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

//go:embed bucket.lua
var bucketSource string

var bucketScript = redis.NewScript(bucketSource)

// warmSplit warms a SKU split into buckets. Creation gives each bucket its
// share (create-if-absent per bucket: a rerun never resets a live counter,
// and completes a creation a crash cut short) and records the bucket count.
// A change of the declared stock is applied to bucket 0 whole, atomically
// with its declared key (stock.lua), and bucket 0 owes the whole of what a
// lowering cannot take back, as an unsplit SKU does: a lowering first holds
// every bucket (units then flow only toward bucket 0, see buckets.Hold) and
// gathers every unsold unit into bucket 0, so it takes them all back; the
// Holds stay while bucket 0 owes, so returned units pay its debt first.
func warmSplit(ctx context.Context, rdb redis.UniversalClient, sale string, sku v1alpha1.SKU) (SKUResult, error) {
	n := sku.BucketCount()
	ks := keys.Buckets(sale, sku.ID, n)
	if err := prepareLowering(ctx, rdb, ks[0], sku); err != nil {
		return SKUResult{}, err
	}
	r, err := runStock(ctx, rdb, ks[0], sku.Stock, share(sku.Stock, n, 0), n)
	if err != nil {
		return r, err
	}
	// The shares of the other buckets are of the declared stock bucket 0
	// was created with: this call's when it created it, else the one
	// before this call's change (a rerun completing a creation).
	base := r.From
	if r.Action == "created" {
		base = sku.Stock
	}
	actions := []string{r.Action}
	for b := 1; b < n; b++ {
		a, given, err := createBucket(ctx, rdb, ks[b], share(base, n, b))
		if err != nil {
			return r, err
		}
		r.Delta += given
		actions = append(actions, a)
	}
	// Also ends the Holds a warm-up interrupted mid-lowering left.
	free, err := buckets.EndLowering(ctx, rdb, sale, sku.ID, n)
	if err != nil {
		return r, err
	}
	r.Held = !free
	for _, k := range ks {
		if err := relayGroup(ctx, rdb, k); err != nil {
			return r, err
		}
	}
	return sumBuckets(ctx, rdb, r, sale, n, actions)
}

// share is bucket b's part of stock split n ways: stock/n, and one more
// for each of the lowest stock%n buckets.
func share(stock int64, n, b int) int64 {
	s := stock / int64(n)
	if int64(b) < stock%int64(n) {
		s++
	}
	return s
}

// prepareLowering, when the spec lowers the SKU's declared stock, holds
// every bucket and then gathers every unsold unit into bucket 0 (completing
// the transfers in flight first), so that the lowering on bucket 0 takes
// them all back. The Holds come first: without them a refill could carry
// units out of bucket 0 between the gathering and the lowering, and they
// would stay on sale while bucket 0 owes them.
func prepareLowering(ctx context.Context, rdb redis.UniversalClient, k0 keys.SKU, sku v1alpha1.SKU) error {
	declared, err := rdb.Get(ctx, k0.Declared).Int64()
	if errors.Is(err, redis.Nil) {
		return nil // not created yet: nothing to lower
	}
	if err != nil {
		return fmt.Errorf("read declared stock of SKU %s: %w", sku.ID, err)
	}
	if sku.Stock >= declared {
		return nil
	}
	n := sku.BucketCount()
	if err := buckets.Hold(ctx, rdb, k0.Sale, sku.ID, n); err != nil {
		return err
	}
	if _, err := buckets.Gather(ctx, rdb, k0.Sale, sku.ID, n, 0); err != nil {
		return fmt.Errorf("gather SKU %s into bucket 0 before lowering: %w", sku.ID, err)
	}
	return nil
}

func createBucket(ctx context.Context, rdb redis.UniversalClient, k keys.SKU, units int64) (string, int64, error) {
	vals, err := bucketScript.Run(ctx, rdb, []string{k.Stock, k.Initial, k.Debt}, units).Slice()
	if err != nil {
		return "", 0, fmt.Errorf("warm stock of SKU %s bucket %d: %w", k.ID, k.Bucket, err)
	}
	action, _ := vals[0].(string)
	given, ok := vals[1].(int64)
	if len(vals) != 2 || !ok {
		return "", 0, fmt.Errorf("warm stock of SKU %s bucket %d: unexpected reply %v", k.ID, k.Bucket, vals)
	}
	return action, given, nil
}

// sumBuckets fills r's figures from every bucket's counters: the per-SKU
// sums, the units in flight, and each bucket.
func sumBuckets(ctx context.Context, rdb redis.UniversalClient, r SKUResult, sale string, n int, actions []string) (SKUResult, error) {
	figs, inFlight, err := readSplit(ctx, rdb, sale, r.SKU, n)
	if err != nil {
		return r, err
	}
	r.InFlight = inFlight
	r.Remaining, r.Initial, r.Debt = 0, 0, 0
	r.Buckets = make([]BucketResult, n)
	for b, f := range figs {
		r.Remaining += f.Stock
		r.Initial += f.Initial
		r.Debt += f.Debt
		r.Buckets[b] = BucketResult{Bucket: b, Action: actions[b], Remaining: f.Stock, Initial: f.Initial, Debt: f.Debt}
	}
	if r.Action == "unchanged" && r.Delta > 0 {
		r.Action = "created" // a rerun completed a creation a crash cut short
	}
	return r, nil
}

// readRounds bounds the rereads of readSplit.
const readRounds = 8

// readSplit reads the SKU's bucket counters and its units in flight. They
// are separate reads, so a transfer given or taken in between would count
// its units twice or not at all (the declared stock would look off): it
// reads the units in flight before and after the counters, and again until
// the two agree (a few rounds at most; refills are rare).
func readSplit(ctx context.Context, rdb redis.UniversalClient, sale, sku string, n int) ([]buckets.Figures, int64, error) {
	before, err := buckets.InFlight(ctx, rdb, sale, sku, n)
	if err != nil {
		return nil, 0, err
	}
	for range readRounds {
		figs, err := buckets.Read(ctx, rdb, sale, sku, n)
		if err != nil {
			return nil, 0, err
		}
		after, err := buckets.InFlight(ctx, rdb, sale, sku, n)
		if err != nil || after == before {
			return figs, after, err
		}
		before = after
	}
	return nil, 0, fmt.Errorf("read stock of SKU %s: transfers between its buckets kept moving for %d reads", sku, readRounds)
}
