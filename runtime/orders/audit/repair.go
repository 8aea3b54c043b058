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
	var log repairLog
	for _, k := range a.bk.All(rep.SaleKey, a.cfg.Sale.SKUIDs()) {
		a.repairBucket(ctx, &log, k, rep.ev)
	}
	// Dead letters of the Kafka topic: insert; Kafka cannot delete one
	// message, so it stays, and later audits find its order durable.
	a.insert(ctx, &log, "", rep.ev.dlqTopic, "the dead-letter topic "+keys.DeadLetterTopic(rep.SaleKey)+" (the message stays; it is resolved now)")
	a.repairBehind(ctx, &log, rep.ev.behind)
	return log.result()
}

// repairBucket repairs one bucket of a SKU (the SKU, when it is not split):
// its stream, its dead-letter stream, its expiry set.
func (a *Auditor) repairBucket(ctx context.Context, log *repairLog, k keys.SKU, ev *evidence) {
	sku := k.ID
	a.repairStream(ctx, log, sku, ev.stuck[idOf(k)], strandedIn{
		stream:       k.Stream,
		where:        "the stream, where it was stuck",
		removeAction: ActionAck,
		removed:      "acknowledged and deleted stream entry %s (the order is in MySQL)",
		remove: func(ctx context.Context, ids []string) error {
			return streamgroup.Done(ctx, a.cfg.Redis, k.Stream, keys.RelayGroup, k.DeadLetters, ids, nil)
		},
	})
	a.repairStream(ctx, log, sku, ev.dlqStream[idOf(k)], strandedIn{
		stream:       k.DeadLetters,
		where:        "the dead-letter stream",
		removeAction: ActionDeleteDeadLetter,
		removed:      "deleted dead-letter entry %s (the order is in MySQL)",
		remove: func(ctx context.Context, ids []string) error {
			return a.cfg.Redis.XDel(ctx, k.DeadLetters, ids...).Err()
		},
	})
	a.repairExpiry(ctx, log, k, ev.stale[idOf(k)])
}

// repairLog collects what Repair did, and what failed.
type repairLog struct {
	done []Repair
	errs []error
}

func (l *repairLog) note(r Repair, err error) {
	if err != nil {
		r.Failed = true
		r.Detail += ": " + err.Error()
		l.errs = append(l.errs, err)
	}
	l.done = append(l.done, r)
}

func (l *repairLog) result() ([]Repair, error) {
	if len(l.errs) > 0 {
		return l.done, fmt.Errorf("%d repairs failed: %w", len(l.errs), errors.Join(l.errs...))
	}
	return l.done, nil
}

// strandedIn is a Redis Stream that orders can be stranded in, as
// repairStream needs it.
type strandedIn struct {
	// stream is the stream's key, whose replicas must have the entries
	// before their orders are stored (replicas.go).
	stream string
	// where names the stream in the detail of an insert.
	where string
	// removeAction and removed (a format of the entry ID) describe taking
	// an entry out of the stream once its order is durable.
	removeAction, removed string
	// remove takes the entries out.
	remove func(ctx context.Context, ids []string) error
}

// repairStream is the one repair of a stream with stranded entries (the
// order stream's stuck entries, the dead-letter stream): once enough
// replicas have the entries (Config.WaitReplicas), the orders MySQL lacks
// are inserted, then every entry whose order is durable now is taken out of
// the stream. An entry is never taken out before its order is durable, and
// an order is never stored before the replicas have its entry.
func (a *Auditor) repairStream(ctx context.Context, log *repairLog, sku string, entries []streamEntry, in strandedIn) {
	var missing []order.Order
	var taken []streamEntry
	for _, e := range entries {
		if e.Err != nil {
			continue
		}
		if !e.InMySQL {
			missing = append(missing, e.Order)
		}
		taken = append(taken, e)
	}
	if len(missing) > 0 {
		if err := a.replicated(ctx, in.stream); err != nil {
			for _, o := range missing {
				log.note(Repair{Action: ActionInsert, SKU: sku, OrderNo: o.OrderNo, Detail: "not inserted into MySQL from " + in.where}, err)
			}
			return
		}
	}
	stored := a.insert(ctx, log, sku, missing, in.where)
	var ids []string
	var removed []streamEntry
	for _, e := range taken {
		if e.InMySQL || stored[e.Order.OrderNo] {
			ids = append(ids, e.ID)
			removed = append(removed, e)
		}
	}
	if len(ids) == 0 {
		return
	}
	err := in.remove(ctx, ids)
	for _, e := range removed {
		log.note(Repair{Action: in.removeAction, SKU: sku, OrderNo: e.Order.OrderNo, Detail: fmt.Sprintf(in.removed, e.ID)}, err)
	}
}

