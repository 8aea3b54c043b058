package controllers

// SKUs split into buckets (spec.skus[].buckets > 1): a bucket is a SKU in
// small with its own hash tag, so a Redis Cluster runs the purchases of one
// hot SKU on several shards. The operator's part:
//
//   - the status shows each split SKU's figures summed over its buckets, and
//     each bucket's own (status.skus[].buckets[]) with the primary holding it;
//   - the BucketsSpread condition says whether each split SKU's buckets are
//     on distinct primaries (a split whose buckets share a primary spreads
//     nothing: that primary's core runs them all);
//   - status.skus[].suggestedBuckets sizes the split from the sale's rate
//     limit and the per-shard budget;
//   - every status poll completes the transfers between buckets that a
//     crashed seckill pod left half-done (buckets.Recover), so no unit stays
//     in flight longer than a poll, and clears the Holds of a lowered SKU
//     once its bucket 0 owes nothing (buckets.ClearHold): tendBuckets. A
//     failure there is the SKU's, shown in Degraded, not the reconcile's.

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
)

// splitSKUs are the SKUs of sale split into more than one bucket.
func splitSKUs(sale *v1alpha1.FlashSale) []v1alpha1.SKU {
	var out []v1alpha1.SKU
	for _, sku := range sale.Spec.SKUs {
		if sku.BucketCount() > 1 {
			out = append(out, sku)
		}
	}
	return out
}

// tendBuckets does, at every status poll and for every split SKU, what
// keeps its buckets sound, before the stock is read:
//
//   - it completes the transfers between buckets that were given and not
//     taken in (buckets.Recover): a seckill pod that died between the two
//     steps of a transfer, or a returned unit forwarded to bucket 0 whose
//     take did not run, leaves units in no bucket, off sale, until someone
//     completes them;
//   - it clears the Holds of a SKU whose bucket 0 owes nothing any more
//     (buckets.ClearHold): a lowering sets them so units flow only toward
//     bucket 0, where the whole debt lives, and returned units pay it there;
//     once it is paid, refills spread units again and returns go back on
//     sale in their own bucket.
//
// A failure is the SKU's own (one bad record must not stop the reconcile:
// the workloads, the gate and the audit come after this): it is logged and returned as
// a problem for Degraded, and the poll goes on.
func tendBuckets(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale) []string {
	var problems []string
	log := ctrl.LoggerFrom(ctx)
	for _, sku := range splitSKUs(sale) {
		n, err := buckets.Recover(ctx, rdb, sale.SaleKey(), sku.ID, sku.BucketCount())
		if err != nil {
			log.Error(err, "Cannot complete the transfers between buckets a crash left half-done", "sku", sku.ID)
			problems = append(problems, fmt.Sprintf("SKU %s: cannot complete its half-done transfers between buckets: %v", sku.ID, err))
		}
		if n > 0 {
			log.Info("Completed transfers between buckets a crash left half-done", "sku", sku.ID, "transfers", n)
		}
		if _, err := buckets.ClearHold(ctx, rdb, sale.SaleKey(), sku.ID, sku.BucketCount()); err != nil {
			log.Error(err, "Cannot clear the Holds of a split SKU", "sku", sku.ID)
			problems = append(problems, fmt.Sprintf("SKU %s: cannot clear its Holds: %v", sku.ID, err))
		}
	}
	return problems
}

// stockReads bounds the reads readSteadyStock takes while transfers move.
const stockReads = 3

// readSteadyStock reads every bucket's counters (readStock) between two
// reads of the units in flight between the split SKUs' buckets, again
// (up to stockReads times) until the two agree: the counters and the
// records are on different keys, and a transfer given or taken in between
// the reads would be counted twice, or not at all, for that poll (stock ≠
// remaining + sold − debt). A SKU whose units in flight cannot be read (a
// malformed transfer record) shows none, and is a problem for Degraded.
func readSteadyStock(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, f *liveFigures) error {
	var problems []string
	defer func() { f.problems = append(f.problems, problems...) }()
	for range stockReads {
		before, _ := readInFlight(ctx, rdb, sale)
		if err := readStock(ctx, rdb, sale, f); err != nil {
			return fmt.Errorf("read stock: %w", err)
		}
		afterStockRead()
		f.inFlight, problems = readInFlight(ctx, rdb, sale)
		if maps.Equal(before, f.inFlight) {
			return nil
		}
	}
	ctrl.LoggerFrom(ctx).Info("Transfers between buckets kept moving while the stock was read; this poll's figures may count one twice or not at all")
	return nil
}

// afterStockRead runs between readStock and the second read of the units
// in flight: tests complete a transfer there.
var afterStockRead = func() {}

// readInFlight reads the units in flight between the buckets of each split
// SKU (absent: none), and the SKUs whose records cannot be read.
func readInFlight(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale) (map[string]int64, []string) {
	out := map[string]int64{}
	var problems []string
	for _, sku := range splitSKUs(sale) {
		n, err := buckets.InFlight(ctx, rdb, sale.SaleKey(), sku.ID, sku.BucketCount())
		if err != nil {
			problems = append(problems, fmt.Sprintf("SKU %s: cannot count the units in flight between its buckets: %v", sku.ID, err))
			continue
		}
		if n != 0 {
			out[sku.ID] = n
		}
	}
	return out, problems
}

