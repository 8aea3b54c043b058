package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/runtime/notify"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// hookReceiver is a shop's webhook endpoint: a real HTTP server whose paths
// are separate endpoints. Each call's signature is verified with the
// path's secret; an endpoint answers 500 while failing or for its first
// failFirst calls, and it dedupes the events it accepts by id, as a
// receiver of at-least-once deliveries does.
type hookReceiver struct {
	t       *testing.T
	url     string
	secrets map[string][]byte

	mu        sync.Mutex
	failing   map[string]bool
	failFirst map[string]int
	calls     map[string][]string                  // path → event ids, one per call
	accepted  map[string]map[string]int            // path → id → 2xx answers
	events    map[string]map[string]map[string]any // path → id → the CloudEvent
	bad       []string                             // what was wrong with a call
}

func (e *env) startReceiver(secrets map[string][]byte) *hookReceiver {
	rv := &hookReceiver{t: e.t, secrets: secrets, failing: map[string]bool{}, failFirst: map[string]int{},
		calls: map[string][]string{}, accepted: map[string]map[string]int{}, events: map[string]map[string]map[string]any{}}
	srv := httptest.NewServer(rv)
	e.t.Cleanup(srv.Close)
	rv.url = srv.URL
	return rv
}

func (rv *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/slow" {
		// A receiver that takes 30 s to answer. The body is read first: the
		// server notices a client that gave up only from then on.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(30 * time.Second):
		case <-r.Context().Done():
		}
		return
	}
	body, _ := io.ReadAll(r.Body)
	var ce map[string]any
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if err := notify.Verify(rv.secrets[p], r.Header, body, time.Now(), 0); err != nil {
		rv.bad = append(rv.bad, p+": "+err.Error())
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/cloudevents+json" {
		rv.bad = append(rv.bad, p+": Content-Type "+ct)
	}
	if err := json.Unmarshal(body, &ce); err != nil || ce["id"] != r.Header.Get(notify.HeaderID) {
		rv.bad = append(rv.bad, p+": body "+string(body)+" does not carry the webhook-id")
	}
	id := r.Header.Get(notify.HeaderID)
	rv.calls[p] = append(rv.calls[p], id)
	if rv.failing[p] || rv.failFirst[p] > 0 {
		rv.failFirst[p]--
		http.Error(w, "shop backend down", http.StatusInternalServerError)
		return
	}
	if rv.accepted[p] == nil {
		rv.accepted[p], rv.events[p] = map[string]int{}, map[string]map[string]any{}
	}
	rv.accepted[p][id]++
	if _, dup := rv.events[p][id]; !dup {
		rv.events[p][id] = ce
	}
}

func (rv *hookReceiver) setFailing(path string, on bool) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.failing[path] = on
}

// types lists the CloudEvents types an endpoint accepted, after dedup by id.
func (rv *hookReceiver) types(path string) []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	var out []string
	for _, ce := range rv.events[path] {
		out = append(out, ce["type"].(string))
	}
	sort.Strings(out)
	return out
}

// event is the accepted event of that type at path.
func (rv *hookReceiver) event(path, typ string) map[string]any {
	rv.t.Helper()
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, ce := range rv.events[path] {
		if ce["type"] == typ {
			return ce
		}
	}
	rv.t.Fatalf("%s accepted no %s event", path, typ)
	return nil
}

// startNotifier runs a real Dispatcher for the env's reconciler, with a
// backoff short enough for a test.
func (e *env) startNotifier() {
	e.r.Metrics = controllers.NewMetrics()
	d := notify.NewDispatcher(notify.Options{BaseDelay: 50 * time.Millisecond, MaxDelay: 400 * time.Millisecond,
		OnAttempt: e.r.NotificationAttempted})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Start(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
	e.r.Notifier = d
}

func (e *env) hookSecret(data map[string]string) {
	e.t.Helper()
	if err := e.k8s.Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks", Namespace: e.ns}, StringData: data}); err != nil {
		e.t.Fatal(err)
	}
}

func hook(name, url, key string, events ...v1alpha1.NotificationEvent) v1alpha1.Webhook {
	return v1alpha1.Webhook{Name: name, URL: url, Events: events, SecretRef: corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "hooks"}, Key: key}}
}

