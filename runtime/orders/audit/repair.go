package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Repair actions.
const (
	// ActionInsert: a valid order stranded in a stream or a dead-letter
	// queue was written to MySQL (idempotently; it starts as created, so the
	// rollback cancels it and returns its unit if its deadline has passed).
	ActionInsert = "insert"
	// ActionAck: a stream entry whose order is durable was acknowledged and deleted.
	ActionAck = "ack"
	// ActionDeleteDeadLetter: a dead-letter stream entry whose order is
	// durable now was deleted.
	ActionDeleteDeadLetter = "delete-dead-letter"
	// ActionSettle: a paid order left the expiry set and shows paid.
	ActionSettle = "settle"
	// ActionRemoveExpiry: an expiry member whose unit is already back was removed.
	ActionRemoveExpiry = "remove-expiry"
	// ActionMarkCreated: result polling now shows a durable order as created.
	ActionMarkCreated = "mark-created"
)

// Repair is one thing --repair did (or failed to do).
type Repair struct {
	Action  string `json:"action"`
	SKU     string `json:"sku"`
	OrderNo string `json:"orderNo,omitempty"`
	Detail  string `json:"detail"`
	Failed  bool   `json:"failed,omitempty"`
}

// Repair fixes what is safe to fix in rep (made by Run just before):
//
//   - valid orders stuck in a stream (pending with a dead consumer, or never
//     delivered, for longer than StuckAfter), or in the dead-letter topic or
//     stream, that never reached MySQL are inserted (InsertBatch is
//     idempotent: a concurrent worker inserting the same order is harmless),
//     then their stream entries are acknowledged and deleted;
//   - expiry-set members of paid orders are settled (removed, shown paid);
//     members of cancelled orders whose unit is back are removed;
//   - orders whose shown status lags MySQL are advanced (never backwards).
//
// It never touches stock, buyers or an order the rollback still has to
// return: a cancelled order whose unit is out keeps its expiry member, which
// is what makes its return happen exactly once. Poison messages stay where
// they are, for a human. Run the audit again afterwards to see the result.
func (a *Auditor) Repair(ctx context.Context, rep *Report) ([]Repair, error) {
	if rep == nil || rep.ev == nil {
		return nil, errors.New("audit: Repair needs a report made by Run")
	}
	var out []Repair
	var errs []error
	sale := rep.Sale
	note := func(r Repair, err error) {
		if err != nil {
			r.Failed = true
			r.Detail += ": " + err.Error()
			errs = append(errs, err)
		}
		out = append(out, r)
	}
	for _, skuSpec := range a.cfg.Sale.Spec.SKUs {
		sku := skuSpec.ID
		k := keys.ForSKU(sale, sku)

		// Stuck stream entries.
		var insert []order.Order
		var ackIDs []string
		var acked []streamEntry
		for _, e := range rep.ev.stuck[sku] {
			if e.Err != nil {
				continue
			}
			if !e.InMySQL {
				insert = append(insert, e.Order)
			}
			ackIDs = append(ackIDs, e.ID)
			acked = append(acked, e)
		}
		if len(insert) > 0 {
			_, err := a.cfg.Orders.InsertBatch(ctx, insert)
			for _, o := range insert {
				note(Repair{Action: ActionInsert, SKU: sku, OrderNo: o.OrderNo, Detail: "inserted into MySQL from the stream, where it was stuck"}, err)
			}
			if err != nil {
				ackIDs, acked = nil, nil // never acknowledge what is not durable
			} else if err := orderstate.MarkCreated(ctx, a.cfg.Redis, insert); err != nil {
				a.log.Warn("Inserted orders not marked created in Redis", "err", err)
			}
		}
		if len(ackIDs) > 0 {
			err := streamgroup.Done(ctx, a.cfg.Redis, k.Stream, keys.RelayGroup, k.DeadLetters, ackIDs, nil)
			for _, e := range acked {
				note(Repair{Action: ActionAck, SKU: sku, OrderNo: e.Order.OrderNo,
					Detail: "acknowledged and deleted stream entry " + e.ID + " (the order is in MySQL)"}, err)
			}
		}

		// The dead-letter stream.
		insert = insert[:0]
		var delIDs []string
		var deleted []streamEntry
		for _, e := range rep.ev.dlqStream[sku] {
			if !e.InMySQL {
				insert = append(insert, e.Order)
			}
			delIDs = append(delIDs, e.ID)
			deleted = append(deleted, e)
		}
		if len(insert) > 0 {
			_, err := a.cfg.Orders.InsertBatch(ctx, insert)
			for _, o := range insert {
				note(Repair{Action: ActionInsert, SKU: sku, OrderNo: o.OrderNo, Detail: "inserted into MySQL from the dead-letter stream"}, err)
			}
			if err != nil {
				delIDs, deleted = nil, nil
			} else if err := orderstate.MarkCreated(ctx, a.cfg.Redis, insert); err != nil {
				a.log.Warn("Inserted orders not marked created in Redis", "err", err)
			}
		}
		if len(delIDs) > 0 {
			err := a.cfg.Redis.XDel(ctx, k.DeadLetters, delIDs...).Err()
			for _, e := range deleted {
				note(Repair{Action: ActionDeleteDeadLetter, SKU: sku, OrderNo: e.Order.OrderNo,
					Detail: "deleted dead-letter entry " + e.ID + " (the order is in MySQL)"}, err)
			}
		}

		// Stale expiry members.
		for _, m := range rep.ev.stale[sku] {
			o := order.Order{OrderNo: m.OrderNo, Sale: sale, SKU: sku, User: m.User}
			if m.State.Status == order.Paid {
				note(Repair{Action: ActionSettle, SKU: sku, OrderNo: m.OrderNo, Detail: "paid order removed from the expiry set and shown paid"},
					orderstate.Settle(ctx, a.cfg.Redis, &o))
				continue
			}
			note(Repair{Action: ActionRemoveExpiry, SKU: sku, OrderNo: m.OrderNo, Detail: "cancelled order whose unit is back removed from the expiry set"},
				a.cfg.Redis.ZRem(ctx, k.Expiry, m.OrderNo).Err())
		}
	}

	// Dead letters of the Kafka topic: insert; Kafka cannot delete one
	// message, so it stays, and later audits find its order durable.
	if len(rep.ev.dlqTopic) > 0 {
		_, err := a.cfg.Orders.InsertBatch(ctx, rep.ev.dlqTopic)
		for _, o := range rep.ev.dlqTopic {
			note(Repair{Action: ActionInsert, SKU: o.SKU, OrderNo: o.OrderNo,
				Detail: "inserted into MySQL from the dead-letter topic " + keys.DeadLetterTopic(sale) + " (the message stays; it is resolved now)"}, err)
		}
		if err == nil {
			if err := orderstate.MarkCreated(ctx, a.cfg.Redis, rep.ev.dlqTopic); err != nil {
				a.log.Warn("Inserted orders not marked created in Redis", "err", err)
			}
		}
	}

	// Statuses behind MySQL.
	for _, b := range rep.ev.behind {
		o := b.Order
		switch b.State.Status {
		case order.Created:
			_, err := orderstate.Advance(ctx, a.cfg.Redis, &o, order.Created)
			note(Repair{Action: ActionMarkCreated, SKU: o.SKU, OrderNo: o.OrderNo, Detail: "result polling showed " + b.Shown + ", now created"}, err)
		case order.Paid:
			note(Repair{Action: ActionSettle, SKU: o.SKU, OrderNo: o.OrderNo, Detail: "result polling showed " + b.Shown + ", now paid"},
				orderstate.Settle(ctx, a.cfg.Redis, &o))
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%d repairs failed: %w", len(errs), errors.Join(errs...))
	}
	return out, nil
}
