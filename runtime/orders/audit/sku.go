package audit

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// skuAudit is the audit of one SKU in progress: what was read, the report
// being filled, and the orders counted in flight so far (each once).
type skuAudit struct {
	rep      *Report
	sku      string
	s        *redisSnapshot
	db       map[string]orderdb.State
	sr       SKUReport
	inFlight map[string]bool
}

// auditSKU checks one SKU and appends its findings to rep.
func (a *Auditor) auditSKU(rep *Report, sku string, s *redisSnapshot, db map[string]orderdb.State,
	kPending, kDead []kafkaMessage, now time.Time,
) SKUReport {
	x := &skuAudit{rep: rep, sku: sku, s: s, db: db, inFlight: map[string]bool{},
		sr: SKUReport{SKU: sku, Initial: s.initial, Remaining: s.stock,
			Redis: RedisFigures{Orders: map[string]int64{}, StreamLength: int64(len(s.stream)), DeadLetters: int64(len(s.dlq)),
				Expiry: int64(len(s.expiry)), StreamPending: int64(len(s.pending))},
			KafkaPending: int64(len(kPending)), KafkaDeadLetters: int64(len(kDead))}}
	if !s.warmed {
		x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: "the stock counter does not exist: the SKU was never warmed, or its keys were deleted"})
	}
	x.countMySQL()
	x.checkRedis()
	// In flight, by order number, minus what MySQL has.
	rep.ev.stuck[sku] = x.stream(now, a.cfg.StuckAfter)
	x.kafka(kPending, kDead)
	rep.ev.dlqStream[sku] = x.deadLetterStream()
	x.sr.InFlight.Total = int64(len(x.inFlight))
	// Orders missing on either side, stale expiry members, statuses behind.
	x.lost()
	x.againstMySQL()
	x.balance()
	return x.sr
}

func (x *skuAudit) add(f Finding) {
	f.SKU = x.sku
	x.rep.Findings = append(x.rep.Findings, f)
}

// count counts order no in flight unless MySQL has it or it was counted
// already, and says whether it did.
func (x *skuAudit) count(no string) bool {
	if _, durable := x.db[no]; durable {
		return false
	}
	if x.inFlight[no] {
		return false
	}
	x.inFlight[no] = true
	return true
}

// countMySQL counts the SKU's rows by status.
func (x *skuAudit) countMySQL() {
	for _, st := range x.db {
		switch st.Status {
		case order.Created:
			x.sr.MySQL.Created++
		case order.Paid:
			x.sr.MySQL.Paid++
		case order.Cancelled:
			x.sr.MySQL.Cancelled++
			if !st.StockReturned {
				x.sr.MySQL.Returning++
			}
		}
	}
}

// checkRedis checks Redis against itself: stock plus units held is the
// initial stock, and the units held are the orders not cancelled.
func (x *skuAudit) checkRedis() {
	s := x.s
	for _, v := range s.holders {
		n, _ := strconv.ParseInt(v, 10, 64)
		x.sr.Redis.UnitsHeld += n
	}
	live := int64(0)
	for _, rec := range s.orders.ByOrder {
		x.sr.Redis.Orders[rec.Status.String()]++
		if rec.Status != order.Cancelled {
			live++
		}
	}
	for no, v := range s.orders.Malformed {
		x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", OrderNo: no, Detail: fmt.Sprintf(
			"the orders hash holds %q, which is not an order record \"<status> <user>\"", v)})
	}
	if s.warmed && s.stock+x.sr.Redis.UnitsHeld != s.initial {
		x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: fmt.Sprintf(
			"remaining %d + units held %d = %d, but initial is %d", s.stock, x.sr.Redis.UnitsHeld, s.stock+x.sr.Redis.UnitsHeld, s.initial)})
	}
	if x.sr.Redis.UnitsHeld != live {
		x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: fmt.Sprintf(
			"buyers hold %d units, but the orders hash has %d orders not cancelled", x.sr.Redis.UnitsHeld, live)})
	}
}

