package controllers

import (
	"slices"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// TestStockTransitions: SoldOut and StockDebt are told when the figures of
// a refresh change state, never again while they stay, and never for a SKU
// whose keys Redis does not hold or that never had anything to sell.
func TestStockTransitions(t *testing.T) {
	for _, tc := range []struct {
		name string
		prev []v1alpha1.SKUStatus
		// remaining, initial and debt of 1001 in Redis (1002 has no keys:
		// it tells nothing, though its status shows it sold out).
		remaining, initial, debt int64
		events                   []string
	}{
		{name: "first look, on sale", remaining: 40, initial: 100},
		{name: "first look, already sold out", remaining: 0, initial: 100,
			events: []string{"Normal SoldOut SKU 1001 sold out: buyers hold all 100 units declared; purchases are answered SOLD_OUT until a cancelled order's unit goes back on sale"}},
		{name: "first look, declared with nothing to sell", remaining: 0, initial: 0},
		{name: "sells out", prev: []v1alpha1.SKUStatus{{ID: "1001", Remaining: 1}}, remaining: 0, initial: 100,
			events: []string{"Normal SoldOut SKU 1001 sold out: buyers hold all 100 units declared; purchases are answered SOLD_OUT until a cancelled order's unit goes back on sale"}},
		{name: "stays sold out", prev: []v1alpha1.SKUStatus{{ID: "1001", SoldOut: true}}, remaining: 0, initial: 100},
		{name: "sold out by a lowering", prev: []v1alpha1.SKUStatus{{ID: "1001", Remaining: 1}}, remaining: 0, initial: 103, debt: 3,
			events: []string{"Normal SoldOut SKU 1001 sold out: buyers hold 103 units, 3 more than the 100 declared since the stock was lowered (debt 3): the next 3 units returned by cancelled orders leave the sale, later ones go back on sale"}},
		{name: "debt shrinks", prev: []v1alpha1.SKUStatus{{ID: "1001", SoldOut: true, Debt: 3}}, remaining: 0, initial: 102, debt: 2},
		{name: "debt paid off", prev: []v1alpha1.SKUStatus{{ID: "1001", SoldOut: true, Debt: 2}}, remaining: 0, initial: 100,
			events: []string{"Normal StockDebt SKU 1001: the stock lowering is paid off: buyers hold 100 units of the declared 100, 0 remaining; a cancelled order's unit goes back on sale again"}},
		{name: "back on sale", prev: []v1alpha1.SKUStatus{{ID: "1001", SoldOut: true}}, remaining: 1, initial: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := statusReconciler()
			s := statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{SKUs: slices.Clone(tc.prev)})
			// The spec declares what Redis keeps: initial − debt.
			s.sale.Spec.SKUs[0].Stock = tc.initial - tc.debt
			f := &liveFigures{
				remaining: map[string]int64{"1001": tc.remaining},
				initial:   map[string]int64{"1001": tc.initial},
				debt:      map[string]int64{"1001": tc.debt},
			}
			prev := slices.Clone(s.fs.Status.SKUs)
			setFigures(&s.fs.Status, s.sale, f, s.now)
			r.stockTransitions(s.fs, prev, f)
			wantEvents(t, rec, tc.events...)
			got := s.fs.Status.SKUs[0]
			if got.Debt != tc.debt || got.Stock != got.Remaining+got.Sold-got.Debt {
				t.Fatalf("status %+v: debt %d, or stock ≠ remaining + sold − debt", got, tc.debt)
			}
		})
	}
}
