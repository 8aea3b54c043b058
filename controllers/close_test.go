package controllers_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
)

// TestDecidePhaseClosed: status.closedAt is the sale's effective end, also
// when it comes before the warm-up or the start: a closed sale never goes
// back to Pending or Warming, and settles paymentTimeout after the close.
func TestDecidePhaseClosed(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	sale := func(closedAt string) *v1alpha1.FlashSale {
		fs := &v1alpha1.FlashSale{Spec: v1alpha1.FlashSaleSpec{
			StartTime:      metav1.NewTime(at("2026-11-11T12:00:00Z")),
			EndTime:        metav1.NewTime(at("2026-11-11T12:30:00Z")),
			WarmupLead:     &metav1.Duration{Duration: 5 * time.Minute},
			PaymentTimeout: &metav1.Duration{Duration: 15 * time.Minute},
			Closed:         closedAt != "",
		}}
		if closedAt != "" {
			fs.Status.ClosedAt = &metav1.Time{Time: at(closedAt)}
		}
		return fs
	}
	// opened is the sale as status shows it once its gate opened.
	opened := func(fs *v1alpha1.FlashSale) *v1alpha1.FlashSale {
		fs.Status.OpenedAt = &fs.Spec.StartTime
		return fs
	}
	cases := []struct {
		name, closedAt string
		obs            controllers.Observed
		now            string
		phase          v1alpha1.Phase
		next           string
	}{
		{"active, not closed", "", controllers.Observed{Live: true}, "2026-11-11T12:10:00Z", v1alpha1.PhaseActive, "2026-11-11T12:30:00Z"},
		{"closed mid-sale", "2026-11-11T12:10:00Z", controllers.Observed{Live: true}, "2026-11-11T12:10:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:25:00Z"},
		{"closed mid-sale, just before settling", "2026-11-11T12:10:00Z", controllers.Observed{Live: true}, "2026-11-11T12:24:59Z", v1alpha1.PhaseDraining, "2026-11-11T12:25:00Z"},
		{"closed mid-sale, settling", "2026-11-11T12:10:00Z", controllers.Observed{Live: true}, "2026-11-11T12:25:00Z", v1alpha1.PhaseDraining, ""},
		{"closed after its end changes nothing", "2026-11-11T12:40:00Z", controllers.Observed{Live: true}, "2026-11-11T12:29:00Z", v1alpha1.PhaseActive, "2026-11-11T12:30:00Z"},
		// Never opened: no buyer was admitted, so nothing awaits payment and
		// the sale settles at the close, not paymentTimeout after it.
		{"closed while Pending", "2026-11-11T11:00:00Z", controllers.Observed{}, "2026-11-11T11:00:00Z", v1alpha1.PhaseDraining, ""},
		{"closed while Pending, later, before its warm-up", "2026-11-11T11:00:00Z", controllers.Observed{}, "2026-11-11T11:56:00Z", v1alpha1.PhaseDraining, ""},
		{"closed while Pending, torn down", "2026-11-11T11:00:00Z", controllers.Observed{TornDown: true}, "2026-11-11T11:00:00Z", v1alpha1.PhaseEnded, ""},
		{"closed while Warming", "2026-11-11T11:57:00Z", controllers.Observed{}, "2026-11-11T11:57:00Z", v1alpha1.PhaseDraining, ""},
		{"closed while Warming, a minute later", "2026-11-11T11:57:00Z", controllers.Observed{}, "2026-11-11T11:58:00Z", v1alpha1.PhaseDraining, ""},
		{"closed past the start, gate never opened", "2026-11-11T12:10:00Z", controllers.Observed{}, "2026-11-11T12:10:00Z", v1alpha1.PhaseDraining, ""},
		{"gate never opened, not closed: the payment window stays", "", controllers.Observed{}, "2026-11-11T12:30:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:45:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := sale(tc.closedAt)
			if tc.obs.Live {
				fs = opened(fs)
			}
			d := controllers.DecidePhase(fs, tc.obs, at(tc.now))
			var next time.Time
			if tc.next != "" {
				next = at(tc.next)
			}
			if d.Phase != tc.phase || !d.Next.Equal(next) {
				t.Fatalf("DecidePhase at %s = %s (next %s), want %s (next %s)", tc.now, d.Phase, d.Next, tc.phase, next)
			}
		})
	}
}

func (e *env) close() {
	e.t.Helper()
	fs := e.get()
	fs.Spec.Closed = true
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) wantClosedAt(want time.Time) {
	e.t.Helper()
	if c := e.get().Status.ClosedAt; c == nil || !c.Time.Equal(want) {
		e.t.Fatalf("status.closedAt = %v, want %s", c, want)
	}
}

