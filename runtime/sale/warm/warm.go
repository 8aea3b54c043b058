// Package warm pre-warms Redis for a sale: stock counters, the order streams
// with their relay consumer group, the scripts, the waiting room of a sale
// with spec.queue, and the pause switch. It is the very code both
// `flashsale warm` and the operator call, and it is idempotent: running it
// again never resets a live counter.
package warm

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
)

//go:embed stock.lua
var stockSource string

var stockScript = redis.NewScript(stockSource)

// SKUResult says what warming did to one SKU.
type SKUResult struct {
	SKU string
	// Action is created, unchanged, raised, lowered or adopted.
	Action string
	// Delta is how much the counter (units on sale) moved: for a lowering,
	// minus the unsold units taken back at once.
	Delta int64
	// Remaining, Initial and Debt are the stock, initial and debt keys
	// afterwards: Initial = Remaining + units held by buyers, and the
	// declared stock is Initial − Debt (see Declared).
	Remaining int64
	Initial   int64
	Debt      int64
	// From is the declared stock before this call (0 when created).
	From int64
	// DebtDelta is how much the debt moved: for a lowering, the units buyers
	// hold that it could not take back now (they leave the sale as their
	// orders are cancelled); for a raise, minus the debt it cancelled.
	DebtDelta int64
	// InFlight is, for a SKU split into buckets, the units moving between
	// two of its buckets (given by one, not yet taken in by the other): in
	// no bucket's counters, yet part of the declared stock.
	InFlight int64
	// Held says a split SKU's buckets keep their Holds (see buckets.Hold):
	// bucket 0 still owes part of a lowering, so units flow only toward it
	// until returns have paid it; the operator then clears them.
	Held bool
	// Buckets are the figures of each bucket of a SKU split into buckets,
	// bucket 0 first (Remaining, Initial and Debt above are their sums); nil
	// for a SKU that is not split.
	Buckets []BucketResult
}

// BucketResult is one bucket of a SKU split into buckets after warming.
type BucketResult struct {
	Bucket int
	// Action is created or unchanged (bucket 0: the SKU's action, since
	// every stock change is applied to bucket 0).
	Action string
	// Remaining, Initial and Debt are the bucket's stock, initial and debt.
	Remaining, Initial, Debt int64
}

// Declared is the stock the spec declares now, as Redis keeps it.
func (r SKUResult) Declared() int64 { return r.Initial - r.Debt + r.InFlight }

// Result is what one Warm call did.
type Result struct{ SKUs []SKUResult }

// Warm makes Redis ready for fs and reports what it changed.
func Warm(ctx context.Context, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) (Result, error) {
	sale := fs.SaleKey()
	if err := purchase.Load(ctx, rdb); err != nil {
		return Result{}, err
	}
	for _, sku := range fs.Spec.SKUs {
		if err := checkCount(ctx, rdb, sale, sku); err != nil {
			return Result{}, err
		}
	}
	var out Result
	for _, sku := range fs.Spec.SKUs {
		warmSKU := warmWhole
		if sku.BucketCount() > 1 {
			warmSKU = warmSplit
		}
		r, err := warmSKU(ctx, rdb, sale, sku)
		if err != nil {
			return out, err
		}
		out.SKUs = append(out.SKUs, r)
	}
	if err := warmQueue(ctx, rdb, fs); err != nil {
		return out, err
	}
	if err := switches.SetPaused(ctx, rdb, sale, fs.Spec.Paused); err != nil {
		return out, err
	}
	return out, nil
}

// warmQueue creates the waiting room of a sale with spec.queue (Init never
// resets a live one) and loads its scripts. Without it every join is
// refused NOT_WARMED.
func warmQueue(ctx context.Context, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) error {
	cfg, ok := queue.ConfigOf(fs)
	if !ok {
		return nil
	}
	if err := queue.Init(ctx, rdb, fs.SaleKey()); err != nil {
		return err
	}
	return queue.New(rdb, fs.SaleKey(), cfg).Load(ctx)
}