// insert writes stranded orders (from where) into MySQL, idempotently, and
// shows them created; it returns the order numbers now durable. Its repairs
// name sku, or each order's own SKU when sku is empty.
//
// The batch is one statement in one transaction, so one row MySQL refuses
// for good (a constraint, a value too long) would keep every other order of
// the batch out of MySQL, and under strandedOrders: Wait hold the whole
// sale. So a failed batch is tried again one order at a time: MySQL stores
// those it takes, and each refused one is reported with MySQL's own error.
func (a *Auditor) insert(ctx context.Context, log *repairLog, sku string, orders []order.Order, where string) map[string]bool {
	if len(orders) == 0 {
		return nil
	}
	errs := make([]error, len(orders))
	if _, err := a.cfg.Orders.InsertBatch(ctx, orders); err != nil {
		for i := range orders {
			errs[i] = err
			if len(orders) > 1 {
				_, errs[i] = a.cfg.Orders.InsertBatch(ctx, orders[i:i+1])
			}
		}
	}
	stored := map[string]bool{}
	var durable []order.Order
	for i, o := range orders {
		r := Repair{Action: ActionInsert, SKU: sku, OrderNo: o.OrderNo, Detail: "inserted into MySQL from " + where}
		if sku == "" {
			r.SKU = o.SKU
		}
		if errs[i] != nil {
			r.Detail = "not inserted into MySQL from " + where
		}
		log.note(r, errs[i])
		if errs[i] == nil {
			stored[o.OrderNo] = true
			durable = append(durable, o)
		}
	}
	if len(durable) == 0 {
		return stored
	}
	if err := orderstate.MarkCreated(ctx, a.cfg.Redis, a.bk, durable); err != nil {
		a.log.Warn("Inserted orders not marked created in Redis", "err", err)
	}
	return stored
}

// repairExpiry settles the stale expiry members of paid orders and removes
// those of cancelled orders whose unit is back.
func (a *Auditor) repairExpiry(ctx context.Context, log *repairLog, k keys.SKU, stale []staleMember) {
	sku := k.ID
	for _, m := range stale {
		o := order.Order{OrderNo: m.OrderNo, Sale: k.Sale, SKU: sku, User: m.User}
		if m.State.Status == order.Paid {
			log.note(Repair{Action: ActionSettle, SKU: sku, OrderNo: m.OrderNo, Detail: "paid order removed from the expiry set and shown paid"},
				orderstate.Settle(ctx, a.cfg.Redis, &o, a.bk.Of(sku)))
			continue
		}
		log.note(Repair{Action: ActionRemoveExpiry, SKU: sku, OrderNo: m.OrderNo, Detail: "cancelled order whose unit is back removed from the expiry set"},
			a.cfg.Redis.ZRem(ctx, k.Expiry, m.OrderNo).Err())
	}
}

// repairBehind advances the statuses result polling shows behind MySQL's.
func (a *Auditor) repairBehind(ctx context.Context, log *repairLog, behind []behindOrder) {
	for _, b := range behind {
		o := b.Order
		switch b.State.Status {
		case order.Created:
			_, err := orderstate.Advance(ctx, a.cfg.Redis, &o, a.bk.Of(o.SKU), order.Created)
			log.note(Repair{Action: ActionMarkCreated, SKU: o.SKU, OrderNo: o.OrderNo, Detail: "result polling showed " + b.Shown + ", now created"}, err)
		case order.Paid:
			log.note(Repair{Action: ActionSettle, SKU: o.SKU, OrderNo: o.OrderNo, Detail: "result polling showed " + b.Shown + ", now paid"},
				orderstate.Settle(ctx, a.cfg.Redis, &o, a.bk.Of(o.SKU)))
		}
	}
}