// notifications reads flashsale_operator_notifications_total of the sale
// for one webhook and result, and the pending gauge.
func (e *env) notifications(webhook, result string) (attempts, pending float64) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.r.Metrics.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["namespace"] != e.ns {
				continue
			}
			switch mf.GetName() {
			case controllers.MetricNotifications:
				if l["webhook"] == webhook && l["result"] == result {
					attempts = m.GetCounter().GetValue()
				}
			case controllers.MetricNotificationsPending:
				pending = m.GetGauge().GetValue()
			}
		}
	}
	return attempts, pending
}

func (e *env) outboxEmpty() bool {
	n := e.get().Status.Notifications
	return n != nil && len(n.Outbox) == 0
}

// TestNotificationsThroughASale: a sale with two webhooks (the shop's,
// receiving everything, down at first; the stock team's, only SoldOut,
// failing its first two calls) goes live, sells one SKU out, is paused and
// resumed and ends. Each endpoint gets its events, signed, in CloudEvents
// structured mode, each accepted exactly once although the failed calls
// were retried with the same id; while the shop's endpoint fails,
// NotificationsDelivered is False naming it and the metric counts the
// failures; in the end the condition is True and the outbox empty. The
// Ended event carries the final figures (one order paid, one cancelled).
func TestNotificationsThroughASale(t *testing.T) {
	e := newEnv(t, envOpts{})
	rv := e.startReceiver(map[string][]byte{"/all": []byte("shop-secret"), "/soldout": []byte("stock-secret")})
	rv.setFailing("/all", true)
	rv.failFirst["/soldout"] = 2
	e.hookSecret(map[string]string{"shop": "shop-secret\n", "stock": "stock-secret"})
	e.startNotifier()
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.SKUs[1] = v1alpha1.SKU{ID: "1002", Stock: 2, Price: "19.90", PerUserLimit: 1}
		fs.Spec.Notifications = &v1alpha1.Notifications{Webhooks: []v1alpha1.Webhook{
			hook("shop", rv.url+"/all", "shop"),
			hook("stock", rv.url+"/soldout", "stock", v1alpha1.EventSoldOut),
		}}
	})
	e.reconcile()
	e.wantCond(v1alpha1.ConditionNotificationsDelivered, metav1.ConditionTrue, v1alpha1.ReasonDelivered)

	// Live: the shop's endpoint answers 500, so the event stays in the
	// outbox and the condition says who fails and why.
	warmAndOpen(t, e, false)
	stopWorker := e.startWorker()
	e.eventually("NotificationsDelivered False while the shop's endpoint fails", func() bool {
		c := e.cond(v1alpha1.ConditionNotificationsDelivered)
		return c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonDeliveryFailing
	})
	if c := e.cond(v1alpha1.ConditionNotificationsDelivered); !strings.Contains(c.Message, "webhook shop") || !strings.Contains(c.Message, "HTTP 500 shop backend down") {
		t.Fatalf("NotificationsDelivered says %q, want the webhook and its last error", c.Message)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonDeliveryFailing, "webhook shop")
	if failed, pending := e.notifications("shop", "failed"); failed < 2 || pending != 1 {
		t.Fatalf("metrics while failing: %v failed attempts, %v pending, want >= 2 and 1", failed, pending)
	}
	if ob := e.get().Status.Notifications.Outbox; len(ob) != 1 || ob[0].Type != v1alpha1.EventLive || !slices.Equal(ob[0].Pending, []string{"shop"}) {
		t.Fatalf("outbox %+v, want the Live event waiting for the shop", ob)
	}
	rv.setFailing("/all", false)
	e.eventually("the Live event delivered", e.outboxEmpty)
	e.wantCond(v1alpha1.ConditionNotificationsDelivered, metav1.ConditionTrue, v1alpha1.ReasonDelivered)

	// SKU 1002 sells out: both endpoints want it.
	shop := e.startSeckill()
	var orders []string
	for _, u := range users("buyer", 2) {
		a := shop.buy(u, "1002")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase by %s: %d %s", u, a.Status, a.Error)
		}
		orders = append(orders, a.OrderNo)
	}
	e.eventually("1002 sold out and notified", func() bool {
		st := e.get().Status
		return len(st.SKUs) == 2 && st.SKUs[1].SoldOut && st.QueueLag == 0 && e.outboxEmpty()
	})

	// Paused, resumed.
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.Paused = true })
	e.wantPhase(v1alpha1.PhasePaused)
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.Paused = false })
	e.wantPhase(v1alpha1.PhaseActive)
	e.eventually("pause and resume notified", e.outboxEmpty)

	// The end: one order paid, the other cancelled, the sale settles.
	if a := shop.pay(orders[0]); a.Status != http.StatusOK {
		t.Fatalf("pay %s: %d %s", orders[0], a.Status, a.Error)
	}
	e.clk.SetTime(e.t0.Add(20 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	e.clk.SetTime(e.t0.Add(21*time.Minute + time.Second))
	if p := e.rollbackOnce(); p.Cancelled != 1 {
		t.Fatalf("rollback cancelled %d, want the unpaid order", p.Cancelled)
	}
	stopWorker()
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	e.eventually("the Ended event delivered", e.outboxEmpty)
	e.wantCond(v1alpha1.ConditionNotificationsDelivered, metav1.ConditionTrue, v1alpha1.ReasonDelivered)

	checkDeliveries(t, e, rv)
}

// checkDeliveries asserts what TestNotificationsThroughASale's receiver got.
func checkDeliveries(t *testing.T, e *env, rv *hookReceiver) {
	t.Helper()
	rv.mu.Lock()
	if len(rv.bad) > 0 {
		t.Errorf("bad deliveries: %v", rv.bad)
	}
	for p, ids := range rv.accepted {
		for id, n := range ids {
			if n != 1 {
				t.Errorf("%s accepted event %s %d times, want once", p, id, n)
			}
		}
	}
	live := rv.calls["/all"][0]
	if n := strings.Count(strings.Join(rv.calls["/all"], " "), live); n < 3 {
		t.Errorf("the Live event was sent %d times, want the failed calls retried with its id", n)
	}
	if n := len(rv.calls["/soldout"]); n != 3 {
		t.Errorf("the stock endpoint got %d calls, want 2 failed and 1 accepted", n)
	}
	rv.mu.Unlock()

	if got, want := rv.types("/all"), []string{"dev.flashsale.ended", "dev.flashsale.live", "dev.flashsale.paused",
		"dev.flashsale.resumed", "dev.flashsale.soldout"}; !slices.Equal(got, want) {
		t.Errorf("the shop's endpoint accepted %v, want %v", got, want)
	}
	if got := rv.types("/soldout"); !slices.Equal(got, []string{"dev.flashsale.soldout"}) {
		t.Errorf("the stock endpoint (SoldOut only) accepted %v", got)
	}
	so := rv.event("/soldout", "dev.flashsale.soldout")
	src := "/apis/flashsale.dev/v1alpha1/namespaces/" + e.ns + "/flashsales/" + saleName
	if so["specversion"] != "1.0" || so["source"] != src || so["subject"] != "1002" || so["datacontenttype"] != "application/json" {
		t.Errorf("SoldOut event %v: want specversion 1.0, source %s, subject 1002, JSON data", so, src)
	}
	if d, _ := so["data"].(map[string]any); d["id"] != "1002" || d["stock"] != 2.0 || d["sold"] != 2.0 || d["remaining"] != 0.0 {
		t.Errorf("SoldOut data %v, want SKU 1002's 2 of 2 sold", so["data"])
	}

	// The Ended event carries the final figures, per SKU, and the audit.
	var ended struct {
		Data struct {
			Phase                        v1alpha1.Phase
			Stock, Sold, Paid, Cancelled int64
			SKUs                         []struct{ ID string }
			Audit                        *v1alpha1.AuditStatus
		}
	}
	b, _ := json.Marshal(rv.event("/all", "dev.flashsale.ended"))
	if err := json.Unmarshal(b, &ended); err != nil {
		t.Fatal(err)
	}
	d := ended.Data
	if d.Phase != v1alpha1.PhaseEnded || d.Stock != 102 || d.Sold != 1 || d.Paid != 1 || d.Cancelled != 1 || len(d.SKUs) != 2 ||
		d.Audit == nil || !d.Audit.Conserved || d.Audit.Initial != 102 {
		t.Errorf("Ended data %s, want the final figures: 102 units, 1 sold and paid, 1 cancelled, both SKUs, a conserved audit", b)
	}

	n := e.get().Status.Notifications
	if n.Delivered != 5 || n.Dropped != 0 {
		t.Errorf("status.notifications %+v, want 5 delivered, none dropped", *n)
	}
	if failed, pending := e.notifications("shop", "failed"); failed < 2 || pending != 0 {
		t.Errorf("shop: %v failed attempts, %v pending at the end", failed, pending)
	}
	if ok, _ := e.notifications("shop", "delivered"); ok != 5 {
		t.Errorf("shop: %v delivered attempts, want 5", ok)
	}
	if failed, _ := e.notifications("stock", "failed"); failed != 2 {
		t.Errorf("stock: %v failed attempts, want 2", failed)
	}
}

// TestNotificationsTroubles: events wait in the outbox while a webhook's
// Secret is missing (NotificationsDelivered False naming it, the sale going
// on) and go out once it exists; a receiver that takes 30 s to answer does
// not slow a reconcile; an audit that finds orders stranded in a dead-letter
// stream sends NotConserved and OrdersStranded; a webhook taken out of the
// spec leaves the outbox.
func TestNotificationsTroubles(t *testing.T) {
	e := newEnv(t, envOpts{})
	rv := e.startReceiver(map[string][]byte{"/ops": []byte("ops-secret")})
	e.startNotifier()
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Notifications = &v1alpha1.Notifications{Webhooks: []v1alpha1.Webhook{
			hook("ops", rv.url+"/ops", "ops", v1alpha1.EventLive, v1alpha1.EventNotConserved, v1alpha1.EventOrdersStranded),
			hook("slow", rv.url+"/slow", "slow"),
		}}
	})
	warmAndOpen(t, e, false)
	e.wantCond(v1alpha1.ConditionNotificationsDelivered, metav1.ConditionFalse, v1alpha1.ReasonSecretMissing)
	want := "spec.notifications.webhooks[ops].secretRef: Secret " + e.ns + "/hooks not found"
	if c := e.cond(v1alpha1.ConditionNotificationsDelivered); !strings.Contains(c.Message, want) {
		t.Fatalf("NotificationsDelivered says %q, want %q", c.Message, want)
	}
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonLive)
	if ob := e.get().Status.Notifications.Outbox; len(ob) != 1 || !slices.Equal(ob[0].Pending, []string{"ops", "slow"}) {
		t.Fatalf("outbox %+v, want the Live event waiting for both webhooks", ob)
	}

	// The Secret appears: ops gets the Live event; the slow endpoint holds
	// its POSTs, and reconciles do not wait for it.
	e.hookSecret(map[string]string{"ops": "ops-secret", "slow": "slow-secret"})
	for range 5 {
		start := time.Now()
		e.reconcile()
		if took := time.Since(start); took > time.Second {
			t.Fatalf("a reconcile took %s with a webhook that answers in 30 s", took)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.eventually("the Live event delivered to ops", func() bool {
		ob := e.get().Status.Notifications.Outbox
		return len(ob) == 1 && slices.Equal(ob[0].Pending, []string{"slow"})
	})

	// MySQL refuses a buyer's order: it waits only in the dead-letter
	// stream, and the next audit finds the stock not conserved.
	if _, err := e.db.ExecContext(e.ctx, refuseRows); err != nil {
		t.Fatal(err)
	}
	stopWorker := e.startWorker()
	defer stopWorker()
	if a := e.startSeckill().buy("refused-1", "1001"); a.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", a.Status, a.Error)
	}
	dlq := keys.ForSKU(e.ns+"/"+saleName, "1001").DeadLetters
	e.eventually("the order dead-lettered", func() bool {
		return e.get().Status.QueueLag == 0 && e.rdb.XLen(e.ctx, dlq).Val() == 1
	})
	e.clk.Step(31 * time.Second)
	e.reconcile()
	e.wantCond(v1alpha1.ConditionOrdersStranded, metav1.ConditionTrue, v1alpha1.ReasonOrdersStranded)
	e.wantCond(v1alpha1.ConditionStockConsistent, metav1.ConditionFalse, v1alpha1.ReasonNotConserved)
	e.eventually("NotConserved and OrdersStranded delivered to ops", func() bool {
		return slices.Equal(rv.types("/ops"), []string{"dev.flashsale.live", "dev.flashsale.notconserved", "dev.flashsale.ordersstranded"})
	})
	var stranded struct {
		Data struct {
			Message string
			Audit   *v1alpha1.AuditStatus
		}
	}
	b, _ := json.Marshal(rv.event("/ops", "dev.flashsale.ordersstranded"))
	if err := json.Unmarshal(b, &stranded); err != nil || stranded.Data.Audit == nil || stranded.Data.Audit.Stranded != 1 || stranded.Data.Message == "" {
		t.Fatalf("OrdersStranded event %s, want the audit's 1 stranded order and the condition's message", b)
	}

	// The slow webhook leaves the spec: nothing waits for it any more.
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.Notifications.Webhooks = fs.Spec.Notifications.Webhooks[:1] })
	e.eventually("the outbox empty", e.outboxEmpty)
	e.wantCond(v1alpha1.ConditionNotificationsDelivered, metav1.ConditionTrue, v1alpha1.ReasonDelivered)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if len(rv.bad) > 0 {
		t.Errorf("bad deliveries: %v", rv.bad)
	}
}

