package audit

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// place is where downstream of Redis, short of MySQL, an order was found.
// When an order is in two places at once (relayed but not yet acknowledged,
// consumed but not yet committed), the first of this order wins.
type place int

const (
	nowhere place = iota
	inStream
	inKafka
	inDeadLetters
)

// skuAudit is the audit of one SKU in progress (of one bucket of a SKU
// split into buckets: the law holds per bucket): what was read, the report
// being filled, and where each order was found.
type skuAudit struct {
	rep *Report
	sku string
	// k are the keys of the bucket audited, one of n of the SKU.
	k  keys.SKU
	n  int
	s  *redisSnapshot
	db map[string]orderdb.State
	sr SKUReport
	// found: where each order was first seen in a stream, Kafka or a
	// dead-letter store (MySQL aside).
	found map[string]place
	// deadWhy: the finding detail of each order found in a dead-letter store.
	deadWhy map[string]Finding
	// held: orders the snapshot shows holding a unit; lostHeld: those of
	// them found nowhere; outside: orders in MySQL holding a unit that
	// Redis never admitted.
	held, lostHeld, outside int64
	// What the snapshot could not settle, for the re-read at the end.
	unknown []Finding // orders downstream the snapshot does not know
	stale   []staleMember
	behind  []behindOrder
}

// auditSKU checks bucket k (of n) of a SKU and appends its findings to rep.
func (a *Auditor) auditSKU(ctx context.Context, rep *Report, k keys.SKU, n int, s *redisSnapshot, db map[string]orderdb.State,
	kPending, kDead []kafkaMessage, now time.Time,
) (SKUReport, error) {
	x := &skuAudit{rep: rep, sku: k.ID, k: k, n: n, s: s, db: db, found: map[string]place{}, deadWhy: map[string]Finding{},
		sr: SKUReport{SKU: k.ID, Bucket: k.Bucket, Initial: s.initial, Debt: s.debt, Declared: s.initial - s.debt, Remaining: s.stock,
			Redis: RedisFigures{Orders: map[string]int64{}, StreamLength: int64(len(s.stream)), DeadLetters: int64(len(s.dlq)),
				Expiry: int64(len(s.expiry)), StreamPending: int64(len(s.pending))},
			KafkaPending: int64(len(kPending)), KafkaDeadLetters: int64(len(kDead))}}
	if !s.warmed {
		x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: "the stock counter does not exist: the SKU was never warmed, or its keys were deleted"})
	}
	x.countMySQL()
	x.checkRedis()
	// Where each order is downstream, in the order an order travels.
	rep.ev.stuck[idOf(k)] = x.stream(now, a.cfg.StuckAfter)
	x.kafka(kPending, kDead)
	rep.ev.dlqStream[idOf(k)] = x.deadLetterStream()
	// The law, over the orders of the snapshot.
	x.law()
	// What the snapshot could not settle, read again.
	x.outsiders()
	l, err := a.reread(ctx, k, x.rereadOrders(), x.rereadExpiry())
	if err != nil {
		return SKUReport{}, err
	}
	x.settle(l)
	x.balance()
	return x.sr, nil
}

func (x *skuAudit) add(f Finding) {
	f.SKU, f.Bucket = x.sku, x.k.Bucket
	x.rep.Findings = append(x.rep.Findings, f)
}

// see records that order no was seen at p, unless it was seen earlier on
// its way; it says whether this is the first sighting.
func (x *skuAudit) see(no string, p place) bool {
	if x.found[no] != nowhere {
		return false
	}
	x.found[no] = p
	return true
}

// countMySQL counts the SKU's rows by status (every row, whenever admitted).
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

