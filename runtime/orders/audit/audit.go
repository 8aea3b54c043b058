// Package audit compares what Redis, Kafka and MySQL hold about a sale,
// checks the conservation law per SKU, lists the orders missing on either
// side, and repairs what is safe to repair. The same Report feeds
// `flashsale audit`, its metrics, and the operator.
//
// # The law
//
// The audit counts each order once, by its order number, anchored on one
// Redis snapshot per SKU: one MULTI reads initial, stock (remaining), debt,
// the holders, the orders hash (each order's record "<status> <user>"), the
// order stream with its consumer group, the dead-letter stream and the
// expiry set. Every script that moves a unit keeps, atomically,
//
//	initial = remaining + units held      (units held = Σ holders)
//
// and an order holds its unit exactly while its record is not cancelled. The
// law is
//
//	initial = remaining + Σ over the snapshot's held orders, each where it is found
//	        = remaining + in flight (stream + Kafka + dead letters) + created + paid + returning
//
// Each held order of the snapshot is looked for downstream, once, first
// place wins: MySQL (by whatever status it has when MySQL is read: a payment
// or a cancel since the snapshot is the same order moving on, and a
// cancelled row whose unit the snapshot still counts as held is
// "returning"), else the stream (in the snapshot), else Kafka behind the
// consumer group, else a dead-letter topic or stream. A held order found
// nowhere is LOST. So
//
//	imbalance = initial − accounted
//	          = units of held orders found nowhere (LOST)
//	          − units of orders in MySQL that Redis never admitted
//	          + (initial − remaining − units held) + (units held − held orders)
//
// the last two being Redis disagreeing with itself (REDIS_INCONSISTENT).
// An order in MySQL that Redis never admitted (neither in the snapshot nor
// when read again, below: after a failover to a replica that missed it, or
// a restore from an old backup) holds a unit Redis still offers: it is
// counted where MySQL says, so the oversell shows as a negative imbalance.
// The imbalance is zero at every instant while nothing is lost, however the
// orders move during the audit, and non-zero as soon as one vanishes: the
// reads go in the order an order travels (Redis, Kafka's order topic, its
// dead-letter topic, MySQL), and no stage lets go of an order before the
// next one has it (the relay acknowledges a stream entry once Kafka has it;
// the consumer commits an offset once MySQL or the dead-letter topic has the
// message; the stream sink deletes an entry once MySQL has it, or in the
// MULTI that dead-letters it), so an order that exists is seen at least once
// and counted once.
//
// Orders the snapshot does not know (in MySQL, Kafka or a dead-letter store
// but not in its orders hash) are not counted: they were admitted after
// remaining was read, which still holds their unit. To tell them from orders
// Redis never admitted, their records are read again at the end of the run:
// present now, they were admitted after the snapshot (AfterSnapshot); absent,
// they are UNKNOWN_TO_REDIS. Expiry members and statuses that looked stale
// are read again the same way, so an order caught moving is not reported.
//
// # Conserved
//
// A SKU is conserved when the imbalance is zero and no valid order sits only
// in a dead-letter store (DEAD_LETTER, counted in Stranded): such an order
// is accounted for, but its only copy is one teardown would delete, so the
// audit fails until `flashsale audit --repair` stores it in MySQL.
//
// # Buckets
//
// A SKU split into buckets (spec.skus[].buckets) is a SKU in small per
// bucket: each bucket has its own initial, stock, debt, holders, orders,
// stream and expiry set, and every script keeps the law above per bucket.
// So the audit reads one snapshot per bucket (one MULTI: a bucket's keys
// share a hash tag; different buckets sit on different shards) and checks
// the law per bucket, with the MySQL rows and Kafka messages of the orders
// the bucket admitted (an order number names its bucket, keys.BucketOf).
// Units moving between buckets (given by one, not yet taken in by the
// other: package buckets) are in no bucket's initial; the SKU's figures are
// the sums of its buckets' plus those units (Transferring), on both sides
// of the law, so the SKU's imbalance is the sum of its buckets'.
//
// The per-bucket law cannot see a transfer applied twice, or lost, between
// buckets (after a failover, say): each bucket stays balanced while the SKU
// gains or loses units. So the SKU-level law is checked too: Σ_b (initial_b
// − debt_b) plus the units in flight must equal the declared stock bucket
// 0's Declared key records (warm-up and every stock change set it in the
// same script as bucket 0's counters). The buckets sit on different shards
// and cannot be read at one instant, so a read during which a transfer or a
// stock change moved is taken again (up to splitReads times); only a
// mismatch on a steady read is reported (IMBALANCE, naming both figures).
// The SKU is conserved when every bucket is and this law holds.
//
// # Debt
//
// Lowering the stock takes back what remaining can give; the units buyers
// hold beyond that become the SKU's debt: each returned unit pays one off
// (and initial goes down with it) instead of going back on sale. The declared
// stock is initial − debt. The law above is unchanged by a debt; the audit
// reports the debt and the declared stock beside it, and a debt outside
// [0, units held] as REDIS_INCONSISTENT.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"k8s.io/utils/clock"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Config is what an Auditor needs. Sale, Redis and Orders are required.
type Config struct {
	Sale   *v1alpha1.FlashSale
	Redis  redis.UniversalClient
	Orders *orderdb.Store
	// Brokers of Kafka; empty means the sale runs in Redis-only mode and
	// Kafka is not looked at.
	Brokers []string
	// Sarama overrides the Kafka client configuration (default SaramaConfig()).
	Sarama *sarama.Config
	// KafkaTimeout bounds reading one partition range (default 10 s).
	KafkaTimeout time.Duration
	// StuckAfter is how long a stream entry may wait (pending in a
	// consumer's hands, or undelivered) before it counts as stuck (default 5 m).
	StuckAfter time.Duration
	// WaitReplicas is how many replicas must have a Redis stream entry
	// (stuck, or dead-lettered) before Repair stores its order in MySQL
	// (replicas.go); the sale's spec.redis.durability.replicas
	// (DurabilityReplicas). 0 does not wait.
	WaitReplicas int
	// WaitTimeout bounds that wait (default DefaultWaitTimeout).
	WaitTimeout time.Duration
	Clock       clock.PassiveClock
	Logger      *slog.Logger
}