// TestNotificationsAfterRestart: an operator that starts with an event
// left in a sale's outbox (its predecessor stopped before the receiver
// confirmed it) sends it again with the same id; each delivery attempt
// brings the sale back to the controller at once, so the outbox empties
// within a moment of the delivery, not at the next periodic look (15 s).
func TestNotificationsAfterRestart(t *testing.T) {
	e := newEnv(t, envOpts{})
	rv := e.startReceiver(map[string][]byte{"/all": []byte("shop-secret")})
	rv.failFirst["/all"] = 1
	e.hookSecret(map[string]string{"shop": "shop-secret"})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Notifications = &v1alpha1.Notifications{Webhooks: []v1alpha1.Webhook{hook("shop", rv.url+"/all", "shop")}}
	})
	e.reconcile() // Pending: no milestone yet
	fs := e.get()
	id := string(fs.UID) + ".live"
	fs.Status.Notifications = &v1alpha1.NotificationsStatus{Outbox: []v1alpha1.OutboxEvent{{
		ID: id, Type: v1alpha1.EventLive, Time: metav1.NewTime(e.t0), Data: `{"phase":"Warming"}`, Pending: []string{"shop"}}}}
	if err := e.k8s.Status().Update(e.ctx, fs); err != nil {
		t.Fatal(err)
	}

	// The operator as the manager command wires it, watching this namespace.
	cfg, _ := testutil.Kube(t, cli.Scheme())
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: cli.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache:      cache.Options{DefaultNamespaces: map[string]cache.Config{e.ns: {}}},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := controllers.NewFlashSaleReconciler(mgr)
	r.Image, r.DialTimeout = "flashsale:test", time.Second
	d := notify.NewDispatcher(notify.Options{BaseDelay: 100 * time.Millisecond, OnAttempt: r.NotificationAttempted})
	if err := mgr.Add(d); err != nil {
		t.Fatal(err)
	}
	r.Notifier = d
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	start := time.Now()
	for !e.outboxEmpty() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("outbox %+v 5 s after the operator started", e.get().Status.Notifications)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("outbox empty %s after the operator started", time.Since(start).Round(time.Millisecond))
	if n := e.get().Status.Notifications.Delivered; n != 1 {
		t.Fatalf("status.notifications.delivered = %d, want 1", n)
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if !slices.Equal(rv.calls["/all"], []string{id, id}) || rv.accepted["/all"][id] != 1 || len(rv.bad) > 0 {
		t.Fatalf("receiver got %v, accepted %v (bad: %v), want the event twice with its id, accepted once", rv.calls["/all"], rv.accepted["/all"], rv.bad)
	}
}

