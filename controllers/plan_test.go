package controllers_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// TestPlannedBeforeWarmup: long before the warm-up (nothing deployed yet)
// the Planned condition gives the SRE the plan's verdict on the sale's real
// Redis (standalone: one primary). A hot SKU over the per-shard budget is
// Planned False with the plan's words and one Warning Event; raising the
// stock past what MySQL stores in a minute adds a warning, told again;
// fixing the spec makes it True.
func TestPlannedBeforeWarmup(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.StartTime = metav1.NewTime(e.t0.Add(72 * time.Hour)) // three days ahead
		fs.Spec.EndTime = metav1.NewTime(e.t0.Add(73 * time.Hour))
		fs.Spec.Expected = &v1alpha1.Expected{Buyers: 1_000_000, PurchasesPerSecond: 60000,
			SKUs: []v1alpha1.ExpectedSKU{{ID: "1001", PurchasesPerSecond: 50000}}}
	})
	e.reconcile()
	e.wantPhase(v1alpha1.PhasePending)
	e.wantCond(v1alpha1.ConditionPlanned, metav1.ConditionFalse, v1alpha1.ReasonPlanDoesNotFit)
	msg := e.cond(v1alpha1.ConditionPlanned).Message
	want := "1 primary, 2 buckets: 60,000 purchases/s on one shard (1001#0, 1002#0), budget 10,000"
	if !strings.HasPrefix(msg, want) || !strings.Contains(msg, "pods: sale-seckill 2, sale-worker 1, sale-rollback 1") {
		t.Fatalf("Planned message %q, want it to start with %q and list the pods", msg, want)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonPlanDoesNotFit, want)

	// Another reconcile of the same spec is not news.
	n := e.countEvents(v1alpha1.ReasonPlanDoesNotFit)
	e.reconcile()
	if got := e.countEvents(v1alpha1.ReasonPlanDoesNotFit); got != n {
		t.Fatalf("%d PlanDoesNotFit Events after a reconcile of the same spec, want %d", got, n)
	}

	fs := e.get()
	fs.Spec.SKUs[1].Stock = 2_000_000
	update(e, fs)
	e.reconcile()
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonPlanDoesNotFit, "the last order waits 1m23.3s for MySQL: 1,000,000 orders arrive at 60,000/s")

	fs = e.get()
	fs.Spec.SKUs[1].Stock = 20
	fs.Spec.Expected = &v1alpha1.Expected{Buyers: 1000, PurchasesPerSecond: 5000}
	update(e, fs)
	e.reconcile()
	e.wantCond(v1alpha1.ConditionPlanned, metav1.ConditionTrue, v1alpha1.ReasonPlanFits)
	if msg := e.cond(v1alpha1.ConditionPlanned).Message; !strings.Contains(msg, "busiest of 1 primary: 5,000 purchases/s, budget 10,000") {
		t.Fatalf("PlanFits message %q lacks the figures", msg)
	}
	e.wantPhase(v1alpha1.PhasePending)
}

// TestPlannedEventOnlyForNewWarnings: a spec edit that changes the plan's
// figures (here the memory at the expected orders) but not its warnings is
// no news: the condition's message follows, no second Warning Event; the
// same after an operator restart.
func TestPlannedEventOnlyForNewWarnings(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.StartTime = metav1.NewTime(e.t0.Add(72 * time.Hour))
		fs.Spec.EndTime = metav1.NewTime(e.t0.Add(73 * time.Hour))
		fs.Spec.Expected = &v1alpha1.Expected{Buyers: 1_000_000, PurchasesPerSecond: 60000}
	})
	e.reconcile()
	e.wantCond(v1alpha1.ConditionPlanned, metav1.ConditionFalse, v1alpha1.ReasonPlanDoesNotFit)
	n := e.countEvents(v1alpha1.ReasonPlanDoesNotFit)
	before := e.cond(v1alpha1.ConditionPlanned).Message
	fs := e.get()
	fs.Spec.SKUs[1].Stock += 10
	update(e, fs)
	e.reconcile()
	after := e.cond(v1alpha1.ConditionPlanned).Message
	if after == before {
		t.Fatalf("the message did not follow the new stock: %q", after)
	}
	if got := e.countEvents(v1alpha1.ReasonPlanDoesNotFit); got != n {
		t.Fatalf("%d PlanDoesNotFit Events after adding 10 units (same warnings), want %d\nbefore: %s\nafter:  %s", got, n, before, after)
	}

	// A restarted operator remembers nothing, and reads the warnings it
	// told from the condition: the same again is no news, new ones are.
	e.restartOperator()
	fs = e.get()
	fs.Spec.SKUs[1].Stock += 10
	update(e, fs)
	e.reconcile()
	if got := e.countEvents(v1alpha1.ReasonPlanDoesNotFit); got != n {
		t.Fatalf("%d PlanDoesNotFit Events after a restart and the same warnings, want %d", got, n)
	}
	fs = e.get()
	fs.Spec.Expected.PurchasesPerSecond = 80000
	update(e, fs)
	e.restartOperator()
	e.reconcile()
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonPlanDoesNotFit, "1 primary, 2 buckets: 80,000 purchases/s on one shard")
}

func update(e *env, fs *v1alpha1.FlashSale) {
	e.t.Helper()
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		e.t.Fatal(err)
	}
}