// Auditor audits one sale.
type Auditor struct {
	cfg Config
	// bk are the bucket counts of the sale's SKUs.
	bk  orderstate.Buckets
	clk clock.PassiveClock
	log *slog.Logger
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Auditor, error) {
	if cfg.Sale == nil || cfg.Redis == nil || cfg.Orders == nil {
		return nil, errors.New("audit: Sale, Redis and Orders are required")
	}
	if cfg.KafkaTimeout <= 0 {
		cfg.KafkaTimeout = 10 * time.Second
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = 5 * time.Minute
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Auditor{cfg: cfg, bk: orderstate.BucketsOf(cfg.Sale), clk: cfg.Clock, log: cfg.Logger}, nil
}

// Finding kinds, worst first.
const (
	// KindLost: an order admitted in Redis that is nowhere downstream:
	// not in MySQL, not in the stream, not in Kafka, not a dead letter.
	KindLost = "LOST"
	// KindImbalance: the conservation law does not hold for a SKU.
	KindImbalance = "IMBALANCE"
	// KindRedisInconsistent: Redis disagrees with itself (stock + units held
	// ≠ initial, or held units ≠ live orders in the orders hash).
	KindRedisInconsistent = "REDIS_INCONSISTENT"
	// KindUnknownToRedis: an order in MySQL (or a stream) that Redis never
	// admitted: not in the orders hash, neither at the snapshot nor when read
	// again at the end of the run.
	KindUnknownToRedis = "UNKNOWN_TO_REDIS"
	// KindPoison: a message or entry that is not a valid order of the sale.
	KindPoison = "POISON"
	// KindDeadLetter: a valid order only in a dead-letter topic or stream,
	// not in MySQL (stranded; repairable). It fails the audit: teardown
	// would delete its only copy.
	KindDeadLetter = "DEAD_LETTER"
	// KindStuck: a stream entry waiting longer than StuckAfter (repairable).
	KindStuck = "STUCK"
	// KindStaleExpiry: an expiry-set member whose order is paid (or whose
	// unit is already back): harmless, removable.
	KindStaleExpiry = "STALE_EXPIRY"
	// KindStatusBehind: the status result polling shows lags MySQL's.
	KindStatusBehind = "STATUS_BEHIND"
	// KindIncomplete: part of Kafka could not be read; figures may be short.
	KindIncomplete = "INCOMPLETE"
)

// Finding is one thing the audit found.
type Finding struct {
	Kind string `json:"kind"`
	SKU  string `json:"sku,omitempty"`
	// Bucket is the bucket of a SKU split into buckets the finding is
	// about (0: bucket 0, or a SKU not split).
	Bucket  int    `json:"bucket,omitempty"`
	OrderNo string `json:"orderNo,omitempty"`
	// Where the order (or message) was seen: "redis", "mysql", "stream",
	// "kafka", "kafka-dlq", "dlq-stream", "expiry".
	Where  string `json:"where,omitempty"`
	Detail string `json:"detail"`
	// Repairable says --repair knows how to fix it.
	Repairable bool `json:"repairable,omitempty"`
}

// Fatal says whether the finding makes the audit fail.
func (f Finding) Fatal() bool {
	switch f.Kind {
	case KindLost, KindImbalance, KindRedisInconsistent, KindDeadLetter:
		return true
	}
	return false
}

// InFlight are the held orders of the snapshot not in MySQL, by where they
// were found (each once: the stream before Kafka before a dead-letter store).
type InFlight struct {
	// Stream: in the SKU's Redis Stream.
	Stream int64 `json:"stream"`
	// Kafka: behind the consumer group's committed offsets.
	Kafka int64 `json:"kafka"`
	// DeadLetters: valid orders only in the dead-letter topic or stream.
	DeadLetters int64 `json:"deadLetters"`
	// Total = Stream + Kafka + DeadLetters.
	Total int64 `json:"total"`
}

// Durable are the held orders of the snapshot found in MySQL, by the status
// MySQL gives them when it is read, and the orders in MySQL holding a unit
// that Redis never admitted (UNKNOWN_TO_REDIS: Redis still offers their
// unit, so counting it shows the oversell).
type Durable struct {
	Created int64 `json:"created"`
	Paid    int64 `json:"paid"`
	// Returning: cancelled in MySQL while the snapshot counts the unit as
	// held (the rollback returns it, or did since the snapshot).
	Returning int64 `json:"returning"`
}

// MySQLCounts are a SKU's rows by status: every row, including orders
// admitted after the snapshot (the law counts Durable instead).
type MySQLCounts struct {
	Created   int64 `json:"created"`
	Paid      int64 `json:"paid"`
	Cancelled int64 `json:"cancelled"`
	// Returning are cancelled rows not yet marked stock_returned.
	Returning int64 `json:"returning"`
}

// SKUReport is the audit of one SKU.
type SKUReport struct {
	SKU string `json:"sku"`
	// Bucket is which bucket of the SKU a report of Buckets is about.
	Bucket int `json:"bucket,omitempty"`
	// Buckets are the reports of each bucket of a SKU split into buckets,
	// bucket 0 first (empty for a SKU not split): the law is checked per
	// bucket, and the SKU's figures are their sums plus Transferring.
	Buckets []SKUReport `json:"buckets,omitempty"`
	// Transferring are units given by one bucket of the SKU and not yet
	// taken in by another (package buckets): counted in Initial and
	// Accounted, in no bucket's.
	Transferring int64 `json:"transferring,omitempty"`
	// Split is, for a split SKU, the law checked across its buckets against
	// the stock the sale declared (nil for a SKU not split, or one warmed
	// before the Declared key existed).
	Split *SplitCheck `json:"split,omitempty"`
	// Initial is the stock warmed plus every raise, minus the debt paid off
	// (the `initial` key): the left side of the law.
	Initial int64 `json:"initial"`
	// Debt is the units a lowering could not take back yet (the `debt` key).
	Debt int64 `json:"debt"`
	// Declared = Initial − Debt: the stock the sale declares now.
	Declared int64 `json:"declared"`
	// Remaining is the stock counter.
	Remaining int64    `json:"remaining"`
	InFlight  InFlight `json:"inFlight"`
	Durable   Durable  `json:"durable"`
	// MySQL are the raw row counts (not the law's figures).
	MySQL MySQLCounts `json:"mysql"`
	// ReturningOut = Durable.Returning: cancelled orders whose unit the
	// snapshot still counts as held. MySQL.Returning also counts those
	// released but not yet marked returned, whose unit is back in Remaining.
	ReturningOut int64 `json:"returningOut"`
	// Accounted = Remaining + InFlight.Total + Durable.Created + Durable.Paid
	// + Durable.Returning.
	Accounted int64 `json:"accounted"`
	// Imbalance = Initial − Accounted: units held by LOST orders, plus Redis
	// disagreeing with itself (> 0: missing; < 0: counted twice, e.g. an
	// order Redis shows held whose unit is also in remaining).
	Imbalance int64 `json:"imbalance"`
	// Conserved: Imbalance is 0 and Stranded is 0 (and, for a split SKU,
	// every bucket is conserved and Split holds).
	Conserved bool `json:"conserved"`
	// Stranded are the valid orders only in a dead-letter store (not in
	// MySQL): InFlight.DeadLetters, plus any of them Redis does not know.
	Stranded int64 `json:"stranded"`
	// AfterSnapshot are orders seen in MySQL or a dead-letter store that
	// were admitted after the Redis snapshot: not part of this run's law.
	AfterSnapshot int64 `json:"afterSnapshot"`

	Redis RedisFigures `json:"redis"`
	// Raw Kafka figures attributed to this SKU.
	KafkaPending     int64 `json:"kafkaPending"`
	KafkaDeadLetters int64 `json:"kafkaDeadLetters"`

	Lost           int `json:"lost"`
	UnknownToRedis int `json:"unknownToRedis"`
	StaleExpiry    int `json:"staleExpiry"`
	Stuck          int `json:"stuck"`
}

// RedisFigures are the raw Redis figures of a SKU.
type RedisFigures struct {
	// UnitsHeld is the sum of the holders hash.
	UnitsHeld int64 `json:"unitsHeld"`
	// Orders by the status the orders hash shows.
	Orders map[string]int64 `json:"orders"`
	// StreamLength is XLEN; StreamPending are entries delivered to a
	// consumer and not acknowledged; StreamUndelivered were never read.
	StreamLength      int64 `json:"streamLength"`
	StreamPending     int64 `json:"streamPending"`
	StreamUndelivered int64 `json:"streamUndelivered"`
	// DeadLetters is the length of the Redis dead-letter stream.
	DeadLetters int64 `json:"deadLetters"`
	// Expiry is the size of the expiry set (orders whose unit is out and
	// whose payment is open).
	Expiry int64 `json:"expiry"`
}

// Report is the audit of a sale.
type Report struct {
	// SaleKey is the sale's "namespace/name".
	SaleKey string    `json:"sale"`
	At      time.Time `json:"at"`
	// Mode is "kafka" or "redis-only".
	Mode string `json:"mode"`
	// KafkaLag is the consumer group's raw lag on the order topic (all SKUs).
	KafkaLag int64       `json:"kafkaLag"`
	SKUs     []SKUReport `json:"skus"`
	Findings []Finding   `json:"findings"`
	// Conserved: every SKU is conserved (the law holds, nothing stranded).
	Conserved bool `json:"conserved"`
	// Lost counts LOST orders.
	Lost int `json:"lost"`
	// OK: conserved, nothing lost, Redis consistent with itself.
	OK bool `json:"ok"`
	// Notes explain how to read the figures.
	Notes []string `json:"notes,omitempty"`
	// Repairs are what --repair did (set on the report made after it).
	Repairs []Repair `json:"repairs,omitempty"`
	// Before is the report that the repairs were based on.
	Before *Report `json:"before,omitempty"`

	ev *evidence
}

// evidence is what Repair needs beyond the figures.
type evidence struct {
	// stuck stream entries by bucket, with their decoded orders (if valid).
	stuck map[bucketID][]streamEntry
	// dead-letter stream entries by bucket.
	dlqStream map[bucketID][]streamEntry
	// valid dead-letter topic orders not in MySQL.
	dlqTopic []order.Order
	// stale expiry members by bucket: order → MySQL row state.
	stale map[bucketID][]staleMember
	// orders whose shown status lags MySQL.
	behind []behindOrder
}

// bucketID names one bucket of one SKU (bucket 0 of a SKU not split).
type bucketID struct {
	sku    string
	bucket int
}

func idOf(k keys.SKU) bucketID { return bucketID{k.ID, k.Bucket} }

type streamEntry struct {
	ID       string
	Order    order.Order
	Err      error
	InMySQL  bool
	Consumer string
}

type staleMember struct {
	OrderNo string
	User    string
	State   orderdb.State
}

type behindOrder struct {
	Order order.Order
	Shown string
	State orderdb.State
}

// Run audits the sale once.
func (a *Auditor) Run(ctx context.Context) (*Report, error) {
	now := a.clk.Now()
	rep := a.newReport(now)
	in, err := a.read(ctx, rep)
	if err != nil {
		return nil, err
	}
	kPending, kDead := a.kafkaBySKU(rep, in.kafka)
	rep.Conserved = true
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		sr, err := a.auditBuckets(ctx, rep, sku.ID, in, kPending[sku.ID], kDead[sku.ID], now)
		if err != nil {
			return nil, err
		}
		if !sr.Conserved {
			rep.Conserved = false
		}
		rep.Lost += sr.Lost
		rep.SKUs = append(rep.SKUs, sr)
	}
	rep.finish()
	return rep, nil
}