// TestNotificationsOutboxCap: with 50 events waiting (a webhook down for
// long), the next milestone drops the oldest: the outbox stays at 50, the
// drop is counted and told by a Warning Event. Without a Notifier nothing
// is sent, and the outbox only fills.
func TestNotificationsOutboxCap(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Notifications = &v1alpha1.Notifications{Webhooks: []v1alpha1.Webhook{hook("shop", "http://127.0.0.1:9/down", "shop")}}
	})
	e.reconcile()
	fs := e.get()
	var old []v1alpha1.OutboxEvent
	for i := range 50 {
		old = append(old, v1alpha1.OutboxEvent{ID: fmt.Sprintf("%s.soldout.old-%d.1.0", fs.UID, i), Type: v1alpha1.EventSoldOut,
			Time: metav1.NewTime(e.t0), Subject: fmt.Sprintf("old-%d", i), Data: "{}", Pending: []string{"shop"}})
	}
	fs.Status.Notifications = &v1alpha1.NotificationsStatus{Outbox: old}
	if err := e.k8s.Status().Update(e.ctx, fs); err != nil {
		t.Fatal(err)
	}
	warmAndOpen(t, e, false)
	n := e.get().Status.Notifications
	if len(n.Outbox) != 50 || n.Dropped != 1 || n.Outbox[0].ID != old[1].ID || n.Outbox[49].Type != v1alpha1.EventLive {
		t.Fatalf("outbox of %d (first %s, last %s), dropped %d; want 50 with the oldest dropped for the Live event",
			len(n.Outbox), n.Outbox[0].ID, n.Outbox[len(n.Outbox)-1].Type, n.Dropped)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonDeliveryFailing, "Outbox full (50 events): dropped event "+old[0].ID)
}

