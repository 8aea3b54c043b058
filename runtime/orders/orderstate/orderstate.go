// Package orderstate keeps an order's Redis side in step with MySQL: the
// status that result polling reads, and the unit of stock that a cancelled
// order returns, exactly once.
//
// # The order record
//
// Each SKU's orders hash (keys.SKU.Orders; each bucket's, for a SKU split
// into buckets: the order number names the bucket, see Buckets) maps an
// order number to the order's record, the string
//
//	<status> <user>
//
// the status word (queued, created, paid or cancelled, as order.Status
// prints it), one space, and the buyer's user id (which has no spaces; see
// access.ValidUserID). The purchase script writes "queued <user>" when it
// admits the order; from then on only this package's scripts write it, and
// only forward: queued → created → paid | cancelled (advance.lua). This
// package is the record's one reader too: Lookup reads one record (result
// polling, payment), QueueAll a SKU's every record (the audit).
package orderstate

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
)

var (
	//go:embed advance.lua
	advanceSource string
	//go:embed release.lua
	releaseSource string
	//go:embed settle.lua
	settleSource string

	advanceScript = redis.NewScript(advanceSource)
	releaseScript = redis.NewScript(releaseSource)
	settleScript  = redis.NewScript(settleSource)
)

// Advance moves the order's visible status forward (never back). n is the
// number of buckets of the order's SKU (Buckets.Of): with the bucket mark of
// the order number it finds the bucket that holds the record.
func Advance(ctx context.Context, rdb redis.Scripter, o *order.Order, n int, to order.Status) (bool, error) {
	k, err := keysOf(o, n)
	if err != nil {
		return false, err
	}
	moved, err := advanceScript.Run(ctx, rdb, []string{k.Orders}, o.OrderNo, to.String(), o.User).Int()
	if err != nil {
		return false, fmt.Errorf("advance order %s to %s: %w", o.OrderNo, to, err)
	}
	return moved == 1, nil
}

// MarkCreated advances many orders to created in one pipeline, after the
// batch that holds them committed. It only advances records the orders hash
// holds: an order Redis does not know (a failover to a replica that never
// had it, keys lost) stays unknown, for the audit to report, rather than
// look admitted. bk finds each order's bucket.
func MarkCreated(ctx context.Context, rdb redis.UniversalClient, bk Buckets, orders []order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	ks := make([]string, len(orders))
	for i := range orders {
		k, err := keysOf(&orders[i], bk.Of(orders[i].SKU))
		if err != nil {
			return err
		}
		ks[i] = k.Orders
	}
	var err error
	for range 2 {
		pipe := rdb.Pipeline()
		for i := range orders {
			o := &orders[i]
			pipe.EvalSha(ctx, advanceScript.Hash(), []string{ks[i]}, o.OrderNo, order.Created.String(), o.User, "existing")
		}
		if _, err = pipe.Exec(ctx); err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			break
		}
		// Redis lost its scripts (restart, failover): load and go again;
		// advancing is idempotent, so the orders that did move are fine.
		if lerr := advanceScript.Load(ctx, rdb).Err(); lerr != nil {
			return fmt.Errorf("load advance script: %w", lerr)
		}
	}
	if err != nil {
		return fmt.Errorf("mark %d orders created: %w", len(orders), err)
	}
	return nil
}

// Returned says where the unit of a released order went.
type Returned int

const (
	// NotReturned means an earlier call (or another process) returned it already.
	NotReturned Returned = iota
	// BackOnSale means the unit is on sale again (the stock counter went up).
	BackOnSale
	// PaidDebt means a lowering of the stock still owed units and this one
	// paid it off: it left the sale (initial and debt went down), so the SKU
	// never holds more than its declared stock.
	PaidDebt
	// Forwarded means the unit is on its way to bucket 0 of its split SKU,
	// where a lowering is applied or owed (see buckets.Hold): ReleaseUnit
	// answers it when it could not complete the transfer itself, which
	// buckets.Recover (the operator's poll, any refill) then does.
	Forwarded
)

// Release returns the unit of a cancelled order, frees the user's slot and
// marks the order cancelled, exactly once however often it is called. It
// reports whether this call returned the unit (on sale, or paying off a
// lowering; ReleaseUnit tells which). The unit goes back to the bucket the
// order came from (its SKU has n buckets): that bucket's holders counted
// it, and that bucket's debt, if any, is what it pays; while its SKU is held
// (a lowering applied or owed in bucket 0, see buckets.Hold), a bucket ≥ 1
// forwards it to bucket 0, where it pays the debt first.
func Release(ctx context.Context, rdb redis.UniversalClient, o *order.Order, n int) (bool, error) {
	r, err := ReleaseUnit(ctx, rdb, o, n)
	return r != NotReturned, err
}

// ReleaseUnit is Release, telling where the unit went. A unit returned to a
// bucket ≥ 1 whose SKU's lowering is applied or owed in bucket 0 is
// forwarded to bucket 0 (release.lua), and ReleaseUnit completes that
// transfer: the unit pays bucket 0's debt, or goes on sale there.
func ReleaseUnit(ctx context.Context, rdb redis.UniversalClient, o *order.Order, n int) (Returned, error) {
	k, err := keysOf(o, n)
	if err != nil {
		return NotReturned, err
	}
	r, err := releaseScript.Run(ctx, rdb,
		[]string{k.Stock, k.Holders, k.Expiry, k.Orders, k.Initial, k.Debt, k.Hold, k.Outbox},
		o.OrderNo, o.User, buckets.ReturnID(o.OrderNo), k.Bucket).Int()
	if err != nil {
		return NotReturned, fmt.Errorf("return stock of order %s: %w", o.OrderNo, err)
	}
	if r < int(NotReturned) || r > int(Forwarded) {
		return NotReturned, fmt.Errorf("return stock of order %s: unexpected reply %d", o.OrderNo, r)
	}
	if Returned(r) == Forwarded {
		return completeForward(ctx, rdb, o, n, k.Bucket), nil
	}
	return Returned(r), nil
}

// completeForward takes a forwarded unit into bucket 0. The unit is
// returned whatever happens here (release.lua wrote a crash-safe transfer
// record), so a failure is no failure of the release: the record waits for
// buckets.Recover, and the answer is Forwarded.
func completeForward(ctx context.Context, rdb redis.UniversalClient, o *order.Order, n, from int) Returned {
	got, err := buckets.CompleteReturn(ctx, rdb, o.Sale, o.SKU, n, from, o.OrderNo)
	switch {
	case err != nil:
		return Forwarded
	case got.PaidDebt:
		return PaidDebt
	case got.OnSale:
		return BackOnSale
	}
	return Forwarded
}

// Settle records a payment: the order leaves the expiry set and shows paid,
// in the bucket that holds it (its SKU has n buckets).
func Settle(ctx context.Context, rdb redis.Scripter, o *order.Order, n int) error {
	k, err := keysOf(o, n)
	if err != nil {
		return err
	}
	if err := settleScript.Run(ctx, rdb, []string{k.Expiry, k.Orders}, o.OrderNo, o.User).Err(); err != nil {
		return fmt.Errorf("settle order %s: %w", o.OrderNo, err)
	}
	return nil
}
