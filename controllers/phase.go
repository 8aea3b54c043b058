// Package controllers holds the FlashSale reconciler. The phase of a sale is
// decided by one pure function of its spec, what was observed and the time,
// so every reconcile (after a restart, after an outage spanning a whole
// phase) lands on the same answer without trusting a stored phase.
package controllers

import (
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// Observed is what the reconciler learnt about a sale before deciding its
// phase. The zero value means "nothing verified yet".
type Observed struct {
	// Failed is set when the sale cannot proceed without a human (a missing
	// Secret, an unreachable dependency past its grace period).
	Failed bool
	// Live: keys verified, scripts loaded, pods ready and consumers assigned,
	// the go-live gate of Active.
	Live bool
	// SoldOut: every SKU's remaining stock is zero.
	SoldOut bool
	// Settled: the pipeline drained to zero lag and no order waits for
	// payment any more (after endTime + paymentTimeout). From here on the
	// sale is torn down, and its workloads are not applied again. The
	// settle step clears it again when the final audit finds valid orders
	// only in a dead-letter store (stranded.go): the sale stays Draining.
	Settled bool
	// TornDown: the final audit is in status and the workloads, keys and
	// topic are gone per policy.
	TornDown bool
	// Incomplete: a step failed this reconcile (a dependency unreachable, an
	// API call refused), so what it would have observed is unknown.
	Incomplete bool
}

// Decision is the phase and when to look again: the next instant at which
// time alone could change the phase (zero when only an observation can).
type Decision struct {
	// Phase is empty when the observations cannot tell: the phase shown is
	// kept.
	Phase v1alpha1.Phase
	Next  time.Time
}

// window is the instants of a sale's life: time alone changes its phase
// only at these. The lead and the payment window come from the API's
// helpers, which hold their defaults.
type window struct {
	warmFrom, start, end, settleFrom time.Time
	// plannedWarmFrom is startTime - warmupLead as the spec says, before a
	// close pulled warmFrom back: whether a closed sale ever reached its
	// warm-up (endUnwarmed).
	plannedWarmFrom time.Time
}

// windowOf is the sale's window. Its end is the effective one: endTime, or
// status.closedAt when spec.closed ended the sale before it. A sale closed
// before its warm-up or start has its earlier instants pulled back to the
// close, so time never takes a closed sale back to Pending or Warming.
//
// A sale closed before its gate ever opened (status.openedAt unset) settles
// at the close: no buyer was admitted, so no order can await payment, and
// waiting paymentTimeout would only keep its pods running. (Its gate does
// not open past the effective end: reconcileGate.)
func windowOf(sale *v1alpha1.FlashSale) window {
	start, end := sale.Spec.StartTime.Time, sale.Spec.EndTime.Time
	closedEarly := false
	if c := sale.Status.ClosedAt; c != nil && c.Time.Before(end) {
		end, closedEarly = c.Time, true
	}
	planned := start.Add(-sale.WarmupLead())
	warmFrom := planned
	if end.Before(start) {
		start = end
	}
	if end.Before(warmFrom) {
		warmFrom = end
	}
	settleFrom := end.Add(sale.PaymentTimeout())
	if closedEarly && sale.Status.OpenedAt == nil {
		settleFrom = end
	}
	return window{
		warmFrom:        warmFrom,
		start:           start,
		end:             end,
		settleFrom:      settleFrom,
		plannedWarmFrom: planned,
	}
}

// DecidePhase computes the phase of a sale at now.
//
//	              start-lead          start                  end        end+paymentTimeout
//	Pending    |    Warming    |  Active / Paused  |      Draining      |  (settled) Ended
//
// Warming also holds past start while the go-live gate is closed: buyers are
// only admitted once everything is verified. A sold-out sale drains early, but
// goes back to Active if stock returns (a rollback) before the end. Pause only
// matters inside the purchase window; the end wins over a pause. Past the end,
// a sale never seen live is not called Draining on an incomplete observation:
// the phase shown stays until the operator can look again.
func DecidePhase(sale *v1alpha1.FlashSale, obs Observed, now time.Time) Decision {
	w := windowOf(sale)
	switch {
	case obs.TornDown:
		return Decision{Phase: v1alpha1.PhaseEnded}
	case obs.Failed:
		return Decision{Phase: v1alpha1.PhaseFailed}
	case now.Before(w.warmFrom):
		return Decision{Phase: v1alpha1.PhasePending, Next: w.warmFrom}
	case now.Before(w.start):
		return Decision{Phase: v1alpha1.PhaseWarming, Next: w.start}
	case now.Before(w.end):
		switch {
		case !obs.Live:
			return Decision{Phase: v1alpha1.PhaseWarming, Next: w.end}
		case obs.SoldOut:
			return Decision{Phase: v1alpha1.PhaseDraining, Next: w.end}
		case sale.Spec.Paused:
			return Decision{Phase: v1alpha1.PhasePaused, Next: w.end}
		default:
			return Decision{Phase: v1alpha1.PhaseActive, Next: w.end}
		}
	case obs.Incomplete && !obs.Live:
		return Decision{}
	case now.Before(w.settleFrom):
		return Decision{Phase: v1alpha1.PhaseDraining, Next: w.settleFrom}
	default:
		// Past every boundary: Draining until the reconciler has settled and
		// torn down, which only an observation can tell.
		return Decision{Phase: v1alpha1.PhaseDraining}
	}
}

// RequeueAfter is how long to wait until d.Next, or 0 when no boundary lies ahead.
func (d Decision) RequeueAfter(now time.Time) time.Duration {
	if d.Next.IsZero() || !d.Next.After(now) {
		return 0
	}
	return d.Next.Sub(now)
}