// calls counts the POSTs an endpoint got.
func (rv *hookReceiver) callCount(path string) int {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return len(rv.calls[path])
}

// failingShop is a live sale whose shop webhook has failed twice with the
// Live event waiting for it.
func failingShop(t *testing.T, hooks func(url string) []v1alpha1.Webhook) (*env, *hookReceiver) {
	e := newEnv(t, envOpts{})
	rv := e.startReceiver(map[string][]byte{"/shop": []byte("s"), "/ops": []byte("o")})
	rv.setFailing("/shop", true)
	e.hookSecret(map[string]string{"shop": "s", "ops": "o"})
	e.startNotifier()
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Notifications = &v1alpha1.Notifications{Webhooks: hooks(rv.url)}
	})
	warmAndOpen(t, e, false)
	e.eventually("the shop's endpoint failing", func() bool {
		failed, pending := e.notifications("shop", "failed")
		return failed >= 2 && pending == 1
	})
	return e, rv
}

// wantNotCalled fails unless path gets no POST for a while.
func wantNotCalled(t *testing.T, e *env, rv *hookReceiver, path string) {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // a POST that was on its way lands
	n0 := rv.callCount(path)
	failed0, _ := e.notifications("shop", "failed")
	time.Sleep(1500 * time.Millisecond) // the backoff is at most 400 ms
	if n := rv.callCount(path) - n0; n > 0 {
		t.Errorf("%s was called %d times after it left the spec", path, n)
	}
	if failed, _ := e.notifications("shop", "failed"); failed != failed0 {
		t.Errorf("%v more failed attempts counted after the webhook left the spec", failed-failed0)
	}
}

