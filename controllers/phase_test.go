package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// timedSale: warm-up from 11:55, start 12:00, end 12:30, settle from 12:45.
func timedSale(paused bool) *v1alpha1.FlashSale {
	return &v1alpha1.FlashSale{Spec: v1alpha1.FlashSaleSpec{
		StartTime:      metav1.NewTime(at("2026-11-11T12:00:00Z")),
		EndTime:        metav1.NewTime(at("2026-11-11T12:30:00Z")),
		WarmupLead:     &metav1.Duration{Duration: 5 * time.Minute},
		PaymentTimeout: &metav1.Duration{Duration: 15 * time.Minute},
		Paused:         paused,
	}}
}

func TestDecidePhase(t *testing.T) {
	live := Observed{Live: true}
	cases := []struct {
		name   string
		paused bool
		obs    Observed
		now    string
		phase  v1alpha1.Phase
		next   string // "" = no time boundary ahead
	}{
		{"long before", false, Observed{}, "2026-11-10T00:00:00Z", v1alpha1.PhasePending, "2026-11-11T11:55:00Z"},
		{"1ns before warm-up", false, Observed{}, "2026-11-11T11:54:59.999999999Z", v1alpha1.PhasePending, "2026-11-11T11:55:00Z"},
		{"warm-up opens", false, Observed{}, "2026-11-11T11:55:00Z", v1alpha1.PhaseWarming, "2026-11-11T12:00:00Z"},
		{"warmed early stays Warming until start", false, live, "2026-11-11T11:59:59.999999999Z", v1alpha1.PhaseWarming, "2026-11-11T12:00:00Z"},
		{"start with the gate open", false, live, "2026-11-11T12:00:00Z", v1alpha1.PhaseActive, "2026-11-11T12:30:00Z"},
		{"start with the gate closed", false, Observed{}, "2026-11-11T12:00:00Z", v1alpha1.PhaseWarming, "2026-11-11T12:30:00Z"},
		{"paused mid-sale", true, live, "2026-11-11T12:10:00Z", v1alpha1.PhasePaused, "2026-11-11T12:30:00Z"},
		{"paused before the start does not hold warm-up", true, Observed{}, "2026-11-11T11:56:00Z", v1alpha1.PhaseWarming, "2026-11-11T12:00:00Z"},
		{"pause across the end: the end wins", true, live, "2026-11-11T12:30:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:45:00Z"},
		{"sold out drains early", false, Observed{Live: true, SoldOut: true}, "2026-11-11T12:05:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:30:00Z"},
		{"stock came back before the end", false, live, "2026-11-11T12:20:00Z", v1alpha1.PhaseActive, "2026-11-11T12:30:00Z"},
		{"1ns before the end", false, live, "2026-11-11T12:29:59.999999999Z", v1alpha1.PhaseActive, "2026-11-11T12:30:00Z"},
		{"the end", false, live, "2026-11-11T12:30:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:45:00Z"},
		{"payment window over, not settled", false, live, "2026-11-11T12:45:00Z", v1alpha1.PhaseDraining, ""},
		{"settled but not torn down", false, Observed{Live: true, Settled: true}, "2026-11-11T12:45:00Z", v1alpha1.PhaseDraining, ""},
		{"torn down", false, Observed{Settled: true, TornDown: true}, "2026-11-11T13:00:00Z", v1alpha1.PhaseEnded, ""},
		// An operator outage spanning whole phases: whenever it comes back,
		// the phase is the one of now, not the one it last wrote.
		{"outage over warm-up and start", false, Observed{}, "2026-11-11T12:15:00Z", v1alpha1.PhaseWarming, "2026-11-11T12:30:00Z"},
		{"outage over the whole sale", false, Observed{}, "2026-11-11T12:40:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:45:00Z"},
		{"created after its end", false, Observed{}, "2026-11-12T00:00:00Z", v1alpha1.PhaseDraining, ""},
		{"failed", false, Observed{Failed: true}, "2026-11-11T11:58:00Z", v1alpha1.PhaseFailed, ""},
		{"torn down wins over failed", false, Observed{Failed: true, TornDown: true}, "2026-11-11T13:00:00Z", v1alpha1.PhaseEnded, ""},
		// A step failed: the phase still follows the clock, except that a
		// sale never seen live is not called Draining past its end.
		{"incomplete before warm-up", false, Observed{Incomplete: true}, "2026-11-11T11:54:59.999999999Z", v1alpha1.PhasePending, "2026-11-11T11:55:00Z"},
		{"incomplete mid-sale, live", false, Observed{Live: true, Incomplete: true}, "2026-11-11T12:10:00Z", v1alpha1.PhaseActive, "2026-11-11T12:30:00Z"},
		{"incomplete mid-sale, gate closed", false, Observed{Incomplete: true}, "2026-11-11T12:29:59.999999999Z", v1alpha1.PhaseWarming, "2026-11-11T12:30:00Z"},
		{"incomplete at the end, live", false, Observed{Live: true, Incomplete: true}, "2026-11-11T12:30:00Z", v1alpha1.PhaseDraining, "2026-11-11T12:45:00Z"},
		{"incomplete at the end, never live: phase kept", false, Observed{Incomplete: true}, "2026-11-11T12:30:00Z", "", ""},
		{"incomplete past settling, never live: phase kept", false, Observed{Incomplete: true}, "2026-11-11T12:45:00Z", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := at(tc.now)
			d := DecidePhase(timedSale(tc.paused), tc.obs, now)
			if d.Phase != tc.phase {
				t.Fatalf("phase %s, want %s", d.Phase, tc.phase)
			}
			var want time.Time
			if tc.next != "" {
				want = at(tc.next)
			}
			if !d.Next.Equal(want) {
				t.Fatalf("next %s, want %s", d.Next, want)
			}
			if tc.next != "" && d.RequeueAfter(now) != want.Sub(now) {
				t.Fatalf("requeue after %s, want %s", d.RequeueAfter(now), want.Sub(now))
			}
		})
	}
}

func TestDecidePhaseDefaults(t *testing.T) {
	s := timedSale(false)
	s.Spec.WarmupLead, s.Spec.PaymentTimeout = nil, nil
	if d := DecidePhase(s, Observed{}, at("2026-11-11T11:55:00Z")); d.Phase != v1alpha1.PhaseWarming {
		t.Fatalf("default warm-up lead: %s", d.Phase)
	}
	if d := DecidePhase(s, Observed{}, at("2026-11-11T12:31:00Z")); !d.Next.Equal(at("2026-11-11T12:45:00Z")) {
		t.Fatalf("default payment timeout: next %s", d.Next)
	}
}
