package controllers

import (
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// Window is the instants of a sale's life at which time alone changes its
// phase, exactly as the reconciler computes them (windowOf), for tools that
// show a sale (the kubectl plugin's countdown) and must not disagree with
// the operator about them.
type Window struct {
	// WarmFrom is when warm-up begins: startTime − warmupLead.
	WarmFrom time.Time
	// Start is when purchases open.
	Start time.Time
	// End is the effective end: endTime, or status.closedAt when the sale
	// was closed before it.
	End time.Time
	// SettleFrom is End + paymentTimeout: from then on no unpaid order can
	// still be paid, and the sale settles once its queue drains.
	SettleFrom time.Time
}

// SaleWindow is fs's Window. A sale closed before its warm-up or start has
// those instants pulled back to the close, as for the reconciler. fs is not
// changed: the defaults are filled in on a copy, as the reconciler does.
func SaleWindow(fs *v1alpha1.FlashSale) Window {
	sale := fs.DeepCopy()
	sale.SetDefaults()
	w := windowOf(sale)
	return Window{WarmFrom: w.warmFrom, Start: w.start, End: w.end, SettleFrom: w.settleFrom}
}
