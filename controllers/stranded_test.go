package controllers_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// refuseRows makes MySQL refuse, for good, the rows of users named
// "refused-…": a CHECK constraint fails with error 4025, which the
// pipeline treats as a data error and dead-letters after its retries.
const refuseRows = "ALTER TABLE seckill_order ADD CONSTRAINT refuse_test CHECK (user_id NOT LIKE 'refused-%')"

// strandedSale runs a Redis-only sale whose worker dead-letters the 3
// orders of users MySQL refuses (5 others are stored, 2 of them paid), with
// a poison entry beside them in the other SKU's dead-letter stream, to just
// past its payment window with the unpaid stored orders rolled back.
func strandedSale(t *testing.T, policy v1alpha1.StrandedOrdersPolicy, kafka bool) (e *env, refused []string) {
	t.Helper()
	e = newEnv(t, envOpts{kafka: kafka})
	e.sale(func(fs *v1alpha1.FlashSale) { fs.Spec.Teardown.StrandedOrders = policy })
	key := e.ns + "/" + saleName
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.markReady()
	stopWorker := e.startWorker()
	e.eventually("the go-live gate to open", func() bool { return e.get().Status.OpenedAt != nil })
	if _, err := e.db.ExecContext(e.ctx, refuseRows); err != nil {
		t.Fatal(err)
	}

	e.clk.SetTime(e.t0.Add(10 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseActive)
	shop := e.startSeckill()
	var stored []string
	for _, u := range append(users("buyer", 5), users("refused", 3)...) {
		a := shop.buy(u, "1001")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase by %s: %d %s", u, a.Status, a.Error)
		}
		if strings.HasPrefix(u, "refused") {
			refused = append(refused, a.OrderNo)
		} else {
			stored = append(stored, a.OrderNo)
		}
	}
	dlq := keys.ForSKU(key, "1001").DeadLetters
	e.eventually("3 orders dead-lettered, 5 stored", func() bool {
		fs := e.get()
		// With Kafka the consumer commits past the dead letters: no lag.
		dead := kafka || e.rdb.XLen(e.ctx, dlq).Val() == 3
		return dead && fs.Status.QueueLag == 0 && fs.Status.Sold == 8 && countRows(e, "seckill_order") == 5
	})
	for _, o := range stored[:2] {
		if a := shop.pay(o); a.Status != http.StatusOK {
			t.Fatalf("pay %s: %d %s", o, a.Status, a.Error)
		}
	}
	if kafka {
		e.produce(keys.DeadLetterTopic(key), []byte{0xff, 'x'})
	} else {
		poison := []any{"source-id", "0-1", "error", "decode", "f:order", string([]byte{0xff, 'x'})}
		if err := e.rdb.XAdd(e.ctx, &redis.XAddArgs{Stream: keys.ForSKU(key, "1002").DeadLetters, Values: poison}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	e.clk.SetTime(e.t0.Add(20 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	e.clk.SetTime(e.t0.Add(21*time.Minute + time.Second))
	if p := e.rollbackOnce(); p.Cancelled != 3 {
		t.Fatalf("rollback cancelled %d, want the 3 unpaid stored orders", p.Cancelled)
	}
	stopWorker()
	return e, refused
}

// produce sends raw bytes to a topic of the env's Kafka.
func (e *env) produce(topic string, raw []byte) {
	e.t.Helper()
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer(e.brokers(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	defer prod.Close()
	if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(raw)}); err != nil {
		e.t.Fatal(err)
	}
}

func countRows(e *env, table string) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRowContext(e.ctx, "SELECT COUNT(*) FROM "+table+" WHERE sale = ?", e.ns+"/"+saleName).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// countEvents counts the Events of that type and reason recorded so far.
func (e *env) countEventsOf(eventType, reason string) int {
	e.drainEvents()
	n := 0
	for _, ev := range e.seen {
		if strings.HasPrefix(ev, eventType+" "+reason+" ") {
			n++
		}
	}
	return n
}

// strandedGauge reads flashsale_operator_orders_stranded of the sale.
func (e *env) strandedGauge() float64 {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.r.Metrics.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == controllers.MetricOrdersStranded {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "namespace" && l.GetValue() == e.ns {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
	}
	e.t.Fatalf("no %s series for the sale", controllers.MetricOrdersStranded)
	return 0
}

// TestStrandedOrdersHoldTeardown: orders MySQL refused wait only in the
// dead-letter stream when the sale settles. The operator does not tear them
// down: the sale stays Draining with OrdersStranded, one Warning Event, the
// audit not conserved and the gauge the alert reads at 3, while its own
// repair fails. Once MySQL takes the rows, its next audit stores them, the
// rollback settles them, and the sale ends with every order in MySQL and the
// poison entry kept in seckill_dead_letter.
func TestStrandedOrdersHoldTeardown(t *testing.T) {
	e, refused := strandedSale(t, "", false)
	key := e.ns + "/" + saleName
	stock := keys.ForSKU(key, "1001").Stock

	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionTrue, v1alpha1.ReasonOrdersStranded)
	e.wantCond(v1alpha1.ConditionStockConsistent, metav1.ConditionFalse, v1alpha1.ReasonNotConserved)
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOrdersStranded, "3 valid orders wait only in a dead-letter store", "flashsale audit --repair", "Abandon")
	if c := e.cond(v1alpha1.ConditionStockConsistent); !strings.Contains(c.Message, "3 ") || !strings.Contains(c.Message, "only in a dead-letter store") {
		t.Fatalf("StockConsistent says %q", c.Message)
	}
	if c := e.cond(v1alpha1.ConditionOrdersStranded); !strings.Contains(c.Message, "refuse_test") {
		t.Fatalf("OrdersStranded does not say why the operator's repair failed: %q", c.Message)
	}
	fs := e.get()
	if a := fs.Status.Audit; a == nil || a.Stranded != 3 || a.Conserved {
		t.Fatalf("audit %+v, want 3 stranded, not conserved", a)
	}
	if g := e.strandedGauge(); g != 3 {
		t.Fatalf("%s = %v, want 3", controllers.MetricOrdersStranded, g)
	}
	// Refreshes and the next audits (whose repair still fails) hold the
	// sale, and tell the same count once.
	for i := range 8 {
		e.clk.Step(5 * time.Second)
		e.reconcile()
		e.wantPhase(v1alpha1.PhaseDraining)
		if e.rdb.Exists(e.ctx, stock).Val() != 1 || e.rdb.XLen(e.ctx, keys.ForSKU(key, "1001").DeadLetters).Val() != 3 {
			t.Fatalf("keys or dead letters deleted while orders are stranded (refresh %d)", i)
		}
	}
	if n := e.countEventsOf(corev1.EventTypeWarning, v1alpha1.ReasonOrdersStranded); n != 1 {
		t.Fatalf("%d OrdersStranded Events over 40 s of one unchanged count, want 1", n)
	}
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonDraining)

	// MySQL takes the rows again: the operator's next audit stores them.
	if _, err := e.db.ExecContext(e.ctx, "ALTER TABLE seckill_order DROP CONSTRAINT refuse_test"); err != nil {
		t.Fatal(err)
	}
	e.clk.Step(controllers.DefaultAuditInterval)
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionFalse, v1alpha1.ReasonNoneStranded)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonNoneStranded, "3 stranded orders are in MySQL")
	if n := countRows(e, "seckill_order"); n != 8 {
		t.Fatalf("%d orders in MySQL after the repair, want 8", n)
	}
	// Stored as created past their deadline: the rollback cancels them and
	// returns their units before the sale may end.
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	if p := e.rollbackOnce(); p.Cancelled != 3 {
		t.Fatalf("rollback cancelled %d repaired orders, want 3", p.Cancelled)
	}
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)

	fs = e.get()
	if a := fs.Status.Audit; a == nil || !a.Conserved || a.Stranded != 0 || a.Lost != 0 {
		t.Fatalf("final audit %+v, want conserved with nothing stranded", a)
	}
	e.wantCond(v1alpha1.ConditionStockConsistent, metav1.ConditionTrue, v1alpha1.ReasonConserved)
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionFalse, v1alpha1.ReasonNoneStranded)
	if c := e.cond(v1alpha1.ConditionTornDown); !strings.Contains(c.Message, "1 dead letters kept in MySQL table seckill_dead_letter") {
		t.Fatalf("TornDown says %q", c.Message)
	}
	store := orderdb.New(e.db)
	for _, no := range refused {
		if row, err := store.Get(e.ctx, no); err != nil || row.Sale != key {
			t.Fatalf("refused order %s not in MySQL after the repair: %v", no, err)
		}
	}
	if c, err := store.CountDeadLetters(e.ctx, key); err != nil || c != (orderdb.DeadLetterCounts{Poison: 1}) {
		t.Fatalf("seckill_dead_letter: %+v %v, want the poison entry only", c, err)
	}
	if e.rdb.Exists(e.ctx, stock).Val() != 0 {
		t.Fatal("keys left after teardown")
	}
	if g := e.strandedGauge(); g != 0 {
		t.Fatalf("%s = %v after the sale ended, want 0", controllers.MetricOrdersStranded, g)
	}
	t.Logf("the sale's Events:\n  %s", strings.Join(e.seen, "\n  "))
}

