package controllers

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
)

// splitScope is statusScope with SKU 1001 split into 3 buckets.
func splitScope(st v1alpha1.FlashSaleStatus) *scope {
	s := statusScope("2026-11-11T12:10:00Z", st)
	s.fs.Spec.SKUs[0].Buckets = 3
	s.sale.Spec.SKUs[0].Buckets = 3
	return s
}

// TestSetFiguresSplitSKU: a split SKU's status sums its buckets, counts the
// units in flight between two buckets as remaining (so stock = remaining +
// sold − debt holds per SKU while a transfer is half-done), lists each
// bucket's own figures, and is sold out only when every bucket is out with
// nothing in flight.
func TestSetFiguresSplitSKU(t *testing.T) {
	bs := []v1alpha1.BucketStatus{
		{Bucket: 0, Remaining: 0, Sold: 40, Debt: 2, Primary: "10.0.0.1:6379"},
		{Bucket: 1, Remaining: 0, Sold: 30, Primary: "10.0.0.2:6379"},
		{Bucket: 2, Remaining: 0, Sold: 24, Primary: "10.0.0.3:6379"},
	}
	for _, tc := range []struct {
		name     string
		inFlight int64
		want     v1alpha1.SKUStatus
	}{
		// 100 declared: Σ initial 94 − debt 2 + 8 in flight.
		{name: "a transfer half-done", inFlight: 8,
			want: v1alpha1.SKUStatus{ID: "1001", Stock: 100, Remaining: 8, Sold: 94, Debt: 2, SuggestedBuckets: 3, Buckets: bs}},
		{name: "every bucket out", inFlight: 0,
			want: v1alpha1.SKUStatus{ID: "1001", Stock: 92, Remaining: 0, Sold: 94, Debt: 2, SoldOut: true, SuggestedBuckets: 3, Buckets: bs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := splitScope(v1alpha1.FlashSaleStatus{})
			s.sale.Spec.SKUs[0].Stock = tc.want.Stock
			f := &liveFigures{
				remaining: map[string]int64{"1001": 0, "1002": 5},
				initial:   map[string]int64{"1001": 94, "1002": 20},
				debt:      map[string]int64{"1001": 2},
				inFlight:  map[string]int64{"1001": tc.inFlight},
				buckets:   map[string][]v1alpha1.BucketStatus{"1001": bs},
				suggested: 3,
			}
			setFigures(&s.fs.Status, s.sale, f, s.now)
			got := s.fs.Status.SKUs[0]
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("SKU status\n %+v\nwant\n %+v", got, tc.want)
			}
			if got.Stock != got.Remaining+got.Sold-got.Debt {
				t.Fatalf("%+v: stock ≠ remaining + sold − debt", got)
			}
			if un := s.fs.Status.SKUs[1]; un.Buckets != nil || un.SuggestedBuckets != 3 {
				t.Fatalf("unsplit SKU %+v: want no buckets, the suggestion", un)
			}
			if f.soldOut(s.sale) {
				t.Fatal("sale sold out with 1002 on sale")
			}
		})
	}
}

// TestBucketsSpread: True when each split SKU's buckets are on distinct
// primaries; False, with a Warning Event once, naming the SKU and the
// primary that holds two, or saying a standalone Redis gains nothing; gone
// when no SKU is split.
func TestBucketsSpread(t *testing.T) {
	on := func(addrs ...string) map[string][]v1alpha1.BucketStatus {
		bs := make([]v1alpha1.BucketStatus, len(addrs))
		for i, a := range addrs {
			bs[i] = v1alpha1.BucketStatus{Bucket: int32(i), Primary: a}
		}
		return map[string][]v1alpha1.BucketStatus{"1001": bs}
	}
	for _, tc := range []struct {
		name    string
		buckets map[string][]v1alpha1.BucketStatus
		status  metav1.ConditionStatus
		reason  string
		parts   []string
	}{
		{name: "spread", buckets: on("a:1", "b:2", "c:3"), status: metav1.ConditionTrue, reason: v1alpha1.ReasonBucketsSpread,
			parts: []string{"1001: 3 buckets on a:1, b:2, c:3"}},
		{name: "two on one primary", buckets: on("a:1", "b:2", "a:1"), status: metav1.ConditionFalse, reason: v1alpha1.ReasonBucketsColocated,
			parts: []string{"SKU 1001", "primary a:1 holds 2 of its 3 buckets (buckets 0, 2)"}},
		{name: "standalone", buckets: on("", "", ""), status: metav1.ConditionFalse, reason: v1alpha1.ReasonBucketsColocated,
			parts: []string{"SKU 1001", "standalone Redis", "spreads no load"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := statusReconciler()
			s := splitScope(v1alpha1.FlashSaleStatus{})
			s.live = &liveFigures{buckets: tc.buckets}
			for range 2 { // the second poll tells nothing new
				r.setBucketsSpread(s)
			}
			c := apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionBucketsSpread)
			if c == nil || c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("condition %+v, want %s/%s", c, tc.status, tc.reason)
			}
			for _, p := range tc.parts {
				if !strings.Contains(c.Message, p) {
					t.Fatalf("message %q lacks %q", c.Message, p)
				}
			}
			evs := recorded(rec)
			if len(evs) != 1 {
				t.Fatalf("events %q, want one", evs)
			}
			wantType := corev1.EventTypeNormal
			if tc.status == metav1.ConditionFalse {
				wantType = corev1.EventTypeWarning
			}
			if !strings.HasPrefix(evs[0], wantType+" "+tc.reason+" ") {
				t.Fatalf("event %q, want a %s %s", evs[0], wantType, tc.reason)
			}
		})
	}
	t.Run("no split SKU", func(t *testing.T) {
		r, _ := statusReconciler()
		s := statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{Conditions: []metav1.Condition{
			cond(v1alpha1.ConditionBucketsSpread, metav1.ConditionTrue, v1alpha1.ReasonBucketsSpread, "was split")}})
		s.live = &liveFigures{}
		r.setBucketsSpread(s)
		if c := apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionBucketsSpread); c != nil {
			t.Fatalf("condition %+v on a sale with no split SKU", c)
		}
	})
}

// TestSuggestBuckets: enough shards for the sale's rate at the per-shard
// budget, at least one, never more than the primaries; none without a rate.
func TestSuggestBuckets(t *testing.T) {
	for _, tc := range []struct {
		rps       int64
		primaries int
		want      int32
	}{
		{rps: 0, primaries: 3, want: 0},
		{rps: 1, primaries: 3, want: 1},
		{rps: plan.PerShardBudget, primaries: 3, want: 1},
		{rps: plan.PerShardBudget + 1, primaries: 3, want: 2},
		{rps: 3 * plan.PerShardBudget, primaries: 6, want: 3},
		{rps: 10 * plan.PerShardBudget, primaries: 3, want: 3},
		{rps: 10 * plan.PerShardBudget, primaries: 1, want: 1},
		{rps: 100 * plan.PerShardBudget, primaries: 64, want: 32},
	} {
		s := statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{})
		s.sale.Spec.RateLimit.RequestsPerSecond = tc.rps
		if got := suggestBuckets(s.sale, tc.primaries); got != tc.want {
			t.Errorf("%d/s on %d primaries: suggested %d, want %d", tc.rps, tc.primaries, got, tc.want)
		}
	}
}
