package controllers_test

// Deleting a sale whose buyers were admitted: every order answered 202 ends
// in MySQL (cancelled with its unit returned, unless paid), or is counted in
// a Warning Event and kept in seckill_dead_letter; nothing is dropped in
// silence, and the finalizer never wedges.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// realTimeEnv is an env whose sale starts now by the wall clock, so the fake
// clock can follow real time once the sale is open: the deletion timestamp
// the API server writes is real time, and the cleanup measures from it.
func realTimeEnv(t *testing.T, o envOpts) *env {
	e := newEnv(t, o)
	e.t0 = time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	e.clk.SetTime(e.t0)
	return e
}

// follow moves the fake clock to the wall clock (never backwards).
func (e *env) follow() {
	if now := time.Now(); now.After(e.clk.Now()) {
		e.clk.SetTime(now)
	}
}

// storedOrder is an order's row as the test reads it.
type storedOrder struct {
	status   order.Status
	returned bool
}

func (e *env) storedOrders() map[string]storedOrder {
	e.t.Helper()
	rows, err := e.db.QueryContext(e.ctx, `SELECT order_no, status, stock_returned FROM seckill_order WHERE sale = ?`, e.ns+"/"+saleName)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]storedOrder{}
	for rows.Next() {
		var no string
		var s storedOrder
		if err := rows.Scan(&no, &s.status, &s.returned); err != nil {
			e.t.Fatal(err)
		}
		out[no] = s
	}
	return out
}

// archived are the sale's rows of seckill_dead_letter: valid orders by
// order number (with their source), and the count of poison messages.
func (e *env) archived() (orders map[string]string, poison int) {
	e.t.Helper()
	rows, err := e.db.QueryContext(e.ctx, `SELECT COALESCE(order_no, ''), valid, source FROM seckill_dead_letter WHERE sale = ?`, e.ns+"/"+saleName)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	orders = map[string]string{}
	for rows.Next() {
		var no, source string
		var valid bool
		if err := rows.Scan(&no, &valid, &source); err != nil {
			e.t.Fatal(err)
		}
		if valid {
			orders[no] = source
		} else {
			poison++
		}
	}
	return orders, poison
}

// checkNoneDropped: every order answered 202 is in MySQL (paid when its
// payment was answered 200, otherwise cancelled with its unit returned) or
// archived in seckill_dead_letter; nothing stays created.
func (e *env) checkNoneDropped(accepted []string, paid map[string]bool) (stored, kept int) {
	e.t.Helper()
	rows := e.storedOrders()
	arch, _ := e.archived()
	for _, no := range accepted {
		r, ok := rows[no]
		switch {
		case !ok && arch[no] != "":
			kept++
			continue
		case !ok:
			e.t.Errorf("order %s was answered 202 but is neither in MySQL nor in seckill_dead_letter", no)
			continue
		case paid[no] && r.status != order.Paid:
			e.t.Errorf("order %s was paid (200) but is %s", no, r.status)
		case !paid[no] && (r.status != order.Cancelled || !r.returned):
			e.t.Errorf("order %s is %s (unit returned: %v) after the delete, want cancelled with its unit returned", no, r.status, r.returned)
		}
		stored++
	}
	for no, r := range rows {
		if r.status == order.Created {
			e.t.Errorf("order %s still created after the delete: nobody can pay or cancel it any more", no)
		}
	}
	return stored, kept
}

// spike is buyers hammering the sale from goroutines until stopped.
type spike struct {
	e        *shop
	mu       sync.Mutex
	accepted []string
	paid     map[string]bool
	refused  map[string]int
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// startSpike runs n buyers, each buying once per new user id, SKUs 1001 and
// 1002 in turn; at every fifth accepted order, the one accepted twenty
// orders before is paid.
func (s *shop) startSpike(n int) *spike {
	sp := &spike{e: s, paid: map[string]bool{}, refused: map[string]int{}, stop: make(chan struct{})}
	for b := range n {
		sp.wg.Add(1)
		go func() {
			defer sp.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-sp.stop:
					return
				default:
				}
				sp.buyOnce(fmt.Sprintf("spike-%d-%d", b, i), []string{"1001", "1002"}[i%2])
			}
		}()
	}
	return sp
}