// newReport starts the report of a run at now.
func (a *Auditor) newReport(now time.Time) *Report {
	rep := &Report{SaleKey: a.cfg.Sale.SaleKey(), At: now.UTC(), Mode: "redis-only", ev: &evidence{
		stuck: map[bucketID][]streamEntry{}, dlqStream: map[bucketID][]streamEntry{}, stale: map[bucketID][]staleMember{},
	}}
	if len(a.cfg.Brokers) > 0 {
		rep.Mode = "kafka"
	} else if a.cfg.Sale.Spec.Kafka != nil {
		rep.Notes = append(rep.Notes, "the sale declares Kafka but no brokers were given: orders waiting in Kafka are not seen and may be reported LOST")
	}
	return rep
}

// observed is everything a run read, by bucket or SKU where it is per
// bucket or per SKU.
type observed struct {
	redis map[bucketID]*redisSnapshot
	// transferring are the units of each split SKU moving between buckets.
	transferring map[string]int64
	// split is the SKU-level check of each split SKU (checkSplit).
	split map[string]*SplitCheck
	kafka *kafkaView
	mysql map[string]map[string]orderdb.State
}

// read reads the sale in the order an order travels (see the package
// documentation): Redis, then Kafka, then MySQL. The re-read of the orders
// the snapshot did not know comes after all of them (auditSKU).
func (a *Auditor) read(ctx context.Context, rep *Report) (*observed, error) {
	saleKey := rep.SaleKey
	in := &observed{redis: map[bucketID]*redisSnapshot{}, transferring: map[string]int64{}, split: map[string]*SplitCheck{}, kafka: &kafkaView{},
		mysql: map[string]map[string]orderdb.State{}}
	// 1. Redis, one snapshot per bucket of each SKU, then the units moving
	// between buckets.
	if err := a.readAllRedis(ctx, saleKey, in); err != nil {
		return nil, err
	}
	// 2. Kafka: the order topic behind the group, then the dead letters.
	if len(a.cfg.Brokers) > 0 {
		var err error
		if in.kafka, err = a.readKafka(ctx); err != nil {
			return nil, err
		}
		rep.KafkaLag = in.kafka.Lag
		for _, r := range in.kafka.Incomplete {
			rep.Findings = append(rep.Findings, Finding{Kind: KindIncomplete, Where: "kafka",
				Detail: "could not read " + r + " within " + a.cfg.KafkaTimeout.String() + "; orders there may be reported LOST"})
		}
	}
	// 3. MySQL.
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		st, err := a.cfg.Orders.States(ctx, saleKey, sku.ID)
		if err != nil {
			return nil, err
		}
		in.mysql[sku.ID] = st
	}
	return in, nil
}

