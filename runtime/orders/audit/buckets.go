package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// readAllRedis takes the snapshot of every bucket of every SKU, then reads
// the units of each split SKU moving between its buckets. The buckets are
// not read at one instant (they sit on different shards), which the law
// per bucket does not need: it holds per bucket, per snapshot. The law
// across the buckets does, and checkSplit reads for it until steady.
func (a *Auditor) readAllRedis(ctx context.Context, saleKey string, in *observed) error {
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		for _, k := range a.bk.Keys(saleKey, sku.ID) {
			s, err := a.readRedis(ctx, k)
			if err != nil {
				return fmt.Errorf("read redis of %s: %w", bucketName(k, a.bk.Of(sku.ID)), err)
			}
			in.redis[idOf(k)] = s
		}
		if n := a.bk.Of(sku.ID); n > 1 {
			m, err := buckets.InFlight(ctx, a.cfg.Redis, saleKey, sku.ID, n)
			if err != nil {
				return fmt.Errorf("read the units of SKU %s moving between its buckets: %w", sku.ID, err)
			}
			in.transferring[sku.ID] = m
			if in.split[sku.ID], err = a.checkSplit(ctx, saleKey, sku.ID, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// splitReads bounds the reads checkSplit takes of a SKU that keeps moving.
const splitReads = 3

// SplitCheck is the law of a split SKU across its buckets: the declared
// stock bucket 0's Declared key records against what the buckets count.
type SplitCheck struct {
	// Declared is the SKU's declared stock as bucket 0's Declared key
	// records it.
	Declared int64 `json:"declared"`
	// Counted = Σ_b (initial_b − debt_b) + the units in flight between
	// buckets, read after the snapshot.
	Counted int64 `json:"counted"`
	// Reads are the reads taken: a read during which a transfer or a stock
	// change moved is taken again.
	Reads int `json:"reads"`
	// Steady: the last read saw nothing move (the same units in flight and
	// the same Declared before and after the counters). An unsteady read
	// proves nothing and is not reported as a mismatch.
	Steady bool `json:"steady"`
}

// Balanced says whether the law holds (an unsteady read is given the benefit
// of the doubt: a note says so).
func (c *SplitCheck) Balanced() bool { return c == nil || !c.Steady || c.Declared == c.Counted }

// checkSplit reads, up to splitReads times until the figures agree, a split
// SKU's declared stock, its units in flight, every bucket's counters, then
// its units in flight and declared stock again: a read is steady when the
// second pair equals the first, so no transfer or stock change landed
// between them on one side of the comparison only. nil when bucket 0 has
// no Declared key (a sale warmed before it existed): nothing to check.
func (a *Auditor) checkSplit(ctx context.Context, saleKey, sku string, n int) (*SplitCheck, error) {
	c := &SplitCheck{}
	for c.Reads < splitReads && (c.Reads == 0 || !c.Steady || c.Declared != c.Counted) {
		c.Reads++
		d0, m0, ok, err := a.readMoving(ctx, saleKey, sku, n)
		if err != nil || !ok {
			return nil, err
		}
		fs, err := buckets.Read(ctx, a.cfg.Redis, saleKey, sku, n)
		if err != nil {
			return nil, err
		}
		d1, m1, ok, err := a.readMoving(ctx, saleKey, sku, n)
		if err != nil || !ok {
			return nil, err
		}
		c.Declared, c.Counted, c.Steady = d1, m1, d0 == d1 && m0 == m1
		for _, f := range fs {
			c.Counted += f.Initial - f.Debt
		}
	}
	return c, nil
}

// readMoving reads what may move under checkSplit: the SKU's declared stock
// (ok false when bucket 0 has no Declared key) and its units in flight.
func (a *Auditor) readMoving(ctx context.Context, saleKey, sku string, n int) (declared, inFlight int64, ok bool, err error) {
	declared, err = a.cfg.Redis.Get(ctx, keys.ForSKU(saleKey, sku).Declared).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("read the declared stock of SKU %s: %w", sku, err)
	}
	if inFlight, err = buckets.InFlight(ctx, a.cfg.Redis, saleKey, sku, n); err != nil {
		return 0, 0, false, fmt.Errorf("read the units of SKU %s moving between its buckets: %w", sku, err)
	}
	return declared, inFlight, true, nil
}

// judgeSplit applies the SKU-level law to s, a split SKU's summed report:
// a steady mismatch is an IMBALANCE finding naming both figures and makes
// the SKU not conserved; an unsteady read, or no Declared key, is a note.
func judgeSplit(rep *Report, s *SKUReport, c *SplitCheck) {
	s.Split = c
	switch {
	case c == nil:
		rep.Notes = append(rep.Notes, fmt.Sprintf("SKU %s: bucket 0 has no declared-stock key (warmed by an older operator?): "+
			"the law is checked per bucket only, not across the buckets", s.SKU))
	case !c.Steady:
		rep.Notes = append(rep.Notes, fmt.Sprintf("SKU %s: transfers or stock changes kept moving during %d reads: "+
			"the law across its buckets was not checked (each bucket's was)", s.SKU, c.Reads))
	case !c.Balanced():
		s.Conserved = false
		rep.Findings = append(rep.Findings, Finding{Kind: KindImbalance, SKU: s.SKU, Where: "redis", Detail: fmt.Sprintf(
			"SKU %s: declared stock %d (bucket 0's declared key) ≠ %d counted across its buckets (Σ initial − debt + units in flight; %+d units), "+
				"read %d times: a transfer between buckets applied twice or lost, while each bucket balances",
			s.SKU, c.Declared, c.Counted, c.Counted-c.Declared, c.Reads)})
	}
}

// bucketName names bucket k of a SKU split into n buckets, for messages.
func bucketName(k keys.SKU, n int) string {
	if n <= 1 {
		return "SKU " + k.ID
	}
	return fmt.Sprintf("SKU %s bucket %d", k.ID, k.Bucket)
}

// auditBuckets audits every bucket of SKU sku and sums their reports into
// the SKU's (a SKU not split is its bucket 0).
func (a *Auditor) auditBuckets(ctx context.Context, rep *Report, sku string, in *observed, kPending, kDead []kafkaMessage, now time.Time) (SKUReport, error) {
	n := a.bk.Of(sku)
	db := splitStates(in.mysql[sku], n)
	kp, kd := splitMessages(kPending, n), splitMessages(kDead, n)
	var parts []SKUReport
	for _, k := range a.bk.Keys(rep.SaleKey, sku) {
		sr, err := a.auditSKU(ctx, rep, k, n, in.redis[idOf(k)], db[k.Bucket], kp[k.Bucket], kd[k.Bucket], now)
		if err != nil {
			return SKUReport{}, err
		}
		parts = append(parts, sr)
	}
	if n == 1 {
		return parts[0], nil
	}
	s := sumBuckets(sku, parts, in.transferring[sku])
	judgeSplit(rep, &s, in.split[sku])
	return s, nil
}

// bucketOf is the bucket of a SKU split into n buckets that holds orderNo;
// a mark naming no bucket of the SKU counts as bucket 0, where Redis does
// not know the order either.
func bucketOf(orderNo string, n int) int {
	b, _ := keys.BucketOf(orderNo)
	if b >= n {
		return 0
	}
	return b
}

// splitStates sorts a SKU's MySQL rows by the bucket that admitted them.
func splitStates(all map[string]orderdb.State, n int) []map[string]orderdb.State {
	out := make([]map[string]orderdb.State, n)
	for b := range out {
		out[b] = map[string]orderdb.State{}
	}
	for no, st := range all {
		out[bucketOf(no, n)][no] = st
	}
	return out
}

// splitMessages sorts a SKU's Kafka messages by the bucket of their order.
func splitMessages(all []kafkaMessage, n int) [][]kafkaMessage {
	out := make([][]kafkaMessage, n)
	for _, m := range all {
		b := bucketOf(m.Order.OrderNo, n)
		out[b] = append(out[b], m)
	}
	return out
}

// sumBuckets is the report of a split SKU: the sums of its buckets' figures,
// plus the units moving between buckets on both sides of the law.
func sumBuckets(sku string, parts []SKUReport, transferring int64) SKUReport {
	s := SKUReport{SKU: sku, Buckets: parts, Transferring: transferring, Conserved: true,
		Redis: RedisFigures{Orders: map[string]int64{}}}
	for _, p := range parts {
		s.Initial += p.Initial
		s.Debt += p.Debt
		s.Remaining += p.Remaining
		s.InFlight.Stream += p.InFlight.Stream
		s.InFlight.Kafka += p.InFlight.Kafka
		s.InFlight.DeadLetters += p.InFlight.DeadLetters
		s.InFlight.Total += p.InFlight.Total
		s.Durable.Created += p.Durable.Created
		s.Durable.Paid += p.Durable.Paid
		s.Durable.Returning += p.Durable.Returning
		s.MySQL.Created += p.MySQL.Created
		s.MySQL.Paid += p.MySQL.Paid
		s.MySQL.Cancelled += p.MySQL.Cancelled
		s.MySQL.Returning += p.MySQL.Returning
		s.ReturningOut += p.ReturningOut
		s.Accounted += p.Accounted
		s.Imbalance += p.Imbalance
		s.Conserved = s.Conserved && p.Conserved
		s.Stranded += p.Stranded
		s.AfterSnapshot += p.AfterSnapshot
		s.Redis.add(p.Redis)
		s.KafkaPending += p.KafkaPending
		s.KafkaDeadLetters += p.KafkaDeadLetters
		s.Lost += p.Lost
		s.UnknownToRedis += p.UnknownToRedis
		s.StaleExpiry += p.StaleExpiry
		s.Stuck += p.Stuck
	}
	s.Initial += transferring
	s.Accounted += transferring
	s.Declared = s.Initial - s.Debt
	return s
}

// add sums r into f.
func (f *RedisFigures) add(r RedisFigures) {
	f.UnitsHeld += r.UnitsHeld
	for st, n := range r.Orders {
		f.Orders[st] += n
	}
	f.StreamLength += r.StreamLength
	f.StreamPending += r.StreamPending
	f.StreamUndelivered += r.StreamUndelivered
	f.DeadLetters += r.DeadLetters
	f.Expiry += r.Expiry
}

// parts are the reports the law was checked on: the buckets of a split
// SKU, the SKU itself otherwise.
func (s *SKUReport) parts() []SKUReport {
	if len(s.Buckets) > 0 {
		return s.Buckets
	}
	return []SKUReport{*s}
}

// name names the SKU, or the bucket, of a report of parts.
func (s *SKUReport) name(split bool) string {
	if !split {
		return "SKU " + s.SKU
	}
	return fmt.Sprintf("SKU %s bucket %d", s.SKU, s.Bucket)
}
