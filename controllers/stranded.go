package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// Stranded orders are valid orders that only a dead-letter topic or stream
// holds: MySQL refused their row for good (a constraint, a value too long),
// and the pipeline gave up on them after its retries. Teardown would delete
// those stores, and with them the only copy of orders buyers were told 202.
// So a settled sale with stranded orders does not tear down under
// spec.teardown.strandedOrders: Wait (the default): it stays Draining with
// OrdersStranded=True, and every AuditInterval the operator audits again and
// repairs (inserts the dead letters), which succeeds once whatever MySQL
// refused is fixed. Under Abandon they are archived in the MySQL table
// seckill_dead_letter, told in an Event, and the sale ends without them.
// Messages that are not orders at all are always archived there before
// teardown deletes the stores (keepDeadLetters).

// strandedMessage says what stranded orders mean and what to do.
func strandedMessage(sale *v1alpha1.FlashSale, n int64) string {
	msg := fmt.Sprintf("%d valid orders wait only in a dead-letter store (MySQL refused their rows; `flashsale audit` shows why)", n)
	if sale.Spec.Teardown.StrandedOrders == v1alpha1.StrandedAbandon {
		return msg + ". spec.teardown.strandedOrders is Abandon: unless stored before the sale settles, they are archived in the MySQL table seckill_dead_letter and the sale ends without them"
	}
	return msg + ". The sale does not tear down until they are in MySQL: fix what MySQL refuses and the operator stores them at its next audit " +
		"(or run `flashsale audit --repair`), or set spec.teardown.strandedOrders: Abandon to archive them in seckill_dead_letter and end the sale"
}

// setStranded records that the audit found n orders stranded (was before):
// the OrdersStranded condition, Degraded, and a Warning Event each time the
// count changes (not every reconcile), a Normal one when none are left.
func (r *FlashSaleReconciler) setStranded(s *scope, was, n int64) {
	if n > 0 {
		msg := strandedMessage(s.sale, n)
		setStrandedCondition(s, metav1.ConditionTrue, v1alpha1.ReasonOrdersStranded, msg)
		keepStrandedDegraded(s)
		if n != was {
			r.event(s.fs, corev1.EventTypeWarning, v1alpha1.ReasonOrdersStranded, "Audit", "%s", msg)
		}
		return
	}
	if was > 0 || apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionOrdersStranded) != nil {
		setStrandedCondition(s, metav1.ConditionFalse, v1alpha1.ReasonNoneStranded, "no order waits only in a dead-letter store")
	}
	if was > 0 {
		r.event(s.fs, corev1.EventTypeNormal, v1alpha1.ReasonNoneStranded, "Audit",
			"The %d stranded orders are in MySQL now; none waits only in a dead-letter store", was)
	}
}

// setStrandedCondition sets OrdersStranded without setCondition's Events:
// True is the bad state here, and setStranded tells each count once.
func setStrandedCondition(s *scope, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&s.fs.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionOrdersStranded, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: s.fs.Generation, LastTransitionTime: metav1.NewTime(s.now),
	})
}

// keepStrandedDegraded keeps the sale Degraded, between audits too, while
// the last audit found orders stranded (unless a step found worse).
func keepStrandedDegraded(s *scope) {
	a := s.fs.Status.Audit
	if a == nil || a.Stranded == 0 || len(s.degraded) > 0 {
		return
	}
	s.degraded = []string{v1alpha1.ReasonDeadLetters, fmt.Sprintf(
		"%d valid orders wait in the dead-letter topic or stream: see the runbook (flashsale audit --repair stores them)", a.Stranded)}
}

// holdStranded keeps a settled sale Draining while the last audit, not yet
// AuditInterval old, found orders stranded under Wait: the next audit (and
// the repair with it) is not due yet.
func (r *FlashSaleReconciler) holdStranded(s *scope) bool {
	a := s.fs.Status.Audit
	if a == nil || a.Stranded == 0 || s.sale.Spec.Teardown.StrandedOrders == v1alpha1.StrandedAbandon ||
		s.now.Sub(a.Time.Time) >= r.AuditInterval {
		return false
	}
	keepStrandedDegraded(s)
	msg := strandedMessage(s.sale, a.Stranded)
	if c := apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionOrdersStranded); c != nil && c.Status == metav1.ConditionTrue {
		msg = c.Message
	}
	s.obs.Settled = false
	s.missing = []string{v1alpha1.ReasonOrdersStranded, msg}
	return true
}

