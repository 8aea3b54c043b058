// Package orderstate keeps an order's Redis side in step with MySQL: the
// status that result polling reads, and the unit of stock that a cancelled
// order returns, exactly once.
//
// # The order record
//
// Each SKU's orders hash (keys.SKU.Orders) maps an order number to the
// order's record, the string
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
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
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

// Advance moves the order's visible status forward (never back).
func Advance(ctx context.Context, rdb redis.Scripter, o *order.Order, to order.Status) (bool, error) {
	k := keys.ForSKU(o.Sale, o.SKU)
	n, err := advanceScript.Run(ctx, rdb, []string{k.Orders}, o.OrderNo, to.String(), o.User).Int()
	if err != nil {
		return false, fmt.Errorf("advance order %s to %s: %w", o.OrderNo, to, err)
	}
	return n == 1, nil
}

// MarkCreated advances many orders to created in one pipeline, after the
// batch that holds them committed. It only advances records the orders hash
// holds: an order Redis does not know (a failover to a replica that never
// had it, keys lost) stays unknown, for the audit to report, rather than
// look admitted.
func MarkCreated(ctx context.Context, rdb redis.UniversalClient, orders []order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	var err error
	for range 2 {
		pipe := rdb.Pipeline()
		for i := range orders {
			o := &orders[i]
			pipe.EvalSha(ctx, advanceScript.Hash(), []string{keys.ForSKU(o.Sale, o.SKU).Orders}, o.OrderNo, order.Created.String(), o.User, "existing")
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
)

// Release returns the unit of a cancelled order, frees the user's slot and
// marks the order cancelled, exactly once however often it is called. It
// reports whether this call returned the unit (on sale, or paying off a
// lowering; ReleaseUnit tells which).
func Release(ctx context.Context, rdb redis.Scripter, o *order.Order) (bool, error) {
	r, err := ReleaseUnit(ctx, rdb, o)
	return r != NotReturned, err
}

// ReleaseUnit is Release, telling where the unit went.
func ReleaseUnit(ctx context.Context, rdb redis.Scripter, o *order.Order) (Returned, error) {
	k := keys.ForSKU(o.Sale, o.SKU)
	n, err := releaseScript.Run(ctx, rdb, []string{k.Stock, k.Holders, k.Expiry, k.Orders, k.Initial, k.Debt}, o.OrderNo, o.User).Int()
	if err != nil {
		return NotReturned, fmt.Errorf("return stock of order %s: %w", o.OrderNo, err)
	}
	if n < int(NotReturned) || n > int(PaidDebt) {
		return NotReturned, fmt.Errorf("return stock of order %s: unexpected reply %d", o.OrderNo, n)
	}
	return Returned(n), nil
}

// Settle records a payment: the order leaves the expiry set and shows paid.
func Settle(ctx context.Context, rdb redis.Scripter, o *order.Order) error {
	k := keys.ForSKU(o.Sale, o.SKU)
	if err := settleScript.Run(ctx, rdb, []string{k.Expiry, k.Orders}, o.OrderNo, o.User).Err(); err != nil {
		return fmt.Errorf("settle order %s: %w", o.OrderNo, err)
	}
	return nil
}