// TestStrandedOrdersAbandoned: under strandedOrders: Abandon the settled
// sale archives its stranded orders in seckill_dead_letter, says how many in
// a Warning Event and status.audit.abandoned, and ends.
func TestStrandedOrdersAbandoned(t *testing.T) {
	e, refused := strandedSale(t, v1alpha1.StrandedAbandon, false)
	key := e.ns + "/" + saleName
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOrdersAbandoned, "3 stranded orders abandoned", "seckill_dead_letter")
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionFalse, v1alpha1.ReasonOrdersAbandoned)
	fs := e.get()
	if a := fs.Status.Audit; a == nil || a.Stranded != 3 || a.Abandoned != 3 || a.Conserved {
		t.Fatalf("final audit %+v, want 3 stranded, 3 abandoned, not conserved", a)
	}
	store := orderdb.New(e.db)
	dls, err := store.ListDeadLetters(e.ctx, key, 10)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	poison := 0
	for _, d := range dls {
		if d.Valid {
			kept[d.OrderNo] = true
		} else {
			poison++
		}
	}
	for _, no := range refused {
		if !kept[no] {
			t.Fatalf("abandoned order %s not in seckill_dead_letter: %+v", no, dls)
		}
	}
	if len(kept) != 3 || poison != 1 {
		t.Fatalf("seckill_dead_letter holds %d orders and %d poison, want 3 and 1", len(kept), poison)
	}
	if g := e.strandedGauge(); g != 0 {
		t.Fatalf("%s = %v after abandoning, want 0", controllers.MetricOrdersStranded, g)
	}
	if n := e.countEventsOf(corev1.EventTypeWarning, v1alpha1.ReasonOrdersAbandoned); n != 1 {
		t.Fatalf("%d OrdersAbandoned Events, want 1", n)
	}
}

