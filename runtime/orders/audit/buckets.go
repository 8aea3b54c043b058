package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// readAllRedis takes the snapshot of every bucket of every SKU, then reads
// the units of each split SKU moving between its buckets. The buckets are
// not read at one instant (they sit on different shards), which the law
// does not need: it holds per bucket, per snapshot.
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
		}
	}
	return nil
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
	return sumBuckets(sku, parts, in.transferring[sku]), nil
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
