package seckill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
)

// skuState is what a pod knows about one SKU without asking Redis.
type skuState struct {
	keys      keys.SKU
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
	// observe is told the latency of every refresh (metrics).
	observe func(op string, d time.Duration, err error)
}

func newSaleState(rdb redis.UniversalClient, saleKey string, skuIDs []string) *saleState {
	s := &saleState{
		rdb:     rdb,
		saleKey: saleKey,
		skus:    make(map[string]*skuState, len(skuIDs)),
		order:   skuIDs,
		onSKU:   func(string, int64, bool) {},
		observe: func(string, time.Duration, error) {},
	}
	for _, id := range skuIDs {
		s.skus[id] = &skuState{keys: keys.ForSKU(saleKey, id)}
	}
	return s
}

// refresh reads the switches and every stock counter in one pipeline.
func (s *saleState) refresh(ctx context.Context, now time.Time) error {
	pipe := s.rdb.Pipeline()
	ctl := switches.Queue(ctx, pipe, s.saleKey)
	gets := make([]*redis.StringCmd, len(s.order))
	for i, id := range s.order {
		gets[i] = pipe.Get(ctx, s.skus[id].keys.Stock)
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
		st := s.skus[id]
		v, err := gets[i].Result()
		if errors.Is(err, redis.Nil) {
			st.warmed.Store(false)
			continue
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if err != nil || perr != nil {
			continue
		}
		st.warmed.Store(true)
		st.remaining.Store(n)
		// Stock came back (a rollback, a raise): reopen the SKU here too.
		st.soldOut.Store(n <= 0)
		s.onSKU(id, n, n <= 0)
	}
	s.lastOK.Store(now.UnixNano())
	return nil
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