// warmWhole warms a SKU that is not split: one set of keys.
func warmWhole(ctx context.Context, rdb redis.UniversalClient, sale string, sku v1alpha1.SKU) (SKUResult, error) {
	k := keys.ForSKU(sale, sku.ID)
	r, err := runStock(ctx, rdb, k, sku.Stock, sku.Stock, 1)
	if err != nil {
		return r, err
	}
	return r, relayGroup(ctx, rdb, k)
}

// runStock runs stock.lua on bucket k (bucket 0) of a SKU split into n
// buckets (1: not split) whose declared stock is now declared, share of
// it being bucket 0's at creation.
func runStock(ctx context.Context, rdb redis.UniversalClient, k keys.SKU, declared, share int64, n int) (SKUResult, error) {
	vals, err := stockScript.Run(ctx, rdb, []string{k.Stock, k.Initial, k.Debt, k.Declared, k.Count},
		declared, share, n).Slice()
	if err != nil {
		return SKUResult{}, fmt.Errorf("warm stock of SKU %s: %w", k.ID, err)
	}
	return parseStock(k.ID, vals)
}

// relayGroup creates the order stream of one bucket and its relay group.
// They exist before the first buyer, so the relay reads from the very first
// order ("0") and never misses one.
func relayGroup(ctx context.Context, rdb redis.UniversalClient, k keys.SKU) error {
	err := rdb.XGroupCreateMkStream(ctx, k.Stream, keys.RelayGroup, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("create order stream of SKU %s bucket %d: %w", k.ID, k.Bucket, err)
	}
	return nil
}

func parseStock(sku string, vals []any) (SKUResult, error) {
	if len(vals) != 7 {
		return SKUResult{}, fmt.Errorf("warm stock of SKU %s: want 7 values, got %d", sku, len(vals))
	}
	action, _ := vals[0].(string)
	var n [6]int64
	for i := range n {
		v, ok := vals[i+1].(int64)
		if !ok {
			return SKUResult{}, fmt.Errorf("warm stock of SKU %s: unexpected reply %v", sku, vals)
		}
		n[i] = v
	}
	return SKUResult{SKU: sku, Action: action, Delta: n[0], Remaining: n[1], Initial: n[2], Debt: n[3], From: n[4], DebtDelta: n[5]}, nil
}

// checkCount refuses to warm a SKU with another bucket count than the one
// it was warmed with (spec.skus[].buckets cannot change, but a SKU removed
// and added again, or a manifest given to `flashsale warm`, can ask for
// one): the buckets' keys depend on the count, so new buckets would put the
// stock on sale a second time. Warm checks every SKU before it touches any.
func checkCount(ctx context.Context, rdb redis.UniversalClient, sale string, sku v1alpha1.SKU) error {
	k := keys.ForSKU(sale, sku.ID)
	var count *redis.StringCmd
	var declared, counters *redis.IntCmd
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		count = p.Get(ctx, k.Count)
		declared = p.Exists(ctx, k.Declared)
		counters = p.Exists(ctx, k.Stock, k.Initial)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read the bucket count of SKU %s: %w", sku.ID, err)
	}
	want := sku.BucketCount()
	recorded := "1"
	switch {
	case count.Err() == nil:
		recorded = count.Val()
	case declared.Val() > 0 && want == 1:
		recorded = "more than 1"
	case declared.Val() > 0 || counters.Val() == 0:
		return nil // split, warmed before counts were recorded; or not warmed
	}
	if recorded == strconv.Itoa(want) {
		return nil
	}
	return fmt.Errorf("%w: SKU %s was warmed split into %s bucket(s) and the spec asks for %d: a warmed SKU's bucket count cannot change "+
		"(its buckets' keys depend on it, and new buckets would put its stock on sale again); keep %s, or tear the sale down first",
		ErrBucketCount, sku.ID, recorded, want, recorded)
}

// ErrBucketCount is Warm's refusal of a bucket count other than the one a
// SKU was warmed with (errors.Is finds it): a spec error, not an outage.
var ErrBucketCount = errors.New("bucket count changed")