// readPrimaries reads the primary holding each bucket of the split SKUs
// (empty on a standalone Redis) into f's buckets (which readStock filled).
func readPrimaries(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, f *liveFigures) error {
	for _, sku := range splitSKUs(sale) {
		bs := f.buckets[sku.ID]
		for b, k := range keys.Buckets(sale.SaleKey(), sku.ID, sku.BucketCount()) {
			if b >= len(bs) {
				break
			}
			var err error
			if bs[b].Primary, err = primaryOf(ctx, rdb, k.Stock); err != nil {
				return err
			}
		}
	}
	return nil
}

// warnBuckets makes the split SKUs' problems of this poll (tendBuckets,
// readSteadyStock) the sale's Degraded reason, unless a step found worse;
// setCondition records the Warning Event when it starts.
func warnBuckets(s *scope, problems []string) {
	if len(problems) == 0 || len(s.degraded) > 0 {
		return
	}
	s.degraded = []string{v1alpha1.ReasonTransfersStuck, strings.Join(problems, "; ") +
		": those units stay off sale; see docs/operator.md, Buckets"}
}

// primaryOf is the address ("host:port") of the Redis Cluster primary that
// holds key, as the cluster announces it; "" on a standalone Redis, where
// every key is on the one server.
func primaryOf(ctx context.Context, rdb redis.UniversalClient, key string) (string, error) {
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		return "", nil
	}
	m, err := redisconn.MasterFor(ctx, rdb, key, false)
	if err != nil {
		return "", err
	}
	return m.Options().Addr, nil
}

// Primaries counts the Redis primaries: the masters of a cluster, 1 for a
// standalone server. `flashsale plan --check` counts them the same way.
func Primaries(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return 1, nil
	}
	var n atomic.Int32 // ForEachMaster calls in parallel
	err := cc.ForEachMaster(ctx, func(context.Context, *redis.Client) error {
		n.Add(1)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list the redis cluster's primaries: %w", err)
	}
	return int(n.Load()), nil
}

// suggestBuckets is how many buckets a SKU of sale should have: enough
// shards for the sale's whole request rate at plan.PerShardBudget each (the
// rate limit is sale-wide, and in a flash sale one SKU may take all of it), but
// no more than there are primaries to put them on. 0 (no suggestion) when
// the sale sets no rate.
func suggestBuckets(sale *v1alpha1.FlashSale, nPrimaries int) int32 {
	rps := sale.Spec.RateLimit.RequestsPerSecond
	if rps <= 0 {
		return 0
	}
	want := (rps + plan.PerShardBudget - 1) / plan.PerShardBudget
	return int32(max(min(want, int64(nPrimaries), 32), 1))
}

// readSuggestion fills f.suggested when the sale sets a rate.
func readSuggestion(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, f *liveFigures) error {
	if sale.Spec.RateLimit.RequestsPerSecond <= 0 {
		return nil
	}
	n, err := Primaries(ctx, rdb)
	if err != nil {
		return err
	}
	f.suggested = suggestBuckets(sale, n)
	return nil
}

// setBucketsSpread sets the BucketsSpread condition from where the buckets
// of the sale's split SKUs live (the primaries readPrimaries found): True
// when each split SKU's buckets are on distinct primaries, False (a Warning
// Event, through setCondition) naming the first SKU and primary that hold
// two. A sale without a split SKU has no such condition.
func (r *FlashSaleReconciler) setBucketsSpread(s *scope) {
	split := splitSKUs(s.sale)
	if len(split) == 0 || s.live == nil {
		if len(split) == 0 {
			clearCondition(s, v1alpha1.ConditionBucketsSpread)
		}
		return
	}
	var spread []string
	for _, sku := range split {
		bs := s.live.buckets[sku.ID]
		if msg := colocated(sku, bs); msg != "" {
			r.setCondition(s, v1alpha1.ConditionBucketsSpread, metav1.ConditionFalse, v1alpha1.ReasonBucketsColocated, msg)
			return
		}
		spread = append(spread, fmt.Sprintf("%s: %d buckets on %s", sku.ID, len(bs), strings.Join(primariesOf(bs), ", ")))
	}
	r.setCondition(s, v1alpha1.ConditionBucketsSpread, metav1.ConditionTrue, v1alpha1.ReasonBucketsSpread,
		"each split SKU's buckets are on distinct Redis primaries ("+strings.Join(spread, "; ")+")")
}

// colocated says which primary holds two buckets of sku, or "" when none does.
func colocated(sku v1alpha1.SKU, bs []v1alpha1.BucketStatus) string {
	if len(bs) > 0 && bs[0].Primary == "" {
		return fmt.Sprintf("SKU %s is split into %d buckets on a standalone Redis: all are on its one server, so the split spreads no load "+
			"(it only adds transfers between buckets); use spec.redis.mode: cluster with a primary per bucket, or buckets: 1",
			sku.ID, sku.BucketCount())
	}
	on := map[string][]int32{}
	for _, b := range bs {
		on[b.Primary] = append(on[b.Primary], b.Bucket)
	}
	var addrs []string
	for addr := range on {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		if held := on[addr]; len(held) > 1 {
			return fmt.Sprintf("SKU %s: Redis primary %s holds %d of its %d buckets (%s), so its purchases share that primary's core; "+
				"the cluster has fewer primaries than buckets or was resharded: reshard so each bucket's slot is on its own primary (status.skus[].buckets[].primary)",
				sku.ID, addr, len(held), sku.BucketCount(), bucketList(held))
		}
	}
	return ""
}

func bucketList(bs []int32) string {
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = fmt.Sprint(b)
	}
	return "buckets " + strings.Join(parts, ", ")
}

// primariesOf lists the primaries holding bs, in bucket order.
func primariesOf(bs []v1alpha1.BucketStatus) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Primary)
	}
	return out
}