// checkRedis checks the snapshot against itself: stock plus units held is
// the initial stock, the units held are the orders not cancelled, and the
// debt is at most the units held (only a returned unit pays it off).
func (x *skuAudit) checkRedis() {
	s := x.s
	for _, v := range s.holders {
		n, _ := strconv.ParseInt(v, 10, 64)
		x.sr.Redis.UnitsHeld += n
	}
	live := int64(len(s.orders.Malformed)) // a malformed record is read as holding its unit
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
	if s.debt < 0 || s.debt > x.sr.Redis.UnitsHeld {
		x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: fmt.Sprintf(
			"the stock debt is %d, outside [0, units held %d]: returned units can never pay it off, so the declared stock %d is not what is on sale",
			s.debt, x.sr.Redis.UnitsHeld, s.initial-s.debt)})
	}
}

// stream notes the orders of the order stream and returns the entries
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
		x.see(e.Order.OrderNo, inStream)
		if !x.knows(e.Order.OrderNo) {
			// The stream and the orders hash are one snapshot, and the
			// purchase script writes both at once: no later admission.
			x.sr.UnknownToRedis++
			x.add(Finding{Kind: KindUnknownToRedis, Where: "stream", OrderNo: e.Order.OrderNo, Detail: fmt.Sprintf(
				"stream entry %s is an order the orders hash does not hold", m.ID)})
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

// knows says the snapshot's orders hash holds order no.
func (x *skuAudit) knows(no string) bool {
	if _, ok := x.s.orders.ByOrder[no]; ok {
		return true
	}
	_, ok := x.s.orders.Malformed[no]
	return ok
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

// kafka notes the orders behind the consumer group and in the dead-letter
// topic; a valid dead letter not in MySQL is kept for Repair.
func (x *skuAudit) kafka(kPending, kDead []kafkaMessage) {
	for _, m := range kPending {
		x.see(m.Order.OrderNo, inKafka)
	}
	for _, m := range kDead {
		no := m.Order.OrderNo
		if _, durable := x.db[no]; durable || !x.see(no, inDeadLetters) {
			continue
		}
		d := fmt.Sprintf("valid order only in the dead-letter topic (partition %d, offset %d), never stored in MySQL", m.Partition, m.Offset)
		if m.Reason != "" {
			d += "; dead-lettered because: " + m.Reason
		}
		x.deadWhy[no] = Finding{Kind: KindDeadLetter, Where: "kafka-dlq", OrderNo: no, Detail: d, Repairable: true}
		x.rep.ev.dlqTopic = append(x.rep.ev.dlqTopic, m.Order)
	}
}

// deadLetterStream notes the valid orders of the Redis dead-letter stream
// and returns them; its entries carry the order's fields under "f:" and
// the reason under "error".
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
		no := e.Order.OrderNo
		_, e.InMySQL = x.db[no]
		entries = append(entries, e)
		if !e.InMySQL && x.see(no, inDeadLetters) {
			x.deadWhy[no] = Finding{Kind: KindDeadLetter, Where: "dlq-stream", OrderNo: no, Repairable: true, Detail: fmt.Sprintf(
				"valid order only in the dead-letter stream (entry %s), never stored in MySQL; dead-lettered because: %s", m.ID, reason)}
		}
	}
	return entries
}

// law finds every order of the snapshot downstream, once, by its order
// number: MySQL first (whatever its status now), then the stream, Kafka,
// a dead-letter store. A held order's unit is counted where it was found;
// an order found nowhere is LOST.
func (x *skuAudit) law() {
	for no, rec := range x.s.orders.ByOrder {
		x.account(no, rec.Status != order.Cancelled, rec.User, rec.Status.String())
	}
	for no, v := range x.s.orders.Malformed {
		x.account(no, true, "?", fmt.Sprintf("%q", v))
	}
	x.sr.ReturningOut = x.sr.Durable.Returning
}