// TestNotificationsRemoved: an SRE silences a failing webhook by removing
// spec.notifications. The pending gauge goes (no stale value for the
// alert), and the webhook is called no more: no failure keeps being
// counted towards FlashSaleNotificationsFailing.
func TestNotificationsRemoved(t *testing.T) {
	e, rv := failingShop(t, func(url string) []v1alpha1.Webhook { return []v1alpha1.Webhook{hook("shop", url+"/shop", "shop")} })
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.Notifications = nil })
	if n := e.get().Status.Notifications; n != nil {
		t.Errorf("status.notifications %+v after spec.notifications was removed", *n)
	}
	if _, pending := e.notifications("shop", "failed"); pending != 0 {
		t.Errorf("pending gauge %v after spec.notifications was removed, want 0 (or no series)", pending)
	}
	wantNotCalled(t, e, rv, "/shop")
	e.reconcile()
	if _, pending := e.notifications("shop", "failed"); pending != 0 {
		t.Errorf("pending gauge %v a reconcile later, want 0 (or no series)", pending)
	}
}

// TestNotificationsWebhookRemoved: taking only the failing webhook out of
// the spec empties the outbox (the other one got the event), stops the
// calls to it and its failures, and NotificationsDelivered turns True.
func TestNotificationsWebhookRemoved(t *testing.T) {
	e, rv := failingShop(t, func(url string) []v1alpha1.Webhook {
		return []v1alpha1.Webhook{hook("shop", url+"/shop", "shop"), hook("ops", url+"/ops", "ops")}
	})
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.Notifications.Webhooks = fs.Spec.Notifications.Webhooks[1:] })
	if !e.outboxEmpty() {
		t.Errorf("outbox %+v, want empty: ops got the event, shop left", e.get().Status.Notifications.Outbox)
	}
	if _, pending := e.notifications("shop", "failed"); pending != 0 {
		t.Errorf("pending gauge %v, want 0", pending)
	}
	wantNotCalled(t, e, rv, "/shop")
	e.reconcile()
	e.wantCond(v1alpha1.ConditionNotificationsDelivered, metav1.ConditionTrue, v1alpha1.ReasonDelivered)
}

