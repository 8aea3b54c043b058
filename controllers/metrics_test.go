package controllers

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// TestMetricsPerSale checks the series the alert rules (config/prometheus)
// read: each names its sale, the start time is there for the stuck-in-Warming
// alert, and a deleted sale leaves none behind.
func TestMetricsPerSale(t *testing.T) {
	m := NewMetrics()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collectors()...)

	start := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "singles-day"},
		Spec:       v1alpha1.FlashSaleSpec{StartTime: metav1.NewTime(start)},
		Status:     v1alpha1.FlashSaleStatus{Phase: v1alpha1.PhaseWarming, QueueLag: 7},
	}
	m.observe(fs, &DependencyError{Reason: v1alpha1.ReasonRedisUnavailable, Err: errors.New("dial tcp: refused")})
	m.reconcileError(fs, v1alpha1.ReasonRedisUnavailable)

	// value returns the series of family name whose labels include want.
	value := func(name string, want map[string]string) (float64, bool) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, s := range mf.GetMetric() {
				have := map[string]string{}
				for _, l := range s.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for k, v := range want {
					if have[k] != v {
						continue next
					}
				}
				if s.GetCounter() != nil {
					return s.GetCounter().GetValue(), true
				}
				return s.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	sale := map[string]string{"namespace": "shop", "name": "singles-day"}
	with := func(k, v string) map[string]string {
		l := map[string]string{k: v}
		for sk, sv := range sale {
			l[sk] = sv
		}
		return l
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{MetricSaleStartTime, sale, float64(start.Unix())},
		{MetricSalePhase, with("phase", string(v1alpha1.PhaseWarming)), 1},
		{MetricSalePhase, with("phase", string(v1alpha1.PhaseActive)), 0},
		{MetricQueueLag, sale, 7},
		{MetricReconcileErrors, with("reason", v1alpha1.ReasonRedisUnavailable), 2},
	} {
		got, ok := value(c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found: %t), want %v", c.name, c.labels, got, ok, c.want)
		}
	}

	m.forget(fs)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		t.Errorf("%s: %d series left after the sale was forgotten, want none", mf.GetName(), len(mf.GetMetric()))
	}
}
