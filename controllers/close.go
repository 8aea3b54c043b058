package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// markClosed records when the operator first saw spec.closed: from then on
// status.closedAt is the sale's effective end (windowOf), so the close
// switch goes on, the sale drains and settles paymentTimeout after it. The
// reconciler owns closedAt; the API refuses to unset spec.closed.
func (r *FlashSaleReconciler) markClosed(fs *v1alpha1.FlashSale, now time.Time) {
	if !fs.Spec.Closed || fs.Status.ClosedAt != nil {
		return
	}
	fs.Status.ClosedAt = &metav1.Time{Time: now}
	if !now.Before(fs.Spec.EndTime.Time) {
		return // past its end already: closing changes nothing
	}
	r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonClosed, "Close",
		"Closed early by spec.closed at %s: purchases are answered 410 ENDED from now on", now.UTC().Format(time.RFC3339))
}

// endUnwarmed ends a sale that reached its effective end without any of it
// having been warmed: one closed before its warm-up, or one an overlapping
// sale held back until its end. Nothing was created (no key, topic, schema
// step or workload), so there is nothing to drain or tear down, and
// warming it now would only start pods for a sale that is over.
func (r *FlashSaleReconciler) endUnwarmed(s *scope) bool {
	fs := s.fs
	if fs.Status.OpenedAt != nil || s.now.Before(s.window.end) {
		return false
	}
	var why string
	conflict := apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionConflict)
	switch {
	case fs.Status.ClosedAt != nil && fs.Status.ClosedAt.Time.Before(s.window.plannedWarmFrom):
		// Every reconcile until the close was before the warm-up, so no
		// step ever ran.
		why = "closed by spec.closed before its warm-up: nothing was warmed"
	case conflict != nil && conflict.Status == metav1.ConditionTrue &&
		apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionWarmed) == nil:
		why = "held back by an overlapping sale until its end: nothing was warmed (" + conflict.Message + ")"
	default:
		return false
	}
	r.pool.drop(fs.SaleKey())
	r.setCondition(s, v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown, why)
	r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTornDown, "the sale has ended: "+why)
	r.tornDown.Store(fs.UID, true)
	s.obs.TornDown = true
	return true
}