// TestStrandedOrdersKafka: the same with Kafka, where the consumer puts the
// refused orders on the dead-letter topic (which Kafka cannot delete one
// message of): the sale holds, the operator stores them once MySQL takes
// them, and the garbage on the topic is kept in seckill_dead_letter, byte
// for byte, before the topic is deleted.
func TestStrandedOrdersKafka(t *testing.T) {
	e, refused := strandedSale(t, "", true)
	key := e.ns + "/" + saleName
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionTrue, v1alpha1.ReasonOrdersStranded)
	if a := e.get().Status.Audit; a == nil || a.Stranded != 3 || a.Conserved {
		t.Fatalf("audit %+v, want 3 stranded, not conserved", a)
	}
	e.clk.Step(controllers.DefaultAuditInterval)
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)

	if _, err := e.db.ExecContext(e.ctx, "ALTER TABLE seckill_order DROP CONSTRAINT refuse_test"); err != nil {
		t.Fatal(err)
	}
	e.clk.Step(controllers.DefaultAuditInterval)
	e.reconcile()
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionFalse, v1alpha1.ReasonNoneStranded)
	if p := e.rollbackOnce(); p.Cancelled != 3 {
		t.Fatalf("rollback cancelled %d repaired orders, want 3", p.Cancelled)
	}
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	if a := e.get().Status.Audit; a == nil || !a.Conserved || a.Stranded != 0 {
		t.Fatalf("final audit %+v, want conserved with nothing stranded", a)
	}
	store := orderdb.New(e.db)
	for _, no := range refused {
		if _, err := store.Get(e.ctx, no); err != nil {
			t.Fatalf("refused order %s not in MySQL after the repair: %v", no, err)
		}
	}
	dls, err := store.ListDeadLetters(e.ctx, key, 10)
	if err != nil || len(dls) != 1 || dls[0].Source != orderdb.SourceKafkaDLQ || !bytes.Equal(dls[0].Payload, []byte{0xff, 'x'}) {
		t.Fatalf("seckill_dead_letter: %+v %v, want the garbage message of the topic", dls, err)
	}
}