// TestNotificationsSaleDeleted: a deleted sale sends no Ended event; the
// events still waiting are dropped, named in a Warning Event, the webhook
// is called no more, and the sale's notification series stay gone.
func TestNotificationsSaleDeleted(t *testing.T) {
	e, rv := failingShop(t, func(url string) []v1alpha1.Webhook { return []v1alpha1.Webhook{hook("shop", url+"/shop", "shop")} })
	id := string(e.get().UID) + ".live"
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	for i := 0; !e.gone(); i++ {
		if i == 10 {
			t.Fatal("the sale is still there after 10 reconciles")
		}
		e.reconcile()
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonDeliveryFailing, "Sale deleted: 1 undelivered events dropped: "+id)
	wantNotCalled(t, e, rv, "/shop")
	if failed, pending := e.notifications("shop", "failed"); failed != 0 || pending != 0 {
		t.Errorf("the deleted sale's series came back: %v failed, %v pending", failed, pending)
	}
}

// staleReader reads the sale as a lagging cache would: the copy it was
// given, older than the stored one.
type staleReader struct {
	client.Client
	fs *v1alpha1.FlashSale
}

func (c staleReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if fs, ok := obj.(*v1alpha1.FlashSale); ok {
		c.fs.DeepCopyInto(fs)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestNotificationsStaleRead: a reconcile that reads the sale from a cache
// behind the stored status (a delivery's nudge arriving before the cache
// shows the reconcile that confirmed it) writes nothing, is no reconcile
// error, and looks again within a moment.
func TestNotificationsStaleRead(t *testing.T) {
	e := newEnv(t, envOpts{})
	rv := e.startReceiver(map[string][]byte{"/shop": []byte("s")})
	rv.setFailing("/shop", true)
	e.hookSecret(map[string]string{"shop": "s"})
	e.startNotifier()
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Notifications = &v1alpha1.Notifications{Webhooks: []v1alpha1.Webhook{hook("shop", rv.url+"/shop", "shop")}}
	})
	warmAndOpen(t, e, false)
	stale := e.get() // the Live event waits
	rv.setFailing("/shop", false)
	e.eventually("the Live event delivered", func() bool { e.reconcile(); return e.outboxEmpty() })
	// Newer than the cache, too: events delivered since (as later
	// reconciles would count them).
	stored := e.get()
	stored.Status.Notifications.Delivered = 5
	if err := e.k8s.Status().Update(e.ctx, stored); err != nil {
		t.Fatal(err)
	}
	stored = e.get()

	direct := e.r.Client
	e.r.Client = staleReader{Client: direct, fs: stale}
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: e.ns, Name: saleName}})
	e.r.Client = direct
	if err != nil {
		t.Fatalf("a stale read is no reconcile error, got %v", err)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Errorf("RequeueAfter %s after a stale read, want a look again within a second", res.RequeueAfter)
	}
	if now := e.get(); now.ResourceVersion != stored.ResourceVersion || now.Status.Notifications.Delivered != 5 {
		t.Errorf("a reconcile from a stale read wrote the status: %+v, want the stored 5 delivered untouched", *now.Status.Notifications)
	}
	if n := e.reconcileErrors(); n != 0 {
		t.Errorf("%v reconcile errors counted for a stale read", n)
	}
}

// reconcileErrors sums flashsale_operator_reconcile_errors_total of the sale.
func (e *env) reconcileErrors() float64 {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.r.Metrics.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != controllers.MetricReconcileErrors {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
