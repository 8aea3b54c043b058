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
	// payment any more (after endTime + paymentTimeout).
	Settled bool
	// TornDown: the final audit is in status and the workloads, keys and
	// topic are gone per policy.
	TornDown bool
}

// Decision is the phase and when to look again: the next instant at which
// time alone could change the phase (zero when only an observation can).
type Decision struct {
	Phase v1alpha1.Phase
	Next  time.Time
}

// DecidePhase computes the phase of a sale at now.
//
//	              start-lead          start                  end        end+paymentTimeout
//	Pending    |    Warming    |  Active / Paused  |      Draining      |  (settled) Ended
//
// Warming also holds past start while the go-live gate is closed: buyers are
// only admitted once everything is verified. A sold-out sale drains early, but
// goes back to Active if stock returns (a rollback) before the end. Pause only
// matters inside the purchase window; the end wins over a pause.
func DecidePhase(spec *v1alpha1.FlashSaleSpec, obs Observed, now time.Time) Decision {
	start, end := spec.StartTime.Time, spec.EndTime.Time
	lead := v1alpha1.DefaultWarmupLead
	if spec.WarmupLead != nil {
		lead = spec.WarmupLead.Duration
	}
	pay := v1alpha1.DefaultPaymentTimeout
	if spec.PaymentTimeout != nil {
		pay = spec.PaymentTimeout.Duration
	}
	warmFrom, settleFrom := start.Add(-lead), end.Add(pay)

	switch {
	case obs.TornDown:
		return Decision{Phase: v1alpha1.PhaseEnded}
	case obs.Failed:
		return Decision{Phase: v1alpha1.PhaseFailed}
	case now.Before(warmFrom):
		return Decision{Phase: v1alpha1.PhasePending, Next: warmFrom}
	case now.Before(start):
		return Decision{Phase: v1alpha1.PhaseWarming, Next: start}
	case now.Before(end):
		switch {
		case !obs.Live:
			return Decision{Phase: v1alpha1.PhaseWarming, Next: end}
		case obs.SoldOut:
			return Decision{Phase: v1alpha1.PhaseDraining, Next: end}
		case spec.Paused:
			return Decision{Phase: v1alpha1.PhasePaused, Next: end}
		default:
			return Decision{Phase: v1alpha1.PhaseActive, Next: end}
		}
	case now.Before(settleFrom):
		return Decision{Phase: v1alpha1.PhaseDraining, Next: settleFrom}
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