// settleAudit is the final audit of a settled sale, written to status.
// With orders stranded under Wait it repairs (stores them in MySQL if MySQL
// takes them now) and audits again. The sale is then not settled any more
// (s.obs.Settled is false): orders just stored wait for their payment or
// the rollback, orders still stranded for a human.
func (r *FlashSaleReconciler) settleAudit(ctx context.Context, s *scope) (*audit.Report, error) {
	a, rep, err := r.auditSale(ctx, s)
	if err != nil {
		// Teardown waits: without the audit, what the dead-letter stores
		// hold is unknown.
		return nil, depErr(v1alpha1.ReasonAuditFailed, fmt.Errorf("final audit: %w", err))
	}
	if rep.StrandedOrders() == 0 || s.sale.Spec.Teardown.StrandedOrders == v1alpha1.StrandedAbandon {
		r.recordAudit(s, rep)
		return rep, nil
	}
	repairs, rerr := a.Repair(ctx, rep)
	stored := inserted(repairs)
	if stored > 0 {
		if after, err := a.Run(ctx); err == nil {
			rep = after
		}
	}
	r.recordAudit(s, rep)
	s.obs.Settled = false
	if stored > 0 {
		s.missing = []string{v1alpha1.ReasonDraining, fmt.Sprintf(
			"stored %d stranded orders in MySQL: they settle (payment or rollback) before the sale ends", stored)}
		return rep, nil
	}
	msg := strandedMessage(s.sale, rep.StrandedOrders())
	if rerr != nil {
		ctrl.LoggerFrom(ctx).Info("Stranded orders not stored yet", "error", rerr.Error())
		msg = truncate(msg+". The operator's last try: "+rerr.Error(), 2048)
		setStrandedCondition(s, metav1.ConditionTrue, v1alpha1.ReasonOrdersStranded, msg)
	}
	s.missing = []string{v1alpha1.ReasonOrdersStranded, msg}
	return rep, nil
}

// abandonStranded, with the final audit rep of a sale that is to be torn
// down, archives its stranded orders under Abandon (told once in a Warning
// Event and in status.audit.abandoned); without any, it records that none
// is stranded.
func (r *FlashSaleReconciler) abandonStranded(ctx context.Context, s *scope, rep *audit.Report) error {
	if rep.StrandedOrders() == 0 {
		setStrandedCondition(s, metav1.ConditionFalse, v1alpha1.ReasonNoneStranded, "no order waits only in a dead-letter store")
		return nil
	}
	if _, err := r.keepDeadLetters(ctx, s.sale, s.c, true); err != nil {
		return err
	}
	saleKey := s.sale.SaleKey()
	counts, err := s.c.orders.CountDeadLetters(ctx, saleKey)
	if err != nil {
		return depErr(v1alpha1.ReasonMySQLUnavailable, err)
	}
	as := s.fs.Status.Audit
	prev := as.Abandoned
	as.Abandoned = counts.Orders
	msg := fmt.Sprintf("%d stranded orders abandoned (spec.teardown.strandedOrders: Abandon): they are archived in the MySQL table "+
		"seckill_dead_letter (sale = '%s', valid = 1), not in seckill_order, and the sale ends without them", as.Abandoned, saleKey)
	setStrandedCondition(s, metav1.ConditionFalse, v1alpha1.ReasonOrdersAbandoned, msg)
	if as.Abandoned != prev {
		r.event(s.fs, corev1.EventTypeWarning, v1alpha1.ReasonOrdersAbandoned, "Teardown", "%s", msg)
	}
	return nil
}

// keepDeadLetters archives in seckill_dead_letter what the sale's
// dead-letter stores hold that is not an order (and, with includeValid, the
// valid orders MySQL lacks) before teardown deletes them. It says what it
// kept, for the TornDown message; an error means the stores must stay:
// without includeValid, a valid order neither in MySQL nor archived is such
// an error (reason OrdersStranded).
func (r *FlashSaleReconciler) keepDeadLetters(ctx context.Context, sale *v1alpha1.FlashSale, c *conns, includeValid bool) (string, error) {
	// A sale warmed by an older operator has the schema without the table.
	if _, err := orderdb.Migrate(ctx, c.db); err != nil {
		return "", depErr(v1alpha1.ReasonMySQLUnavailable, err)
	}
	a, err := r.newAuditor(sale, c, 0)
	if err != nil {
		return "", err
	}
	repairs, err := a.Archive(ctx, nil, includeValid)
	var unkept *audit.UnkeptOrders
	if errors.As(err, &unkept) {
		// Orders the last audit did not see: not deleted, not abandoned
		// behind the policy's back. The next reconcile audits again.
		return "", depErr(v1alpha1.ReasonOrdersStranded, fmt.Errorf("teardown held: %w", err))
	}
	if err != nil {
		return "", depErr(v1alpha1.ReasonTeardownFailed, fmt.Errorf("keep the dead letters before teardown: %w", err))
	}
	n := 0
	for _, rp := range repairs {
		if rp.Action == audit.ActionArchive {
			n++
		}
	}
	if n == 0 {
		return "", nil
	}
	return fmt.Sprintf("%d dead letters kept in MySQL table seckill_dead_letter", n), nil
}
