// Package audit compares what Redis, Kafka and MySQL hold about a sale,
// checks the conservation law per SKU
//
//	initial = remaining + in flight + created + paid (+ returning)
//
// and lists the orders missing on either side. Repair fixes what is safe to
// fix. The same Report feeds `flashsale audit`, its metrics, and the operator.
//
// In flight are the orders admitted in Redis that are not durable in MySQL
// yet: entries of the SKU's stream (which the pipeline deletes once handed
// on), messages behind the Kafka consumer group's committed offsets, and dead
// letters (the Kafka dead-letter topic and the Redis dead-letter stream). They
// are counted by order number, minus those already in MySQL, so an order
// that is briefly in two places (committed but not yet acknowledged, or
// redelivered) is counted once. Returning are cancelled orders whose unit is
// not back in Redis yet (the rollback finishes them): they are still out.
//
// The reads go in the order an order travels: Redis (one MULTI per SKU, so
// stock, buyers, stream, dead-letter stream, expiry set and orders hash are
// one snapshot), then Kafka's order topic, then its dead-letter topic, then
// MySQL. An order moving while the audit runs is therefore seen at least
// once, and an order reported LOST is really nowhere.
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
	Clock      clock.PassiveClock
	Logger     *slog.Logger
}

// Auditor audits one sale.
type Auditor struct {
	cfg Config
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
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Auditor{cfg: cfg, clk: cfg.Clock, log: cfg.Logger}, nil
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
	// KindUnknownToRedis: a MySQL row whose order Redis never admitted.
	KindUnknownToRedis = "UNKNOWN_TO_REDIS"
	// KindPoison: a message or entry that is not a valid order of the sale.
	KindPoison = "POISON"
	// KindDeadLetter: a valid order in a dead-letter topic or stream that is
	// not in MySQL (repairable).
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
	Kind    string `json:"kind"`
	SKU     string `json:"sku,omitempty"`
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
	case KindLost, KindImbalance, KindRedisInconsistent:
		return true
	}
	return false
}

// InFlight are the orders admitted but not durable yet, by where they wait.
type InFlight struct {
	// Stream: entries of the SKU's Redis Stream not in MySQL.
	Stream int64 `json:"stream"`
	// Kafka: messages behind the consumer group's offsets, not in MySQL.
	Kafka int64 `json:"kafka"`
	// DeadLetters: valid orders in the dead-letter topic or stream, not in MySQL.
	DeadLetters int64 `json:"deadLetters"`
	// Total counts each order once.
	Total int64 `json:"total"`
}

// MySQLCounts are a SKU's rows by status.
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
	// Initial is the stock warmed plus every raise (the `initial` key).
	Initial int64 `json:"initial"`
	// Remaining is the stock counter.
	Remaining int64       `json:"remaining"`
	InFlight  InFlight    `json:"inFlight"`
	MySQL     MySQLCounts `json:"mysql"`
	// ReturningOut are cancelled orders whose unit is still out of Redis
	// (still in the expiry set: the rollback returns them); counted on the
	// right side of the law. MySQL.Returning also counts those released but
	// not yet marked returned, whose unit is back in Remaining already.
	ReturningOut int64 `json:"returningOut"`
	// Accounted = Remaining + InFlight.Total + Created + Paid + ReturningOut.
	Accounted int64 `json:"accounted"`
	// Imbalance = Initial − Accounted: units nobody can account for (> 0)
	// or counted twice (< 0).
	Imbalance int64 `json:"imbalance"`
	Conserved bool  `json:"conserved"`

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
	// Conserved: the law holds for every SKU.
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
	// stuck stream entries by SKU, with their decoded orders (if valid).
	stuck map[string][]streamEntry
	// dead-letter stream entries by SKU.
	dlqStream map[string][]streamEntry
	// valid dead-letter topic orders not in MySQL.
	dlqTopic []order.Order
	// stale expiry members by SKU: order → MySQL row state.
	stale map[string][]staleMember
	// orders whose shown status lags MySQL.
	behind []behindOrder
}

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
		sr := a.auditSKU(rep, sku.ID, in.redis[sku.ID], in.mysql[sku.ID], kPending[sku.ID], kDead[sku.ID], now)
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
		stuck: map[string][]streamEntry{}, dlqStream: map[string][]streamEntry{}, stale: map[string][]staleMember{},
	}}
	if len(a.cfg.Brokers) > 0 {
		rep.Mode = "kafka"
	} else if a.cfg.Sale.Spec.Kafka != nil {
		rep.Notes = append(rep.Notes, "the sale declares Kafka but no brokers were given: orders waiting in Kafka are not seen and may be reported LOST")
	}
	return rep
}

// observed is everything a run read, by SKU where it is per SKU.
type observed struct {
	redis map[string]*redisSnapshot
	kafka *kafkaView
	mysql map[string]map[string]orderdb.State
}

// read reads the sale in the order an order travels (see the package
// documentation): Redis, then Kafka, then MySQL.
func (a *Auditor) read(ctx context.Context, rep *Report) (*observed, error) {
	saleKey := rep.SaleKey
	in := &observed{redis: map[string]*redisSnapshot{}, kafka: &kafkaView{}, mysql: map[string]map[string]orderdb.State{}}
	// 1. Redis, one snapshot per SKU.
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		s, err := a.readRedis(ctx, saleKey, sku.ID)
		if err != nil {
			return nil, fmt.Errorf("read redis of SKU %s: %w", sku.ID, err)
		}
		in.redis[sku.ID] = s
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
	for i, x := range []string{KindLost, KindImbalance, KindRedisInconsistent, KindUnknownToRedis, KindIncomplete,
		KindPoison, KindDeadLetter, KindStuck, KindStaleExpiry, KindStatusBehind} {
		if x == k {
			return i
		}
	}
	return 99
}
