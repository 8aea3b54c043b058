package controllers

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// updateStatus writes what one reconcile learnt into the sale's status,
// given the phase decided from it: the live figures, Degraded, the phase
// and Ready. observedGeneration is written only when the reconcile
// succeeded or stalled, not when a step failed.
func (r *FlashSaleReconciler) updateStatus(s *scope, d Decision) {
	st := &s.fs.Status
	switch {
	case s.live != nil:
		prev := slices.Clone(st.SKUs) // setFigures reuses the slice
		setFigures(st, s.sale, s.live, s.now)
		r.stockTransitions(s.fs, prev, s.live)
	case s.connected && d.Phase == v1alpha1.PhasePending:
		// Before the warm-up nothing can have been sold.
		st.Stock = s.sale.TotalStock()
		st.Remaining = st.Stock
	}
	r.setDegraded(s, d.Phase)
	r.setPhase(s, d.Phase)
	r.setReady(s, d.Phase)
	if s.err == nil {
		st.ObservedGeneration = s.fs.Generation
	}
}

// setFigures writes the live counts observe read: per SKU and in total.
func setFigures(st *v1alpha1.FlashSaleStatus, sale *v1alpha1.FlashSale, f *liveFigures, now time.Time) {
	st.SKUs = st.SKUs[:0]
	st.Stock, st.Remaining, st.Sold, st.Paid, st.Cancelled = 0, 0, 0, 0, 0
	for _, sku := range sale.Spec.SKUs {
		initial, ok := f.initial[sku.ID]
		if !ok {
			initial = sku.Stock
		}
		// initial = remaining + units buyers hold, and the declared stock is
		// initial − debt: so stock = remaining + sold − debt, and sold
		// exceeds the declared stock only while a lowering is owed. A split
		// SKU sums its buckets, and its declared stock is Σ (initial − debt)
		// plus the units in flight between two buckets (given by one, not
		// yet taken in by the other): those count as remaining, for they are
		// unsold and go on sale in the receiving bucket (within a poll: the
		// operator completes a transfer a crash left half-done), so the same
		// law holds per SKU. The buckets' own figures leave them out.
		rem, debt := f.remaining[sku.ID], f.debt[sku.ID]
		inFlight := f.inFlight[sku.ID]
		ss := v1alpha1.SKUStatus{ID: sku.ID, Stock: sku.Stock, Remaining: rem + inFlight, Sold: initial - rem,
			SoldOut: rem+inFlight <= 0, Debt: debt, SuggestedBuckets: f.suggested, Buckets: slices.Clone(f.buckets[sku.ID])}
		if c := f.counts[sku.ID]; c != nil {
			ss.Paid, ss.Cancelled = c.Paid, c.Cancelled
		}
		st.SKUs = append(st.SKUs, ss)
		st.Stock += ss.Stock
		st.Remaining += ss.Remaining
		st.Sold += ss.Sold
		st.Paid += ss.Paid
		st.Cancelled += ss.Cancelled
	}
	st.QueueLag = f.total
	// The only writer of status.queue: nil for a sale without a waiting room.
	st.Queue = f.queue
	st.LastRefreshTime = &metav1.Time{Time: now}
}

// setDegraded says whether the sale's dependencies and workloads are
// healthy. It is left alone when nothing was looked at: the sale is torn
// down already, or its configuration is broken.
func (r *FlashSaleReconciler) setDegraded(s *scope, p v1alpha1.Phase) {
	switch {
	case s.err != nil:
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionTrue, dependencyReason(s.err), s.err.Error())
	case !s.connected:
	case p == v1alpha1.PhasePending:
		// Before the warm-up only the connections were checked.
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy, "Redis, MySQL and Kafka reachable")
	case len(s.degraded) > 0:
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionTrue, s.degraded[0], s.degraded[1])
	default:
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy, "every dependency and workload is healthy")
	}
}

var phaseNotes = map[v1alpha1.Phase]string{
	v1alpha1.PhasePending:  "waiting for the warm-up window",
	v1alpha1.PhaseWarming:  "pre-warming Redis, creating the topic and schema, pre-scaling the pods",
	v1alpha1.PhaseActive:   "purchases are admitted",
	v1alpha1.PhasePaused:   "purchases are answered 503 PAUSED",
	v1alpha1.PhaseDraining: "purchases are closed; orders drain and unpaid ones roll back",
	v1alpha1.PhaseEnded:    "the sale has settled and was torn down",
	v1alpha1.PhaseFailed:   "the sale cannot proceed without a human; see the conditions",
}

