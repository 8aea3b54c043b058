package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

// The Events a SKU's stock tells. Each is recorded on a change only: a raise
// or a lowering when the warm-up of a new generation made it, SoldOut and
// StockDebt when the figures of one refresh differ from the status the
// previous refresh wrote, so a steady sale records nothing however often it
// is reconciled.

// stockChanged tells what warming a changed spec did to one SKU's stock.
func (r *FlashSaleReconciler) stockChanged(fs *v1alpha1.FlashSale, sk warm.SKUResult) {
	switch sk.Action {
	case "raised":
		msg := fmt.Sprintf("SKU %s stock raised by %d (from %d to %d): ", sk.SKU, sk.Declared()-sk.From, sk.From, sk.Declared())
		if sk.DebtDelta < 0 {
			// Units a lowering still owed stay with their buyers.
			msg += fmt.Sprintf("%s cancel what an earlier lowering still owed (debt %d now), ", units(-sk.DebtDelta, ""), sk.Debt)
		}
		msg += fmt.Sprintf("%s added to the sale, %d remaining", units(sk.Delta, ""), sk.Remaining)
		r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonStockRaised, "Warm", "%s", msg)
	case "lowered":
		msg := fmt.Sprintf("SKU %s stock lowered from %d to %d: took back %s", sk.SKU, sk.From, sk.Declared(), units(-sk.Delta, "unsold "))
		if sk.DebtDelta > 0 {
			msg += fmt.Sprintf("; %s held by buyers will be taken back as their orders are cancelled (debt %d)", units(sk.DebtDelta, ""), sk.Debt)
		}
		msg += fmt.Sprintf("; %d remaining", sk.Remaining)
		r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonStockLowered, "Warm", "%s", msg)
	}
}

// stockTransitions compares the SKU figures just written with prev, those of
// the previous refresh, and records SoldOut when a SKU's remaining reached
// zero and StockDebt when a lowering's debt was paid off. A SKU whose keys
// are not in Redis (not warmed, lost, torn down) tells nothing.
func (r *FlashSaleReconciler) stockTransitions(fs *v1alpha1.FlashSale, prev []v1alpha1.SKUStatus, f *liveFigures) {
	before := make(map[string]v1alpha1.SKUStatus, len(prev))
	for _, p := range prev {
		before[p.ID] = p
	}
	for _, now := range fs.Status.SKUs {
		if _, warmed := f.remaining[now.ID]; !warmed {
			continue
		}
		p, seen := before[now.ID]
		// A SKU seen for the first time sold out only if it sold anything
		// (a SKU declared with no stock never was on sale).
		if now.SoldOut && ((seen && !p.SoldOut) || (!seen && now.Sold > 0)) {
			r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonSoldOut, "SoldOut", "%s", soldOutNote(now))
		}
		if seen && p.Debt > 0 && now.Debt == 0 {
			r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonStockDebt, "StockDebt",
				"SKU %s: the stock lowering is paid off: buyers hold %d units of the declared %d, %d remaining; a cancelled order's unit goes back on sale again",
				now.ID, now.Sold, now.Stock, now.Remaining)
		}
	}
}

func soldOutNote(s v1alpha1.SKUStatus) string {
	if s.Debt > 0 {
		return fmt.Sprintf("SKU %s sold out: buyers hold %d units, %d more than the %d declared since the stock was lowered (debt %d): the next %s returned by cancelled orders leave the sale, later ones go back on sale",
			s.ID, s.Sold, s.Debt, s.Stock, s.Debt, units(s.Debt, ""))
	}
	return fmt.Sprintf("SKU %s sold out: buyers hold all %d units declared; purchases are answered SOLD_OUT until a cancelled order's unit goes back on sale",
		s.ID, s.Sold)
}

// units spells a count of units: "1 unsold unit", "4 units".
func units(n int64, adjective string) string {
	if n == 1 {
		return "1 " + adjective + "unit"
	}
	return fmt.Sprintf("%d %sunits", n, adjective)
}