func (sp *spike) buyOnce(user, sku string) {
	tok, err := sp.e.try("/token", user, map[string]string{"sku": sku})
	if err == nil && tok.Status == http.StatusOK {
		tok, err = sp.e.try("/purchase", user, map[string]string{"sku": sku, "token": tok.Token})
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	switch {
	case err != nil:
		sp.refused["transport"]++
		time.Sleep(10 * time.Millisecond)
	case tok.Status == http.StatusAccepted:
		sp.accepted = append(sp.accepted, tok.OrderNo)
		if n := len(sp.accepted); n%5 == 0 && n > 20 {
			// Pay an order accepted a little earlier: the worker has
			// likely stored it by now (a payment before is refused).
			no := sp.accepted[n-20]
			sp.mu.Unlock()
			a, err := sp.e.try("/orders/"+no+"/pay", "payment-service", struct{}{}, "Authorization", "Bearer "+paySecret)
			sp.mu.Lock()
			if err == nil && a.Status == http.StatusOK {
				sp.paid[no] = true
			}
		}
	default:
		sp.refused[tok.Error]++
		time.Sleep(5 * time.Millisecond) // refused: do not spin
	}
}

// halt stops the buyers, once their requests in flight are answered, and
// returns what they were told.
func (sp *spike) halt() (accepted []string, paid map[string]bool, refused map[string]int) {
	sp.once.Do(func() { close(sp.stop) })
	sp.wg.Wait()
	return sp.accepted, sp.paid, sp.refused
}

func (sp *spike) first() string {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.accepted[0]
}

func (sp *spike) markPaid(orderNo string) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.paid[orderNo] = true
}

func (sp *spike) count() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return len(sp.accepted)
}

// try is post without failing the test: buyers run in goroutines, and a
// torn-down sale may close connections.
func (s *shop) try(path, user string, body any, hdr ...string) (answer, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(b))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-User-ID", user)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	var a answer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	a.Status = resp.StatusCode
	return a, nil
}

