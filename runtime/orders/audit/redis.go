package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// redisSnapshot is one bucket's Redis state (a SKU's, when it is not split),
// read in one MULTI.
type redisSnapshot struct {
	stock, initial int64
	// debt is the SKU's debt counter (absent: 0), see keys.SKU.Debt.
	debt          int64
	warmed        bool
	holders       map[string]string
	orders        orderstate.Records
	expiry        map[string]bool
	stream        []redis.XMessage
	pending       map[string]redis.XPendingExt
	lastDelivered string
	hasGroup      bool
	dlq           []redis.XMessage
}

// redisReplies are the replies of the MULTI that readRedis sends.
type redisReplies struct {
	stock, initial *redis.StringCmd
	debt           *redis.StringCmd
	holders        *redis.MapStringStringCmd
	orders         func() (orderstate.Records, error)
	expiry         *redis.StringSliceCmd
	stream, dlq    *redis.XMessageSliceCmd
	groups         *redis.XInfoGroupsCmd
	pending        *redis.XPendingExtCmd
}

func (a *Auditor) readRedis(ctx context.Context, k keys.SKU) (*redisSnapshot, error) {
	var r redisReplies
	_, err := a.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		r.stock = p.Get(ctx, k.Stock)
		r.initial = p.Get(ctx, k.Initial)
		r.debt = p.Get(ctx, k.Debt)
		r.holders = p.HGetAll(ctx, k.Holders)
		r.orders = orderstate.QueueAll(ctx, p, k)
		r.expiry = p.ZRange(ctx, k.Expiry, 0, -1)
		r.stream = p.XRange(ctx, k.Stream, "-", "+")
		r.dlq = p.XRange(ctx, k.DeadLetters, "-", "+")
		r.groups = p.XInfoGroups(ctx, k.Stream)
		r.pending = p.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: k.Stream, Group: keys.RelayGroup, Start: "-", End: "+", Count: 1 << 30})
		return nil
	})
	// Per-command errors (a missing key or group) are expected; look at each.
	if err != nil && !errors.Is(err, redis.Nil) && !isMissing(err) {
		return nil, err
	}
	return r.snapshot()
}

// snapshot turns the replies into a snapshot, telling the expected errors
// (a missing key, stream or group) from the others.
func (r *redisReplies) snapshot() (*redisSnapshot, error) {
	s := &redisSnapshot{holders: r.holders.Val(), expiry: map[string]bool{}, pending: map[string]redis.XPendingExt{}}
	if v, err := r.stock.Int64(); err == nil {
		s.stock, s.warmed = v, true
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("stock counter: %w", err)
	}
	if v, err := r.initial.Int64(); err == nil {
		s.initial = v
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("initial stock: %w", err)
	}
	if v, err := r.debt.Int64(); err == nil {
		s.debt = v
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("stock debt: %w", err)
	}
	for _, m := range r.expiry.Val() {
		s.expiry[m] = true
	}
	for _, c := range []interface{ Err() error }{r.holders, r.expiry, r.stream, r.dlq} {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
	}
	var err error
	if s.orders, err = r.orders(); err != nil {
		return nil, err
	}
	s.stream = r.stream.Val()
	s.dlq = r.dlq.Val()
	if gs, err := r.groups.Result(); err == nil {
		for _, g := range gs {
			if g.Name == keys.RelayGroup {
				s.hasGroup, s.lastDelivered = true, g.LastDeliveredID
			}
		}
	} else if !isMissing(err) {
		return nil, fmt.Errorf("stream groups: %w", err)
	}
	if ps, err := r.pending.Result(); err == nil {
		for _, p := range ps {
			s.pending[p.ID] = p
		}
	} else if !isMissing(err) {
		return nil, fmt.Errorf("pending entries: %w", err)
	}
	return s, nil
}

// later is what Redis says now, at the end of a run, about the orders the
// snapshot could not settle: their records, and whether they are in the
// expiry set.
type later struct {
	// records by order number; an order absent from the orders hash now is
	// in neither map.
	records orderstate.Records
	// inExpiry says the order is still in the expiry set.
	inExpiry map[string]bool
}

// known says Redis knows order no now (even with a malformed record).
func (l *later) known(no string) bool {
	if _, ok := l.records.ByOrder[no]; ok {
		return true
	}
	_, ok := l.records.Malformed[no]
	return ok
}

// reread reads again, in one MULTI, the records of orders (HMGET on the
// orders hash) and the expiry membership of expiring (ZMSCORE). An order
// the snapshot did not know but Redis knows now was admitted after the
// snapshot; a status or an expiry member that moved on since was only
// caught moving.
func (a *Auditor) reread(ctx context.Context, k keys.SKU, orders, expiring []string) (*later, error) {
	l := &later{inExpiry: map[string]bool{}}
	if len(orders) == 0 && len(expiring) == 0 {
		return l, nil
	}
	var recs func() (orderstate.Records, error)
	var scores *redis.FloatSliceCmd
	_, err := a.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		recs = orderstate.QueueSome(ctx, p, k, orders)
		if len(expiring) > 0 {
			scores = p.ZMScore(ctx, k.Expiry, expiring...)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read again %d orders of SKU %s bucket %d: %w", len(orders)+len(expiring), k.ID, k.Bucket, err)
	}
	if l.records, err = recs(); err != nil {
		return nil, err
	}
	if scores != nil {
		// ZMSCORE answers nil for a missing member, which go-redis reads
		// as 0; a deadline (unix ms) is never 0.
		for i, v := range scores.Val() {
			l.inExpiry[expiring[i]] = v != 0
		}
	}
	return l, nil
}

// isMissing says the error only means "no such stream or group".
func isMissing(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "NOGROUP") || strings.Contains(msg, "no such key")
}

// compareIDs orders two stream IDs "ms-seq".
func compareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

func splitID(id string) (ms, seq uint64) {
	l, r, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(l, 10, 64)
	seq, _ = strconv.ParseUint(r, 10, 64)
	return ms, seq
}

func idTime(id string) (time.Time, bool) {
	ms, _ := splitID(id)
	if ms == 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)), true
}