// account counts order no of the snapshot (held: its unit is out).
func (x *skuAudit) account(no string, held bool, user, shown string) {
	if held {
		x.held++
	}
	if st, durable := x.db[no]; durable {
		if held {
			x.durable(no, st)
		}
		return
	}
	switch x.found[no] {
	case inStream:
		if held {
			x.sr.InFlight.Stream++
		}
	case inKafka:
		if held {
			x.sr.InFlight.Kafka++
		}
	case inDeadLetters:
		if held {
			x.sr.InFlight.DeadLetters++
		}
		x.strand(x.deadWhy[no])
	default:
		x.sr.Lost++
		d := fmt.Sprintf("admitted for user %s (shown %s) but not in MySQL, the stream, Kafka or a dead-letter queue: ", user, shown)
		if held {
			x.lostHeld++
			d += "its unit is sold and the order is gone"
		} else {
			d += "its unit is back, but the order is gone"
		}
		x.add(Finding{Kind: KindLost, Where: "redis", OrderNo: no, Detail: d})
	}
}

// durable counts a held order found in MySQL by the status MySQL gives it
// now: a payment or a cancel since the snapshot is the order moving on.
func (x *skuAudit) durable(no string, st orderdb.State) {
	switch st.Status {
	case order.Paid:
		x.sr.Durable.Paid++
	case order.Cancelled:
		// Its unit is out in the snapshot: the rollback returns it (or
		// has since). Only the expiry member lets it (orderstate.Release).
		x.sr.Durable.Returning++
		if !x.s.expiry[no] {
			x.add(Finding{Kind: KindRedisInconsistent, Where: "redis", OrderNo: no, Detail: "cancelled in MySQL, its unit held in Redis, but not in the expiry set: the rollback can never return the unit"})
		}
	default:
		x.sr.Durable.Created++
	}
}

// strand records a valid order that is only in a dead-letter store.
func (x *skuAudit) strand(f Finding) {
	x.sr.Stranded++
	x.add(f)
}

// outsiders lists what the snapshot cannot settle on its own: MySQL rows
// and dead letters of orders it does not know (admitted since, or never
// admitted), expiry members MySQL says are done, statuses behind MySQL's.
func (x *skuAudit) outsiders() {
	for no, st := range x.db {
		rec, ok := x.s.orders.ByOrder[no]
		if !ok {
			if !x.knows(no) {
				x.unknown = append(x.unknown, Finding{Kind: KindUnknownToRedis, Where: "mysql", OrderNo: no, Detail: fmt.Sprintf(
					"in MySQL (%s) but unknown to the Redis orders hash", st.Status)})
			}
			continue
		}
		if x.s.expiry[no] && (st.Status == order.Paid || (st.Status == order.Cancelled && st.StockReturned)) {
			x.stale = append(x.stale, staleMember{OrderNo: no, User: rec.User, State: st})
		}
		if rec.Behind(st.Status) {
			x.behind = append(x.behind, behindOrder{Order: order.Order{OrderNo: no, Sale: x.rep.SaleKey, SKU: x.sku, User: rec.User}, State: st})
		}
	}
	for no, p := range x.found {
		if p == inDeadLetters && !x.knows(no) {
			f := x.deadWhy[no]
			f.Detail += "; unknown to the Redis orders hash"
			x.unknown = append(x.unknown, f)
		}
	}
	sort.Slice(x.unknown, func(i, j int) bool { return x.unknown[i].OrderNo < x.unknown[j].OrderNo })
}

func (x *skuAudit) rereadOrders() []string {
	var out []string
	for _, f := range x.unknown {
		out = append(out, f.OrderNo)
	}
	for _, b := range x.behind {
		out = append(out, b.Order.OrderNo)
	}
	return out
}

func (x *skuAudit) rereadExpiry() []string {
	var out []string
	for _, m := range x.stale {
		out = append(out, m.OrderNo)
	}
	return out
}