// TestDeleteMidSpikeDrainsFirst deletes a live Kafka sale in the middle of a
// spike of purchases, with orders in the streams and the topic: purchases
// close at once, the worker drains the queue before anything is torn down,
// and afterwards every order answered 202 is in MySQL, cancelled with its
// unit returned unless it was paid (or counted in an Event and archived).
// Before the drain, the finalizer tore down at once: the orders still in the
// pipeline vanished and those in MySQL stayed created for ever.
func TestDeleteMidSpikeDrainsFirst(t *testing.T) {
	e := realTimeEnv(t, envOpts{kafka: true})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.SKUs[0].Stock, fs.Spec.SKUs[1].Stock = 5000, 5000
	})
	stopWorker := warmAndOpen(t, e, true)
	e.follow()
	shop := e.startSeckill()

	// The spike runs with the worker, then without it for a moment, so the
	// queue holds orders when the sale is deleted; then it drains again.
	sp := shop.startSpike(8)
	testutil.Eventually(t, 20*time.Second, "40 orders accepted", func() bool { return sp.count() >= 40 })
	first := sp.first()
	testutil.Eventually(t, 20*time.Second, "the first order stored", func() bool { _, ok := e.storedOrders()[first]; return ok })
	if a := shop.pay(first); a.Status != http.StatusOK {
		t.Fatalf("pay %s: %d %s", first, a.Status, a.Error)
	}
	sp.markPaid(first)
	stopWorker()
	testutil.Eventually(t, 20*time.Second, "80 orders accepted", func() bool { return sp.count() >= 80 })
	stopWorker = e.startWorker()
	// The data plane's pod, as the kubelet would show it until it stops.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sale-worker-x", Namespace: e.ns, Labels: map[string]string{controllers.SaleLabel: saleName}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "flashsale:test"}}},
	}
	if err := e.k8s.Create(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	deletedAt := time.Now()
	e.follow()
	if res := e.reconcile(); res.RequeueAfter <= 0 || e.gone() {
		t.Fatalf("tore down at once (requeue %s) with orders in the queue", res.RequeueAfter)
	}
	if sw, err := switches.Get(e.ctx, e.rdb, e.ns+"/"+saleName); err != nil || !sw.Closed {
		t.Fatalf("switches %+v (%v) after the delete: purchases must close first", sw, err)
	}
	if n := e.rdb.Exists(e.ctx, keys.ForSKU(e.ns+"/"+saleName, "1001").Stock).Val(); n != 1 {
		t.Fatal("keys deleted while the queue still holds orders")
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonDraining, "Draining before teardown", "orders in the queue")
	for deadline := time.Now().Add(30 * time.Second); !e.gone(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the deleted sale did not finish draining within 30 s")
		}
		e.follow()
		e.reconcile()
		e.stopPodsOfDeleted(pod, func() { sp.halt() }, stopWorker)
	}
	took := time.Since(deletedAt)
	accepted, paid, refused := sp.halt()
	stored, kept := e.checkNoneDropped(accepted, paid)
	t.Logf("%d orders answered 202 (%d paid), %d stored, %d archived; refusals %v; deleted in %s; %s",
		len(accepted), len(paid), stored, kept, refused, took.Round(10*time.Millisecond), e.eventText(v1alpha1.ReasonDraining))
	if kept > 0 {
		e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOrdersUndrained, fmt.Sprintf("%d archived", kept))
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonCleanedUp, "unpaid orders cancelled", "compare-and-set", "Redis keys deleted", "topics")
	admin, err := sarama.NewClusterAdmin(e.brokers(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	assertTornDown(t, e, admin)
}

// TestDeleteWithNothingDraining: the worker is gone, so nothing drains the
// orders in the streams, the one the relay handed to Kafka, nor a poison
// entry. The deleted sale waits for the drain budget, then stores the
// stream's orders in MySQL through the audit's repair (and cancels them),
// archives the Kafka one and the poison in seckill_dead_letter, says so in a
// Warning Event, and releases its finalizer: no wedge, nothing dropped.
func TestDeleteWithNothingDraining(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.sale(nil)
	stopWorker := warmAndOpen(t, e, true)
	shop := e.startSeckill()
	stopWorker()
	var accepted []string
	for _, u := range users("stuck", 25) {
		a := shop.buy(u, "1001")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", a.Status, a.Error)
		}
		accepted = append(accepted, a.OrderNo)
	}
	saleKey := e.ns + "/" + saleName
	k := keys.ForSKU(saleKey, "1001")
	handed := handToKafka(t, e, k.Stream)
	if err := e.rdb.XAdd(e.ctx, &redis.XAddArgs{Stream: k.Stream, Values: []any{"garbage", "\xff\x00"}}).Err(); err != nil {
		t.Fatal(err)
	}

	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	deleted := e.get().DeletionTimestamp.Time
	for _, after := range []time.Duration{time.Second, controllers.DefaultCleanupTimeout/2 - time.Second} {
		e.clk.SetTime(deleted.Add(after))
		if res := e.reconcile(); res.RequeueAfter <= 0 || res.RequeueAfter > 2*time.Second || e.gone() {
			t.Fatalf("%s after the delete: requeue %s, gone %v; want to wait for the drain", after, res.RequeueAfter, e.gone())
		}
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonDraining, "Draining before teardown: 26 orders in the queue")
	if rows := e.storedOrders(); len(rows) != 0 {
		t.Fatalf("%d orders in MySQL while draining, want none (nothing drains)", len(rows))
	}

	e.clk.SetTime(deleted.Add(controllers.DefaultCleanupTimeout + time.Second))
	e.reconcile()
	if !e.gone() {
		t.Fatal("FlashSale still there after the cleanup timeout: the finalizer wedged")
	}
	stored, kept := e.checkNoneDropped(accepted, nil)
	arch, poison := e.archived()
	if stored != 24 || kept != 1 || arch[handed] != "kafka" || poison != 1 {
		t.Fatalf("stored %d, archived %d (%v), poison %d; want the 24 stream orders stored, the Kafka one and the poison entry archived", stored, kept, arch, poison)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOrdersUndrained, "25 orders could not be drained", "24 stored", "1 archived in seckill_dead_letter", "1 poison")
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonCleanedUp, "24 unpaid orders cancelled and 24 units returned")
	admin, err := sarama.NewClusterAdmin(e.brokers(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	assertTornDown(t, e, admin)
}

// TestDeleteWithItsNamespace: the namespace goes, taking the workloads and
// the Secrets first. Nothing is left to drain the queue, so the sale does
// not wait for the drain budget: with the connections the operator holds it
// stores the stream's orders, cancels them and releases the finalizer at
// once.
func TestDeleteWithItsNamespace(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	warmAndOpen(t, e, false) // Redis-only, and no worker runs
	shop := e.startSeckill()
	var accepted []string
	for _, u := range users("ns", 10) {
		a := shop.buy(u, "1002")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", a.Status, a.Error)
		}
		accepted = append(accepted, a.OrderNo)
	}
	// What the namespace controller does before it can delete the
	// FlashSale, which its finalizer holds.
	if err := e.k8s.Delete(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}); err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		if err := e.k8s.Delete(e.ctx, e.deployment(comp)); err != nil {
			t.Fatal(err)
		}
	}
	var sec corev1.Secret
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: controllers.DefaultEndpointsSecret}, &sec); err != nil {
		t.Fatal(err)
	}
	if err := e.k8s.Delete(e.ctx, &sec); err != nil {
		t.Fatal(err)
	}
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	e.reconcile()
	if !e.gone() {
		t.Fatal("the sale waited although its namespace took its workers")
	}
	if stored, kept := e.checkNoneDropped(accepted, nil); stored != 10 || kept != 0 {
		t.Fatalf("stored %d, archived %d; want the 10 orders stored", stored, kept)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOrdersUndrained, "10 orders could not be drained", "10 stored")
}