// TestCloseActiveSale: spec.closed on a live sale closes purchases at once
// (410 ENDED through the Redis close switch), drains, and settles and ends
// paymentTimeout after the close, long before endTime, with the final audit.
func TestCloseActiveSale(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	key := e.ns + "/" + saleName
	e.reconcile()
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.markReady()
	e.eventually("the go-live gate", func() bool { return e.get().Status.OpenedAt != nil })
	stopWorker := e.startWorker()
	shop := e.startSeckill()
	e.clk.SetTime(e.t0.Add(10 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseActive)
	var orders []string
	for _, u := range users("buyer", 3) {
		a := shop.buy(u, "1001")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase by %s: %d %s", u, a.Status, a.Error)
		}
		orders = append(orders, a.OrderNo)
	}
	e.eventually("3 orders stored", func() bool { fs := e.get(); return fs.Status.Sold == 3 && fs.Status.QueueLag == 0 })
	if a := shop.pay(orders[0]); a.Status != http.StatusOK {
		t.Fatalf("pay: %d %s", a.Status, a.Error)
	}

	hash := e.deployment(controllers.ComponentSeckill).Spec.Template.Annotations["flashsale.dev/config-hash"]
	closeAt := e.t0.Add(12 * time.Minute)
	e.clk.SetTime(closeAt)
	e.close()
	res := e.reconcile()
	// The close reaches the pods through Redis, as a pause does: rolling
	// them now would cost the result polls and payments of the drain.
	if got := e.deployment(controllers.ComponentSeckill).Spec.Template.Annotations["flashsale.dev/config-hash"]; got != hash || hash == "" {
		t.Fatalf("pod config hash %q → %q on close: the pods roll", hash, got)
	}
	e.wantClosedAt(closeAt)
	e.wantPhase(v1alpha1.PhaseDraining)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonClosed, "Closed early by spec.closed at "+closeAt.UTC().Format(time.RFC3339))
	if sw, err := switches.Get(e.ctx, e.rdb, key); err != nil || !sw.Closed {
		t.Fatalf("switches %+v, %v after the close, want closed", sw, err)
	}
	shop.waitAnswer(t, "late-buyer", http.StatusGone, "ENDED")
	if res.RequeueAfter <= 0 || res.RequeueAfter > controllers.DefaultRefreshInterval {
		t.Fatalf("RequeueAfter %s while draining", res.RequeueAfter)
	}
	// closedAt is set once: a later reconcile does not move it.
	e.clk.SetTime(closeAt.Add(30 * time.Second))
	e.reconcile()
	e.wantClosedAt(closeAt)
	e.wantPhase(v1alpha1.PhaseDraining)

	// paymentTimeout (1m) after the close, not after endTime (t0+20m).
	e.clk.SetTime(closeAt.Add(time.Minute + time.Second))
	if p := e.rollbackOnce(); p.Cancelled != 2 {
		t.Fatalf("rollback cancelled %d, want the 2 unpaid", p.Cancelled)
	}
	stopWorker()
	e.eventually("Ended", func() bool { return e.get().Status.Phase == v1alpha1.PhaseEnded })
	fs := e.get()
	if fs.Status.Audit == nil || !fs.Status.Audit.Conserved || fs.Status.Audit.Initial != 120 {
		t.Fatalf("final audit %+v, want conserved over 120 units", fs.Status.Audit)
	}
	if fs.Status.Paid != 1 || fs.Status.Cancelled != 2 {
		t.Fatalf("paid %d cancelled %d, want 1 and 2", fs.Status.Paid, fs.Status.Cancelled)
	}
	e.wantCond(v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	if n := e.rdb.Exists(e.ctx, keys.ForSKU(key, "1001").Stock).Val(); n != 0 {
		t.Fatal("stock key left after the close settled")
	}
}

// TestClosePendingSale: a sale closed before its warm-up ends at once; it
// is never warmed, not even when its warm-up time comes.
func TestClosePendingSale(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	e.reconcile()
	e.wantPhase(v1alpha1.PhasePending)
	closeAt := e.t0.Add(time.Minute)
	e.clk.SetTime(closeAt)
	e.close()
	if res := e.reconcile(); res.RequeueAfter != 0 {
		t.Fatalf("RequeueAfter %s once Ended", res.RequeueAfter)
	}
	e.wantClosedAt(closeAt)
	e.wantPhase(v1alpha1.PhaseEnded)
	e.wantCond(v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonPhaseChanged, "Pending → Ended")
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonClosed, "Closed early")

	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	e.wantNothingWarmed()
}

// TestCloseWarmingSale: a sale closed while it warms (its gate never
// opened) settles at the close, not paymentTimeout after it: no buyer was
// admitted, so no order can await payment, and its pods are not kept
// running for nothing. What the warm-up created is torn down, and the gate
// does not open after the close although everything is warmed.
func TestCloseWarmingSale(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	key := e.ns + "/" + saleName
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)
	e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
	if sw, err := switches.Get(e.ctx, e.rdb, key); err != nil || !sw.Held {
		t.Fatalf("switches %+v, %v while warming, want held", sw, err)
	}
	closeAt := e.t0.Add(6 * time.Minute)
	e.clk.SetTime(closeAt)
	e.close()
	// The clock stays at the close: time does not move it to Ended.
	for range 3 {
		e.reconcile()
	}
	e.wantClosedAt(closeAt)
	e.wantPhase(v1alpha1.PhaseEnded)
	e.wantCond(v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	fs := e.get()
	if fs.Status.OpenedAt != nil {
		t.Fatalf("status.openedAt %s: the gate of a closed sale opened", fs.Status.OpenedAt)
	}
	for _, ev := range e.seen {
		if strings.Contains(ev, " "+v1alpha1.ReasonLive+" ") {
			t.Fatalf("a closed sale went live: %s", ev)
		}
	}
	e.wantNothingWarmed()
}

// wantNothingWarmed: no key of the sale in Redis and no workload.
func (e *env) wantNothingWarmed() {
	e.t.Helper()
	for _, p := range keys.Patterns(e.ns + "/" + saleName) {
		if ks := e.rdb.Keys(e.ctx, p).Val(); len(ks) > 0 {
			e.t.Fatalf("Redis keys of the sale: %v", ks)
		}
	}
	var deps appsv1.DeploymentList
	if err := e.k8s.List(e.ctx, &deps, client.InNamespace(e.ns)); err != nil || len(deps.Items) != 0 {
		e.t.Fatalf("Deployments of the sale: %d (err %v)", len(deps.Items), err)
	}
}