// settle reports what the re-read confirms: orders Redis still does not
// know, expiry members still there, statuses still behind. The others were
// caught moving: admitted after the snapshot (not part of this run's law:
// their unit was still in remaining), or settled since.
func (x *skuAudit) settle(l *later) {
	for _, f := range x.unknown {
		switch {
		case l.known(f.OrderNo):
			x.sr.AfterSnapshot++
		case f.Kind == KindDeadLetter:
			x.strand(f)
		default:
			x.sr.UnknownToRedis++
			x.add(f)
			x.soldOutside(f.OrderNo)
		}
	}
	for _, m := range x.stale {
		if !l.inExpiry[m.OrderNo] {
			continue
		}
		x.sr.StaleExpiry++
		x.rep.ev.stale[idOf(x.k)] = append(x.rep.ev.stale[idOf(x.k)], m)
		x.add(Finding{Kind: KindStaleExpiry, Where: "expiry", OrderNo: m.OrderNo, Repairable: true, Detail: fmt.Sprintf(
			"in the expiry set but %s in MySQL", m.State.Status)})
	}
	for _, b := range x.behind {
		rec, ok := l.records.ByOrder[b.Order.OrderNo]
		if !ok || !rec.Behind(b.State.Status) {
			continue
		}
		b.Shown = rec.Status.String()
		x.rep.ev.behind = append(x.rep.ev.behind, b)
		x.add(Finding{Kind: KindStatusBehind, Where: "redis", OrderNo: b.Order.OrderNo, Repairable: b.State.Status != order.Cancelled,
			Detail: fmt.Sprintf("result polling shows %s, MySQL says %s", rec.Status, b.State.Status)})
	}
}

// soldOutside counts the unit of an order in MySQL that Redis never
// admitted (a failover to a replica that missed it, a restore from an old
// backup): Redis still offers that unit, so it is counted as sold where
// MySQL says, and the law shows the oversell as a negative imbalance.
func (x *skuAudit) soldOutside(no string) {
	st, ok := x.db[no]
	if !ok {
		return
	}
	switch {
	case st.Status == order.Created:
		x.sr.Durable.Created++
	case st.Status == order.Paid:
		x.sr.Durable.Paid++
	case st.Status == order.Cancelled && !st.StockReturned:
		x.sr.Durable.Returning++
	default:
		return // cancelled and settled: it holds nothing any more
	}
	x.outside++
}

// balance checks the conservation law; see the package documentation.
func (x *skuAudit) balance() {
	sr := &x.sr
	sr.InFlight.Total = sr.InFlight.Stream + sr.InFlight.Kafka + sr.InFlight.DeadLetters
	sr.Accounted = sr.Remaining + sr.InFlight.Total + sr.Durable.Created + sr.Durable.Paid + sr.Durable.Returning
	sr.Imbalance = sr.Initial - sr.Accounted
	sr.Conserved = sr.Imbalance == 0 && sr.Stranded == 0
	if sr.Imbalance != 0 {
		x.add(Finding{Kind: KindImbalance, Detail: fmt.Sprintf(
			"initial %d ≠ remaining %d + in flight %d + created %d + paid %d + returning %d = %d (%+d units unaccounted: "+
				"%d held by LOST orders, -%d sold to orders Redis never admitted, %+d Redis stock vs units held, %+d units held vs held orders)",
			sr.Initial, sr.Remaining, sr.InFlight.Total, sr.Durable.Created, sr.Durable.Paid, sr.Durable.Returning, sr.Accounted, sr.Imbalance,
			x.lostHeld, x.outside, sr.Initial-sr.Remaining-sr.Redis.UnitsHeld, sr.Redis.UnitsHeld-x.held)})
	}
	if sr.Durable.Returning > 0 {
		x.rep.Notes = append(x.rep.Notes, fmt.Sprintf("%s: %d cancelled orders have their unit still out (the rollback returns them); they are counted as out", bucketName(x.k, x.n), sr.Durable.Returning))
	}
	if sr.Debt != 0 {
		x.rep.Notes = append(x.rep.Notes, fmt.Sprintf("%s: declared stock %d = initial %d − debt %d: a lowering could not take back %d units buyers held; the next %d returned units leave the sale instead of going back on sale",
			bucketName(x.k, x.n), sr.Declared, sr.Initial, sr.Debt, sr.Debt, sr.Debt))
	}
}
