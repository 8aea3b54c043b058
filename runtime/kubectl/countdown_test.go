package kubectl

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
)

// TestCountdown: at each point of a sale's life, including a sale closed
// early (before its start, inside its window, after its end, or not yet
// seen by the operator), the countdown names the boundary the operator
// waits for next. Each row's phase is checked to be the one the operator
// decides at that instant (controllers.DecidePhase), so the rows are states
// a user can really see.
func TestCountdown(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	closedAt := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	// sale starts at now+start and ends an hour later; warm-up lead 10m,
	// payment window 15m.
	sale := func(start time.Duration, phase v1alpha1.Phase, closed bool, closedAt *metav1.Time) *v1alpha1.FlashSale {
		fs := &v1alpha1.FlashSale{Spec: v1alpha1.FlashSaleSpec{
			StartTime:      metav1.NewTime(now.Add(start)),
			EndTime:        metav1.NewTime(now.Add(start + time.Hour)),
			WarmupLead:     &metav1.Duration{Duration: 10 * time.Minute},
			PaymentTimeout: &metav1.Duration{Duration: 15 * time.Minute},
			Closed:         closed,
		}}
		fs.Status.Phase, fs.Status.ClosedAt = phase, closedAt
		return fs
	}
	cases := []struct {
		name string
		fs   *v1alpha1.FlashSale
		live bool // the go-live gate opened (status.openedAt)
		want string
	}{
		{"Pending", sale(20*time.Minute, v1alpha1.PhasePending, false, nil), false,
			"warm-up in 10m0s, starts in 20m0s"},
		{"Warming", sale(5*time.Minute, v1alpha1.PhaseWarming, false, nil), false,
			"starts in 5m0s"},
		// The operator pulls the start back to the close: Draining, not
		// "starts in 5m0s". No buyer was admitted, so there is no payment
		// window to wait for: it settles at the close.
		{"closed while Warming", sale(5*time.Minute, v1alpha1.PhaseDraining, true, closedAt(-10*time.Second)), false,
			"settling (waiting for the queue to drain)"},
		{"Active", sale(-time.Minute, v1alpha1.PhaseActive, false, nil), true,
			"ends in 59m0s"},
		// spec.closed, but status.closedAt not written yet: the operator
		// still counts from endTime; the close happens when it looks.
		{"closed, not yet seen by the operator", sale(-time.Minute, v1alpha1.PhaseActive, true, nil), true,
			"closing (waiting for the operator)"},
		{"Draining by close", sale(-30*time.Minute, v1alpha1.PhaseDraining, true, closedAt(-5*time.Minute)), true,
			"settles in 10m0s (payment window)"},
		{"Draining past its end", sale(-65*time.Minute, v1alpha1.PhaseDraining, false, nil), true,
			"settles in 10m0s (payment window)"},
		// Closed after its end: the close changes nothing, endTime stays the end.
		{"closed after its end", sale(-65*time.Minute, v1alpha1.PhaseDraining, true, closedAt(-time.Minute)), true,
			"settles in 10m0s (payment window)"},
		{"closed after its end, not yet seen", sale(-65*time.Minute, v1alpha1.PhaseDraining, true, nil), true,
			"settles in 10m0s (payment window)"},
		{"past settle", sale(-2*time.Hour, v1alpha1.PhaseDraining, false, nil), true,
			"settling (waiting for the queue to drain)"},
		{"Ended", sale(-3*time.Hour, v1alpha1.PhaseEnded, false, nil), true, "ended"},
		{"Failed", sale(5*time.Minute, v1alpha1.PhaseFailed, false, nil), false, "failed: see the conditions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.live {
				c.fs.Status.OpenedAt = &c.fs.Spec.StartTime
			}
			if p := c.fs.Status.Phase; p != v1alpha1.PhaseEnded && p != v1alpha1.PhaseFailed {
				// Observed.Live as the reconciler sets it (newScope).
				if d := controllers.DecidePhase(c.fs, controllers.Observed{Live: c.live}, now); d.Phase != p {
					t.Fatalf("the row's phase %s is not the operator's (%s) at that instant", p, d.Phase)
				}
			}
			if got := countdown(c.fs, now); got != c.want {
				t.Errorf("countdown %q, want %q", got, c.want)
			}
		})
	}
}
