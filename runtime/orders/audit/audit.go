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
	"strconv"
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
	Sale string    `json:"sale"`
	At   time.Time `json:"at"`
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

// redisSnapshot is one SKU's Redis state, read in one MULTI.
type redisSnapshot struct {
	stock, initial int64
	warmed         bool
	holders        map[string]string
	orders         map[string]string // orderNo → "status user"
	expiry         map[string]bool
	stream         []redis.XMessage
	pending        map[string]redis.XPendingExt
	lastDelivered  string
	hasGroup       bool
	dlq            []redis.XMessage
}

// Run audits the sale once.
func (a *Auditor) Run(ctx context.Context) (*Report, error) {
	sale := a.cfg.Sale.SaleKey()
	now := a.clk.Now()
	rep := &Report{Sale: sale, At: now.UTC(), Mode: "redis-only", ev: &evidence{
		stuck: map[string][]streamEntry{}, dlqStream: map[string][]streamEntry{}, stale: map[string][]staleMember{},
	}}
	if len(a.cfg.Brokers) > 0 {
		rep.Mode = "kafka"
	} else if a.cfg.Sale.Spec.Kafka != nil {
		rep.Notes = append(rep.Notes, "the sale declares Kafka but no brokers were given: orders waiting in Kafka are not seen and may be reported LOST")
	}

	// 1. Redis, one snapshot per SKU.
	snaps := make(map[string]*redisSnapshot, len(a.cfg.Sale.Spec.SKUs))
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		s, err := a.readRedis(ctx, keys.ForSKU(sale, sku.ID))
		if err != nil {
			return nil, fmt.Errorf("read redis of SKU %s: %w", sku.ID, err)
		}
		snaps[sku.ID] = s
	}
	// 2. Kafka: the order topic behind the group, then the dead letters.
	kv := &kafkaView{}
	if len(a.cfg.Brokers) > 0 {
		var err error
		if kv, err = a.readKafka(ctx); err != nil {
			return nil, err
		}
		rep.KafkaLag = kv.Lag
		for _, r := range kv.Incomplete {
			rep.Findings = append(rep.Findings, Finding{Kind: KindIncomplete, Where: "kafka",
				Detail: "could not read " + r + " within " + a.cfg.KafkaTimeout.String() + "; orders there may be reported LOST"})
		}
	}
	// 3. MySQL.
	states := make(map[string]map[string]orderdb.State, len(snaps))
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		st, err := a.cfg.Orders.States(ctx, sale, sku.ID)
		if err != nil {
			return nil, err
		}
		states[sku.ID] = st
	}

	// Kafka messages by SKU.
	kPending := map[string][]kafkaMessage{}
	for _, m := range kv.Pending {
		if m.Err != nil {
			rep.Findings = append(rep.Findings, Finding{Kind: KindPoison, Where: "kafka",
				Detail: fmt.Sprintf("message %s/%d@%d is not a valid order (%v); the consumer will dead-letter it", keys.Topic(sale), m.Partition, m.Offset, m.Err)})
			continue
		}
		kPending[m.Order.SKU] = append(kPending[m.Order.SKU], m)
	}
	kDead := map[string][]kafkaMessage{}
	for _, m := range kv.DeadLetters {
		if m.Err != nil {
			d := fmt.Sprintf("dead letter %s/%d@%d is not a valid order: %v", keys.DeadLetterTopic(sale), m.Partition, m.Offset, m.Err)
			if m.Reason != "" {
				d += " (dead-lettered because: " + m.Reason + ")"
			}
			rep.Findings = append(rep.Findings, Finding{Kind: KindPoison, Where: "kafka-dlq", Detail: d})
			continue
		}
		kDead[m.Order.SKU] = append(kDead[m.Order.SKU], m)
	}

	rep.Conserved = true
	redisOK := true
	for _, sku := range a.cfg.Sale.Spec.SKUs {
		sr := a.auditSKU(rep, sku.ID, snaps[sku.ID], states[sku.ID], kPending[sku.ID], kDead[sku.ID], now)
		if !sr.Conserved {
			rep.Conserved = false
		}
		rep.Lost += sr.Lost
		rep.SKUs = append(rep.SKUs, sr)
	}
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
	return rep, nil
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