// TestDeleteBeforeGoLiveIsImmediate: a sale deleted while it warms never
// admitted a buyer; it is torn down at once, without waiting for anything.
func TestDeleteBeforeGoLiveIsImmediate(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.sale(nil)
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	e.reconcile()
	if !e.gone() {
		t.Fatal("a sale that never went live waited before its teardown")
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonCleanedUp, "Redis keys deleted")
	for _, ev := range e.seen {
		if strings.Contains(ev, "Draining before teardown") {
			t.Fatalf("a sale that never went live drained: %s", ev)
		}
	}
}

// stopPodsOfDeleted plays the kubelet for a deleted sale: once the
// operator deleted the Deployments, the in-process data plane stops (the
// seckill pods' buyers are gone, the worker stops) and the pod goes.
func (e *env) stopPodsOfDeleted(pod *corev1.Pod, stops ...func()) {
	e.t.Helper()
	for _, c := range []string{controllers.ComponentSeckill, controllers.ComponentWorker} {
		var d appsv1.Deployment
		err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-" + c}, &d)
		if !apierrors.IsNotFound(err) {
			return
		}
	}
	for _, stop := range stops {
		stop()
	}
	if err := e.k8s.Delete(e.ctx, pod, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
}

// handToKafka does what the relay does with the oldest entry of stream, and
// nothing more: the order goes to the topic, keyed by its user, and leaves
// the stream; no consumer reads it. It returns the order number.
func handToKafka(t *testing.T, e *env, stream string) string {
	t.Helper()
	msgs, err := e.rdb.XRangeN(e.ctx, stream, "-", "+", 1).Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("oldest entry of %s: %v %v", stream, msgs, err)
	}
	o, err := order.FromStream(msgs[0].Values)
	if err != nil {
		t.Fatal(err)
	}
	val, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer(e.brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: keys.Topic(o.Sale), Key: sarama.StringEncoder(o.User), Value: sarama.ByteEncoder(val)}); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.XDel(e.ctx, stream, msgs[0].ID).Err(); err != nil {
		t.Fatal(err)
	}
	return o.OrderNo
}

// eventText is the text of the first Event recorded with reason.
func (e *env) eventText(reason string) string {
	e.drainEvents()
	for _, ev := range e.seen {
		if strings.Contains(ev, " "+reason+" ") {
			return ev
		}
	}
	return ""
}

// TestDeleteOpenedBeforeItsStatusSaidSo: the operator opened the gate in
// Redis and died before its status patch recorded openedAt; buyers were
// admitted meanwhile. Deleted then, the sale still salvages its orders:
// whether buyers came is read from Redis too, not from status alone.
func TestDeleteOpenedBeforeItsStatusSaidSo(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	warmAndOpen(t, e, false) // Redis-only, and no worker runs
	shop := e.startSeckill()
	var accepted []string
	for _, u := range users("unrecorded", 6) {
		a := shop.buy(u, "1002")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", a.Status, a.Error)
		}
		accepted = append(accepted, a.OrderNo)
	}
	fs := e.get()
	base := fs.DeepCopy()
	fs.Status.OpenedAt = nil
	if err := e.k8s.Status().Patch(e.ctx, fs, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		if err := e.k8s.Delete(e.ctx, e.deployment(comp)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	e.reconcile()
	if !e.gone() {
		t.Fatal("the sale waited although no worker was left to drain it")
	}
	if stored, kept := e.checkNoneDropped(accepted, nil); stored != 6 || kept != 0 {
		t.Fatalf("stored %d, archived %d; want the 6 orders stored", stored, kept)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOrdersUndrained, "6 orders could not be drained", "6 stored")
}
