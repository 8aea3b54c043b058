package controllers

import "context"

// reconcilePlan sets the Planned condition (stub: see issue 15's plan part).
func (r *FlashSaleReconciler) reconcilePlan(_ context.Context, _ *scope) {}
