package seckill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
)

// skuState is what a pod knows about one SKU without asking Redis.
type skuState struct {
	// buckets are the keys of the SKU's buckets (one for a SKU not split).
	buckets []keys.SKU
	// remaining is the SKU's stock: the sum over its buckets.
	remaining atomic.Int64
	warmed    atomic.Bool
	soldOut   atomic.Bool
}

// lower records a remaining count learnt from a purchase. Answers of
// concurrent purchases arrive in any order, so only a lower figure is kept;
// the next refresh brings any rise (a rollback, a raise).
func (st *skuState) lower(n int64) {
	for {
		cur := st.remaining.Load()
		if n >= cur || st.remaining.CompareAndSwap(cur, n) {
			return
		}
	}
}

// saleState is this pod's cached view of the sale's Redis state: the pause,
// close and hold switches and each SKU's stock. It is refreshed by one
// pipelined round trip every poll interval, so every pod learns of a pause,
// an early close, a hold or its release, a sell-out or a reopening (rollback,
// stock raise) within a second, and the hot path answers SOLD_OUT, NOT_READY
// and PAUSED from memory.
type saleState struct {
	rdb     redis.UniversalClient
	saleKey string
	skus    map[string]*skuState
	order   []string // SKU ids, fixed order for the pipeline

	paused atomic.Bool
	closed atomic.Bool
	// held is the operator's go-live gate: on until every data-plane pod is
	// ready; an absent field (no operator) means off.
	held atomic.Bool
	// lastOK is the unix nanos of the last successful refresh (readiness).
	lastOK atomic.Int64
	// onSKU is told each SKU's figures after every refresh (metrics).
	onSKU func(sku string, remaining int64, soldOut bool)
	// outEverywhere confirms that a SKU split into buckets, whose buckets
	// all read out, is sold out (see apply); nil: take the reads at their
	// word.
	outEverywhere func(ctx context.Context, sku string) bool
	// observe is told the latency of every refresh (metrics).
	observe func(op string, d time.Duration, err error)
}

func newSaleState(rdb redis.UniversalClient, saleKey string, skus []v1alpha1.SKU) *saleState {
	s := &saleState{
		rdb:     rdb,
		saleKey: saleKey,
		skus:    make(map[string]*skuState, len(skus)),
		onSKU:   func(string, int64, bool) {},
		observe: func(string, time.Duration, error) {},
	}
	for _, sku := range skus {
		s.order = append(s.order, sku.ID)
		s.skus[sku.ID] = &skuState{buckets: keys.Buckets(saleKey, sku.ID, sku.BucketCount())}
	}
	return s
}

// refresh reads the switches and every bucket's stock counter in one
// pipeline (on a cluster, one round trip per shard, in parallel).
func (s *saleState) refresh(ctx context.Context, now time.Time) error {
	pipe := s.rdb.Pipeline()
	ctl := switches.Queue(ctx, pipe, s.saleKey)
	gets := make([][]*redis.StringCmd, len(s.order))
	for i, id := range s.order {
		for _, k := range s.skus[id].buckets {
			gets[i] = append(gets[i], pipe.Get(ctx, k.Stock))
		}
	}
	start := time.Now()
	_, err := pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		err = nil // an unwarmed SKU, handled below
	}
	s.observe("refresh", time.Since(start), err)
	if err != nil {
		return fmt.Errorf("refresh sale state: %w", err)
	}
	sw := ctl()
	s.paused.Store(sw.Paused)
	s.closed.Store(sw.Closed)
	s.held.Store(sw.Held)
	for i, id := range s.order {
		s.apply(ctx, id, gets[i])
	}
	s.lastOK.Store(now.UnixNano())
	return nil
}

// apply records what a refresh read of SKU id's buckets. A SKU is warmed
// when every bucket is; it is sold out when every bucket is out: a bucket
// that ran out is refilled from the others on demand (Refiller), so its
// buyers are not told SOLD_OUT while units are on sale elsewhere.
//
// The buckets' counters are read one by one, so units moving between two
// buckets (given by one, not yet taken in by the other, or left so by a
// crash) are in neither: every bucket may read out while units are on
// sale. The pod would then answer SOLD_OUT from memory, and nobody would
// buy those units. So a split SKU that reads out is sold out only once
// outEverywhere confirms it (the refiller: two quiet rounds, transfers in
// flight completed); once confirmed, later reads that agree need no
// confirmation.
func (s *saleState) apply(ctx context.Context, id string, gets []*redis.StringCmd) {
	st := s.skus[id]
	var total int64
	for _, get := range gets {
		v, err := get.Result()
		if errors.Is(err, redis.Nil) {
			st.warmed.Store(false)
			return
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if err != nil || perr != nil {
			return
		}
		total += max(n, 0)
	}
	st.warmed.Store(true)
	st.remaining.Store(total)
	// Stock came back (a rollback, a raise): reopen the SKU here too.
	out := total <= 0
	if out && len(gets) > 1 && !st.soldOut.Load() && s.outEverywhere != nil {
		out = s.outEverywhere(ctx, id)
	}
	st.soldOut.Store(out)
	s.onSKU(id, total, out)
}

// run refreshes every interval until ctx is done.
func (s *saleState) run(ctx context.Context, every time.Duration, now func() time.Time, onErr func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.refresh(ctx, now()); err != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
	}
}

// markSoldOut records a sell-out learned from the purchase script, before the
// next refresh would.
func (s *saleState) markSoldOut(sku string) {
	if st, ok := s.skus[sku]; ok {
		st.remaining.Store(0)
		st.soldOut.Store(true)
		s.onSKU(sku, 0, true)
	}
}

// allWarmed says whether every SKU's stock counter was seen.
func (s *saleState) allWarmed() (bool, string) {
	for _, id := range s.order {
		if !s.skus[id].warmed.Load() {
			return false, id
		}
	}
	return true, ""
}