func (a *Auditor) readRedis(ctx context.Context, k keys.SKU) (*redisSnapshot, error) {
	var (
		stock, initial *redis.StringCmd
		holders, ords  *redis.MapStringStringCmd
		expiry         *redis.StringSliceCmd
		stream, dlq    *redis.XMessageSliceCmd
		groups         *redis.XInfoGroupsCmd
		pending        *redis.XPendingExtCmd
	)
	_, err := a.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		stock = p.Get(ctx, k.Stock)
		initial = p.Get(ctx, k.Initial)
		holders = p.HGetAll(ctx, k.Holders)
		ords = p.HGetAll(ctx, k.Orders)
		expiry = p.ZRange(ctx, k.Expiry, 0, -1)
		stream = p.XRange(ctx, k.Stream, "-", "+")
		dlq = p.XRange(ctx, k.DeadLetters, "-", "+")
		groups = p.XInfoGroups(ctx, k.Stream)
		pending = p.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: k.Stream, Group: keys.RelayGroup, Start: "-", End: "+", Count: 1 << 30})
		return nil
	})
	// Per-command errors (a missing key or group) are expected; look at each.
	if err != nil && !errors.Is(err, redis.Nil) && !isMissing(err) {
		return nil, err
	}
	s := &redisSnapshot{holders: holders.Val(), orders: ords.Val(), expiry: map[string]bool{}, pending: map[string]redis.XPendingExt{}}
	if v, err := stock.Int64(); err == nil {
		s.stock, s.warmed = v, true
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("stock counter: %w", err)
	}
	if v, err := initial.Int64(); err == nil {
		s.initial = v
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("initial stock: %w", err)
	}
	for _, m := range expiry.Val() {
		s.expiry[m] = true
	}
	for _, c := range []interface{ Err() error }{holders, ords, expiry, stream, dlq} {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
	}
	s.stream = stream.Val()
	s.dlq = dlq.Val()
	if gs, err := groups.Result(); err == nil {
		for _, g := range gs {
			if g.Name == keys.RelayGroup {
				s.hasGroup, s.lastDelivered = true, g.LastDeliveredID
			}
		}
	} else if !isMissing(err) {
		return nil, fmt.Errorf("stream groups: %w", err)
	}
	if ps, err := pending.Result(); err == nil {
		for _, p := range ps {
			s.pending[p.ID] = p
		}
	} else if !isMissing(err) {
		return nil, fmt.Errorf("pending entries: %w", err)
	}
	return s, nil
}

// isMissing says the error only means "no such stream or group".
func isMissing(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "NOGROUP") || strings.Contains(msg, "no such key")
}

