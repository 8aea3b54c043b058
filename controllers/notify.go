package controllers

// reconcileNotifications keeps the sale's outbox (stub: see issue 15's notifications part).
func (r *FlashSaleReconciler) reconcileNotifications(_ *scope, _ Decision) {}