// setPhase sets the phase and records a PhaseChanged Event when it
// changed. An empty phase (the decision could not tell) keeps the one shown.
func (r *FlashSaleReconciler) setPhase(s *scope, p v1alpha1.Phase) {
	prev := s.fs.Status.Phase
	if p == "" || prev == p {
		return
	}
	s.fs.Status.Phase = p
	from := string(prev)
	if from == "" {
		from = "(new)"
	}
	eventType := corev1.EventTypeNormal
	if p == v1alpha1.PhaseFailed {
		eventType = corev1.EventTypeWarning
	}
	r.event(s.fs, eventType, v1alpha1.ReasonPhaseChanged, "Phase", "%s → %s: %s", from, p, phaseNotes[p])
}

// setReady summarises the sale for a human: whether it is ready for what
// its phase asks, and if not, what it waits for.
func (r *FlashSaleReconciler) setReady(s *scope, p v1alpha1.Phase) {
	opened := s.fs.Status.OpenedAt != nil
	switch {
	case s.configErr != nil:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, s.configErr.Reason, s.configErr.Msg)
	case s.err != nil && opened:
		// Buyers are admitted: the failure shows in Degraded, and Ready
		// keeps what it said.
	case s.err != nil:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, dependencyReason(s.err), s.err.Error())
	case s.conflict != "":
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonOverlappingSale, s.conflict)
	case !s.connected:
		// Torn down already: Ready said so then.
	case p == v1alpha1.PhasePending:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForWarmup,
			"warm-up starts at "+s.window.warmFrom.UTC().Format(time.RFC3339))
	case p == v1alpha1.PhaseEnded:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTornDown, "the sale has ended and was torn down")
	case len(s.missing) > 0 && !opened:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, s.missing[0], s.missing[1])
	case p == v1alpha1.PhaseWarming:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonVerified,
			"everything is verified; buyers are admitted from "+s.window.start.UTC().Format(time.RFC3339))
	case p == v1alpha1.PhasePaused:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonPaused, "the sale is paused: purchases are answered 503")
	case p == v1alpha1.PhaseDraining:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonDraining, "purchases are closed; orders drain and unpaid ones roll back")
	default:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonLive, "the sale is live")
	}
}

// setCondition sets a condition and, when its status or reason changed,
// records an Event with the same reason: Events then read as the log of
// the sale without repeating themselves every refresh.
func (r *FlashSaleReconciler) setCondition(s *scope, typ string, status metav1.ConditionStatus, reason, msg string) {
	prev := apimeta.FindStatusCondition(s.fs.Status.Conditions, typ)
	changed := prev == nil || prev.Status != status || prev.Reason != reason
	apimeta.SetStatusCondition(&s.fs.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: s.fs.Generation, LastTransitionTime: metav1.NewTime(s.now),
	})
	// Ready summarises the others: its changes are told by the condition
	// that caused them and by the PhaseChanged Event, not a second time.
	if !changed || r.Recorder == nil || typ == v1alpha1.ConditionReady {
		return
	}
	eventType := corev1.EventTypeNormal
	bad := status == metav1.ConditionFalse
	if typ == v1alpha1.ConditionDegraded || typ == v1alpha1.ConditionConflict {
		bad = status == metav1.ConditionTrue
	}
	if bad {
		eventType = corev1.EventTypeWarning
	}
	// The first Healthy/Ready=False of a fresh sale is not news.
	if prev == nil && eventType == corev1.EventTypeWarning && (reason == v1alpha1.ReasonWaitingForWarmup) {
		return
	}
	if prev == nil && (typ == v1alpha1.ConditionDegraded || typ == v1alpha1.ConditionConflict) && status == metav1.ConditionFalse {
		return
	}
	r.Recorder.Eventf(s.fs, nil, eventType, reason, typ, "%s", msg)
}

// clearCondition removes a condition, so that the step owning it does its
// work again on the next reconcile.
func clearCondition(s *scope, typ string) {
	apimeta.RemoveStatusCondition(&s.fs.Status.Conditions, typ)
}

// event records an Event that no condition carries (a stock raise, a scale).
func (r *FlashSaleReconciler) event(fs *v1alpha1.FlashSale, eventType, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(fs, nil, eventType, reason, action, format, args...)
	}
}