// auditSKU checks one SKU and appends its findings to rep.
func (a *Auditor) auditSKU(rep *Report, sku string, s *redisSnapshot, db map[string]orderdb.State,
	kPending, kDead []kafkaMessage, now time.Time,
) SKUReport {
	sr := SKUReport{SKU: sku, Initial: s.initial, Remaining: s.stock,
		Redis: RedisFigures{Orders: map[string]int64{}, StreamLength: int64(len(s.stream)), DeadLetters: int64(len(s.dlq)),
			Expiry: int64(len(s.expiry)), StreamPending: int64(len(s.pending))},
		KafkaPending: int64(len(kPending)), KafkaDeadLetters: int64(len(kDead))}
	add := func(f Finding) {
		f.SKU = sku
		rep.Findings = append(rep.Findings, f)
	}
	if !s.warmed {
		add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: "the stock counter does not exist: the SKU was never warmed, or its keys were deleted"})
	}

	// MySQL counts.
	for _, st := range db {
		switch st.Status {
		case order.Created:
			sr.MySQL.Created++
		case order.Paid:
			sr.MySQL.Paid++
		case order.Cancelled:
			sr.MySQL.Cancelled++
			if !st.StockReturned {
				sr.MySQL.Returning++
			}
		}
	}

	// Redis against itself.
	for _, v := range s.holders {
		n, _ := strconv.ParseInt(v, 10, 64)
		sr.Redis.UnitsHeld += n
	}
	live := int64(0)
	for _, v := range s.orders {
		st, _, _ := strings.Cut(v, " ")
		sr.Redis.Orders[st]++
		if st != order.Cancelled.String() {
			live++
		}
	}
	if s.warmed && s.stock+sr.Redis.UnitsHeld != s.initial {
		add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: fmt.Sprintf(
			"remaining %d + units held %d = %d, but initial is %d", s.stock, sr.Redis.UnitsHeld, s.stock+sr.Redis.UnitsHeld, s.initial)})
	}
	if sr.Redis.UnitsHeld != live {
		add(Finding{Kind: KindRedisInconsistent, Where: "redis", Detail: fmt.Sprintf(
			"buyers hold %d units, but the orders hash has %d orders not cancelled", sr.Redis.UnitsHeld, live)})
	}

	// In flight, by order number, minus what MySQL has.
	inFlight := map[string]bool{}
	count := func(no string) bool {
		if _, durable := db[no]; durable {
			return false
		}
		if inFlight[no] {
			return false
		}
		inFlight[no] = true
		return true
	}
	var stuck []streamEntry
	for _, m := range s.stream {
		e := streamEntry{ID: m.ID}
		e.Order, e.Err = order.FromStream(m.Values)
		if e.Err == nil && e.Order.Sale != rep.Sale {
			e.Err = fmt.Errorf("order %s belongs to sale %q", e.Order.OrderNo, e.Order.Sale)
		}
		_, e.InMySQL = db[e.Order.OrderNo]
		if e.Err != nil {
			if m.Values == nil {
				continue // deleted while pending: nothing left to count
			}
			add(Finding{Kind: KindPoison, Where: "stream", Detail: fmt.Sprintf("entry %s is not a valid order: %v; the worker will dead-letter it", m.ID, e.Err)})
			continue
		}
		if count(e.Order.OrderNo) {
			sr.InFlight.Stream++
		}
		pend, isPending := s.pending[m.ID]
		undelivered := !isPending && (!s.hasGroup || compareIDs(m.ID, s.lastDelivered) > 0)
		var waited time.Duration
		var how string
		switch {
		case isPending:
			waited, how = pend.Idle, "pending in consumer "+pend.Consumer+"'s hands"
			e.Consumer = pend.Consumer
		case undelivered:
			sr.Redis.StreamUndelivered++
			if at, ok := idTime(m.ID); ok {
				waited, how = now.Sub(at), "never delivered to a worker"
			}
		}
		if how != "" && waited > a.cfg.StuckAfter {
			stuck = append(stuck, e)
			d := fmt.Sprintf("stream entry %s %s for %s", m.ID, how, waited.Round(time.Millisecond))
			if e.InMySQL {
				d += "; already in MySQL, only the acknowledgement is missing"
			}
			add(Finding{Kind: KindStuck, Where: "stream", OrderNo: e.Order.OrderNo, Detail: d, Repairable: true})
		}
	}
	sr.Stuck = len(stuck)
	a.cfgEvidence(rep).stuck[sku] = stuck
	for _, m := range kPending {
		if count(m.Order.OrderNo) {
			sr.InFlight.Kafka++
		}
	}
	for _, m := range kDead {
		if count(m.Order.OrderNo) {
			sr.InFlight.DeadLetters++
			d := fmt.Sprintf("valid order in the dead-letter topic (partition %d, offset %d) that never reached MySQL", m.Partition, m.Offset)
			if m.Reason != "" {
				d += "; dead-lettered because: " + m.Reason
			}
			add(Finding{Kind: KindDeadLetter, Where: "kafka-dlq", OrderNo: m.Order.OrderNo, Detail: d, Repairable: true})
			a.cfgEvidence(rep).dlqTopic = append(a.cfgEvidence(rep).dlqTopic, m.Order)
		}
	}
	var dlqEntries []streamEntry
	for _, m := range s.dlq {
		e := streamEntry{ID: m.ID}
		vals := map[string]any{}
		for k, v := range m.Values {
			if f, ok := strings.CutPrefix(k, "f:"); ok {
				vals[f] = v
			}
		}
		reason, _ := m.Values["error"].(string)
		e.Order, e.Err = order.FromStream(vals)
		if e.Err == nil && e.Order.Sale != rep.Sale {
			e.Err = fmt.Errorf("order %s belongs to sale %q", e.Order.OrderNo, e.Order.Sale)
		}
		if e.Err != nil {
			add(Finding{Kind: KindPoison, Where: "dlq-stream", Detail: fmt.Sprintf(
				"dead-letter entry %s is not a valid order: %v (dead-lettered because: %s)", m.ID, e.Err, reason)})
			continue
		}
		_, e.InMySQL = db[e.Order.OrderNo]
		dlqEntries = append(dlqEntries, e)
		if count(e.Order.OrderNo) {
			sr.InFlight.DeadLetters++
			add(Finding{Kind: KindDeadLetter, Where: "dlq-stream", OrderNo: e.Order.OrderNo, Repairable: true,
				Detail: fmt.Sprintf("valid order in the dead-letter stream (entry %s) that never reached MySQL; dead-lettered because: %s", m.ID, reason)})
		}
	}
	a.cfgEvidence(rep).dlqStream[sku] = dlqEntries
	sr.InFlight.Total = int64(len(inFlight))

	// Orders missing on either side, stale expiry members, statuses behind.
	lost := make([]string, 0)
	for no, v := range s.orders {
		if _, durable := db[no]; durable || inFlight[no] {
			continue
		}
		lost = append(lost, no)
		st, user, _ := strings.Cut(v, " ")
		add(Finding{Kind: KindLost, Where: "redis", OrderNo: no, Detail: fmt.Sprintf(
			"admitted for user %s (shown %s) but not in MySQL, the stream, Kafka or a dead-letter queue: its unit is sold and the order is gone", user, st)})
	}
	sr.Lost = len(lost)
	for no, st := range db {
		shown, ok := s.orders[no]
		if !ok {
			sr.UnknownToRedis++
			add(Finding{Kind: KindUnknownToRedis, Where: "mysql", OrderNo: no, Detail: fmt.Sprintf(
				"in MySQL (%s) but unknown to the Redis orders hash", st.Status)})
			continue
		}
		status, user, _ := strings.Cut(shown, " ")
		if s.expiry[no] {
			if st.Status == order.Paid || (st.Status == order.Cancelled && st.StockReturned) {
				sr.StaleExpiry++
				a.cfgEvidence(rep).stale[sku] = append(a.cfgEvidence(rep).stale[sku], staleMember{OrderNo: no, User: user, State: st})
				add(Finding{Kind: KindStaleExpiry, Where: "expiry", OrderNo: no, Repairable: true, Detail: fmt.Sprintf(
					"in the expiry set but %s in MySQL", st.Status)})
				continue
			}
			if st.Status == order.Cancelled && !st.StockReturned {
				// Cancelled, not released yet: the expiry member is the
				// proof its unit is still out (orderstate.Release).
				sr.ReturningOut++
			}
		}
		if rank(status) < rank(st.Status.String()) {
			o := order.Order{OrderNo: no, Sale: rep.Sale, SKU: sku, User: user}
			a.cfgEvidence(rep).behind = append(a.cfgEvidence(rep).behind, behindOrder{Order: o, Shown: status, State: st})
			add(Finding{Kind: KindStatusBehind, Where: "redis", OrderNo: no, Repairable: st.Status != order.Cancelled, Detail: fmt.Sprintf(
				"result polling shows %s, MySQL says %s", status, st.Status)})
		}
	}
	sr.Accounted = sr.Remaining + sr.InFlight.Total + sr.MySQL.Created + sr.MySQL.Paid + sr.ReturningOut
	sr.Imbalance = sr.Initial - sr.Accounted
	sr.Conserved = sr.Imbalance == 0
	if !sr.Conserved {
		add(Finding{Kind: KindImbalance, Detail: fmt.Sprintf(
			"initial %d ≠ remaining %d + in flight %d + created %d + paid %d + returning %d = %d (%+d units unaccounted)",
			sr.Initial, sr.Remaining, sr.InFlight.Total, sr.MySQL.Created, sr.MySQL.Paid, sr.ReturningOut, sr.Accounted, sr.Imbalance)})
	}
	if sr.ReturningOut > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("SKU %s: %d cancelled orders have their unit still out (the rollback returns them); they are counted as out", sku, sr.ReturningOut))
	}
	return sr
}

func (*Auditor) cfgEvidence(rep *Report) *evidence { return rep.ev }

func rank(status string) int {
	switch status {
	case "queued":
		return 0
	case "created":
		return 1
	case "paid", "cancelled":
		return 2
	}
	return -1
}

// compareIDs orders two stream IDs "ms-seq".
func compareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as < bs:
		return -1
	case as > bs:
		return 1
	}
	return 0
}

func splitID(id string) (ms, seq uint64) {
	l, r, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(l, 10, 64)
	seq, _ = strconv.ParseUint(r, 10, 64)
	return ms, seq
}

func idTime(id string) (time.Time, bool) {
	ms, _ := splitID(id)
	if ms == 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)), true
}