// stream counts the order stream's entries in flight and returns those
// waiting longer than stuckAfter.
func (x *skuAudit) stream(now time.Time, stuckAfter time.Duration) []streamEntry {
	var stuck []streamEntry
	for _, m := range x.s.stream {
		e := streamEntry{ID: m.ID}
		e.Order, e.Err = x.decode(m.Values)
		_, e.InMySQL = x.db[e.Order.OrderNo]
		if e.Err != nil {
			if m.Values == nil {
				continue // deleted while pending: nothing left to count
			}
			x.add(Finding{Kind: KindPoison, Where: "stream", Detail: fmt.Sprintf("entry %s is not a valid order: %v; the worker will dead-letter it", m.ID, e.Err)})
			continue
		}
		if x.count(e.Order.OrderNo) {
			x.sr.InFlight.Stream++
		}
		waited, how := x.waiting(m, &e, now)
		if how != "" && waited > stuckAfter {
			stuck = append(stuck, e)
			d := fmt.Sprintf("stream entry %s %s for %s", m.ID, how, waited.Round(time.Millisecond))
			if e.InMySQL {
				d += "; already in MySQL, only the acknowledgement is missing"
			}
			x.add(Finding{Kind: KindStuck, Where: "stream", OrderNo: e.Order.OrderNo, Detail: d, Repairable: true})
		}
	}
	x.sr.Stuck = len(stuck)
	return stuck
}

// waiting says how long stream entry m has waited and where: pending in a
// consumer's hands (which it records in e), or never delivered. how is
// empty when the entry is delivered and acknowledged, or its age unknown.
func (x *skuAudit) waiting(m redis.XMessage, e *streamEntry, now time.Time) (waited time.Duration, how string) {
	pend, isPending := x.s.pending[m.ID]
	undelivered := !isPending && (!x.s.hasGroup || compareIDs(m.ID, x.s.lastDelivered) > 0)
	switch {
	case isPending:
		e.Consumer = pend.Consumer
		return pend.Idle, "pending in consumer " + pend.Consumer + "'s hands"
	case undelivered:
		x.sr.Redis.StreamUndelivered++
		if at, ok := idTime(m.ID); ok {
			return now.Sub(at), "never delivered to a worker"
		}
	}
	return 0, ""
}

// decode reads an order from stream fields; an order of another sale is
// not valid here.
func (x *skuAudit) decode(values map[string]any) (order.Order, error) {
	o, err := order.FromStream(values)
	if err == nil && o.Sale != x.rep.SaleKey {
		err = fmt.Errorf("order %s belongs to sale %q", o.OrderNo, o.Sale)
	}
	return o, err
}

// kafka counts the orders behind the consumer group and in the dead-letter
// topic in flight; a valid dead letter is repairable.
func (x *skuAudit) kafka(kPending, kDead []kafkaMessage) {
	for _, m := range kPending {
		if x.count(m.Order.OrderNo) {
			x.sr.InFlight.Kafka++
		}
	}
	for _, m := range kDead {
		if x.count(m.Order.OrderNo) {
			x.sr.InFlight.DeadLetters++
			d := fmt.Sprintf("valid order in the dead-letter topic (partition %d, offset %d) that never reached MySQL", m.Partition, m.Offset)
			if m.Reason != "" {
				d += "; dead-lettered because: " + m.Reason
			}
			x.add(Finding{Kind: KindDeadLetter, Where: "kafka-dlq", OrderNo: m.Order.OrderNo, Detail: d, Repairable: true})
			x.rep.ev.dlqTopic = append(x.rep.ev.dlqTopic, m.Order)
		}
	}
}

// deadLetterStream counts the valid orders of the Redis dead-letter stream
// in flight and returns them; its entries carry the order's fields under
// "f:" and the reason under "error".
func (x *skuAudit) deadLetterStream() []streamEntry {
	var entries []streamEntry
	for _, m := range x.s.dlq {
		e := streamEntry{ID: m.ID}
		vals := map[string]any{}
		for k, v := range m.Values {
			if f, ok := strings.CutPrefix(k, "f:"); ok {
				vals[f] = v
			}
		}
		reason, _ := m.Values["error"].(string)
		e.Order, e.Err = x.decode(vals)
		if e.Err != nil {
			x.add(Finding{Kind: KindPoison, Where: "dlq-stream", Detail: fmt.Sprintf(
				"dead-letter entry %s is not a valid order: %v (dead-lettered because: %s)", m.ID, e.Err, reason)})
			continue
		}
		_, e.InMySQL = x.db[e.Order.OrderNo]
		entries = append(entries, e)
		if x.count(e.Order.OrderNo) {
			x.sr.InFlight.DeadLetters++
			x.add(Finding{Kind: KindDeadLetter, Where: "dlq-stream", OrderNo: e.Order.OrderNo, Repairable: true,
				Detail: fmt.Sprintf("valid order in the dead-letter stream (entry %s) that never reached MySQL; dead-lettered because: %s", m.ID, reason)})
		}
	}
	return entries
}