// kafkaBySKU sorts the valid Kafka messages by SKU and reports the others.
func (a *Auditor) kafkaBySKU(rep *Report, kv *kafkaView) (pending, dead map[string][]kafkaMessage) {
	pending, dead = map[string][]kafkaMessage{}, map[string][]kafkaMessage{}
	for _, m := range kv.Pending {
		if m.Err != nil {
			rep.Findings = append(rep.Findings, Finding{Kind: KindPoison, Where: "kafka",
				Detail: fmt.Sprintf("message %s/%d@%d is not a valid order (%v); the consumer will dead-letter it", keys.Topic(rep.SaleKey), m.Partition, m.Offset, m.Err)})
			continue
		}
		pending[m.Order.SKU] = append(pending[m.Order.SKU], m)
	}
	for _, m := range kv.DeadLetters {
		if m.Err != nil {
			d := fmt.Sprintf("dead letter %s/%d@%d is not a valid order: %v", keys.DeadLetterTopic(rep.SaleKey), m.Partition, m.Offset, m.Err)
			if m.Reason != "" {
				d += " (dead-lettered because: " + m.Reason + ")"
			}
			rep.Findings = append(rep.Findings, Finding{Kind: KindPoison, Where: "kafka-dlq", Detail: d})
			continue
		}
		dead[m.Order.SKU] = append(dead[m.Order.SKU], m)
	}
	return pending, dead
}

// finish decides whether the audit holds and puts the worst findings first.
func (rep *Report) finish() {
	redisOK := true
	for _, f := range rep.Findings {
		if f.Kind == KindRedisInconsistent {
			redisOK = false
		}
	}
	rep.OK = rep.Conserved && rep.Lost == 0 && redisOK
	for i := range rep.Findings {
		rep.Findings[i].Detail = strings.ReplaceAll(rep.Findings[i].Detail, "\n", "; ")
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool { return kindRank(rep.Findings[i].Kind) < kindRank(rep.Findings[j].Kind) })
}

func kindRank(k string) int {
	for i, x := range []string{KindLost, KindImbalance, KindRedisInconsistent, KindDeadLetter, KindUnknownToRedis, KindIncomplete,
		KindPoison, KindStuck, KindStaleExpiry, KindStatusBehind} {
		if x == k {
			return i
		}
	}
	return 99
}