// lost reports the orders Redis admitted that are nowhere downstream.
func (x *skuAudit) lost() {
	for no, rec := range x.s.orders.ByOrder {
		if _, durable := x.db[no]; durable || x.inFlight[no] {
			continue
		}
		x.sr.Lost++
		x.add(Finding{Kind: KindLost, Where: "redis", OrderNo: no, Detail: fmt.Sprintf(
			"admitted for user %s (shown %s) but not in MySQL, the stream, Kafka or a dead-letter queue: its unit is sold and the order is gone", rec.User, rec.Status)})
	}
}

// againstMySQL walks MySQL's rows: rows Redis never admitted, expiry
// members whose unit is not out any more, statuses result polling shows
// behind MySQL's.
func (x *skuAudit) againstMySQL() {
	for no, st := range x.db {
		rec, ok := x.s.orders.ByOrder[no]
		if !ok {
			if _, malformed := x.s.orders.Malformed[no]; malformed {
				continue // reported by checkRedis
			}
			x.sr.UnknownToRedis++
			x.add(Finding{Kind: KindUnknownToRedis, Where: "mysql", OrderNo: no, Detail: fmt.Sprintf(
				"in MySQL (%s) but unknown to the Redis orders hash", st.Status)})
			continue
		}
		if x.s.expiry[no] {
			if st.Status == order.Paid || (st.Status == order.Cancelled && st.StockReturned) {
				x.sr.StaleExpiry++
				x.rep.ev.stale[x.sku] = append(x.rep.ev.stale[x.sku], staleMember{OrderNo: no, User: rec.User, State: st})
				x.add(Finding{Kind: KindStaleExpiry, Where: "expiry", OrderNo: no, Repairable: true, Detail: fmt.Sprintf(
					"in the expiry set but %s in MySQL", st.Status)})
				continue
			}
			if st.Status == order.Cancelled && !st.StockReturned {
				// Cancelled, not released yet: the expiry member is the
				// proof its unit is still out (orderstate.Release).
				x.sr.ReturningOut++
			}
		}
		if rec.Behind(st.Status) {
			o := order.Order{OrderNo: no, Sale: x.rep.SaleKey, SKU: x.sku, User: rec.User}
			x.rep.ev.behind = append(x.rep.ev.behind, behindOrder{Order: o, Shown: rec.Status.String(), State: st})
			x.add(Finding{Kind: KindStatusBehind, Where: "redis", OrderNo: no, Repairable: st.Status != order.Cancelled, Detail: fmt.Sprintf(
				"result polling shows %s, MySQL says %s", rec.Status, st.Status)})
		}
	}
}

// balance checks the conservation law.
func (x *skuAudit) balance() {
	sr := &x.sr
	sr.Accounted = sr.Remaining + sr.InFlight.Total + sr.MySQL.Created + sr.MySQL.Paid + sr.ReturningOut
	sr.Imbalance = sr.Initial - sr.Accounted
	sr.Conserved = sr.Imbalance == 0
	if !sr.Conserved {
		x.add(Finding{Kind: KindImbalance, Detail: fmt.Sprintf(
			"initial %d ≠ remaining %d + in flight %d + created %d + paid %d + returning %d = %d (%+d units unaccounted)",
			sr.Initial, sr.Remaining, sr.InFlight.Total, sr.MySQL.Created, sr.MySQL.Paid, sr.ReturningOut, sr.Accounted, sr.Imbalance)})
	}
	if sr.ReturningOut > 0 {
		x.rep.Notes = append(x.rep.Notes, fmt.Sprintf("SKU %s: %d cancelled orders have their unit still out (the rollback returns them); they are counted as out", x.sku, sr.ReturningOut))
	}
}
