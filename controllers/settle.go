package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
)

// reconcileAudit checks the conservation law every AuditInterval once buyers
// have been admitted, and writes the result to status. A settled sale is
// audited by reconcileSettle instead, which acts on the result.
func (r *FlashSaleReconciler) reconcileAudit(ctx context.Context, s *scope) error {
	st := &s.fs.Status
	if st.OpenedAt == nil || s.now.Before(st.OpenedAt.Time) || s.obs.Settled {
		return nil
	}
	if st.Audit != nil && s.now.Sub(st.Audit.Time.Time) < r.AuditInterval {
		keepStrandedDegraded(s)
		return nil
	}
	r.runAudit(ctx, s)
	return nil
}

// newAuditor is an auditor of sale through the connections c. Its repair
// stores a stream entry's order only once the replicas the sale's
// purchases wait for have the entry, as the worker does. stuckAfter is how
// long an entry may wait before the repair takes it over (0: the audit's
// default).
func (r *FlashSaleReconciler) newAuditor(sale *v1alpha1.FlashSale, c *conns, stuckAfter time.Duration) (*audit.Auditor, error) {
	return audit.New(audit.Config{
		Sale: sale, Redis: c.rdb, Orders: c.orders, Brokers: c.brokers,
		Clock: r.Clock, KafkaTimeout: 2 * r.DialTimeout, StuckAfter: stuckAfter, WaitReplicas: audit.DurabilityReplicas(sale),
	})
}

// auditSale runs one audit of the sale; when it cannot run, the
// StockConsistent condition says why.
func (r *FlashSaleReconciler) auditSale(ctx context.Context, s *scope) (*audit.Auditor, *audit.Report, error) {
	a, err := r.newAuditor(s.sale, s.c, 0)
	var rep *audit.Report
	if err == nil {
		rep, err = a.Run(ctx)
	}
	if err != nil {
		r.setCondition(s, v1alpha1.ConditionStockConsistent, metav1.ConditionUnknown, v1alpha1.ReasonAuditFailed, "audit failed: "+err.Error())
		return nil, nil, err
	}
	return a, rep, nil
}

// runAudit runs the audit and records it; a failing audit is reported in
// the StockConsistent condition but does not stop the sale. It returns nil
// when the audit could not run.
func (r *FlashSaleReconciler) runAudit(ctx context.Context, s *scope) *audit.Report {
	_, rep, err := r.auditSale(ctx, s)
	if err != nil {
		return nil
	}
	r.recordAudit(s, rep)
	return rep
}

// recordAudit writes a report to status: the figures, StockConsistent and
// OrdersStranded. An order only a dead-letter store holds is not conserved,
// whatever the law's sum says: it is nowhere a buyer or the shop can find it.
func (r *FlashSaleReconciler) recordAudit(s *scope, rep *audit.Report) {
	prev := s.fs.Status.Audit
	stranded := rep.StrandedOrders()
	as := &v1alpha1.AuditStatus{Time: metav1.Time{Time: s.now}, Conserved: rep.Conserved && stranded == 0, Lost: int64(rep.Lost), Stranded: stranded}
	if prev != nil {
		as.Abandoned = prev.Abandoned // what teardown archived stays told
	}
	for _, sk := range rep.SKUs {
		as.Initial += sk.Initial
		as.Accounted += sk.Accounted
		as.InFlight += sk.InFlight.Total
	}
	// The audit's failures name the stranded orders per SKU.
	if fails := rep.Failures(); len(fails) > 0 {
		as.Message = truncate(strings.Join(fails, "; "), 1024)
	}
	s.fs.Status.Audit = as
	law := fmt.Sprintf("initial %d = accounted %d (remaining + in flight %d + created + paid)", as.Initial, as.Accounted, as.InFlight)
	if as.Conserved && rep.Lost == 0 {
		r.setCondition(s, v1alpha1.ConditionStockConsistent, metav1.ConditionTrue, v1alpha1.ReasonConserved, law)
	} else {
		r.setCondition(s, v1alpha1.ConditionStockConsistent, metav1.ConditionFalse, v1alpha1.ReasonNotConserved,
			truncate(fmt.Sprintf("%s; %d lost; %s: run `flashsale audit` for the details", law, rep.Lost, as.Message), 1024))
	}
	var was int64
	if prev != nil {
		was = prev.Stranded
	}
	r.setStranded(s, was, stranded)
}

// podsLeft: the sale's pods are still terminating.
type podsLeft struct{ n int }

func (p *podsLeft) Error() string { return fmt.Sprintf("waiting for %d pods to terminate", p.n) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// reconcileSettle ends the sale once the payment window after the end has
// passed and nothing is left moving: the queue is empty, no order waits for
// payment or rollback, and no valid order waits only in a dead-letter store
// (stranded.go). Then the final audit goes into status and the sale is torn
// down per its policy.
func (r *FlashSaleReconciler) reconcileSettle(ctx context.Context, s *scope) error {
	sale := s.sale
	if s.now.Before(s.window.settleFrom) {
		return nil
	}
	if !s.obs.Settled {
		s.missing = []string{v1alpha1.ReasonDraining, fmt.Sprintf(
			"settling: %d orders in the queue, %d awaiting payment or rollback", s.live.total, s.live.created)}
		return nil
	}
	if r.holdStranded(s) {
		return nil
	}
	rep, err := r.settleAudit(ctx, s)
	if err != nil || !s.obs.Settled {
		return err
	}
	if err := r.abandonStranded(ctx, s, rep); err != nil {
		return err
	}
	summary, err := r.teardown(ctx, s.fs, sale, s.c, false)
	var wait *podsLeft
	if errors.As(err, &wait) {
		s.missing = []string{v1alpha1.ReasonDraining, "tearing down: " + wait.Error()}
		return nil
	}
	if err != nil {
		return depErr(v1alpha1.ReasonTeardownFailed, err)
	}
	r.pool.drop(sale.SaleKey())
	s.c = nil
	r.setCondition(s, v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown, summary)
	r.tornDown.Store(s.fs.UID, true)
	s.obs.TornDown = true
	return nil
}

// teardown deletes the sale's workloads and, per its policy, its Redis keys
// and topics, once what their dead-letter stores hold is archived in MySQL
// (poison messages; valid orders are the caller's business: abandonStranded).
// A valid order the stores hold that is neither in MySQL nor archived (one
// dead-lettered after the caller's audit) holds the teardown: the next
// reconcile audits again and stores it or reports it stranded. With force
// it is archived instead, as the cleanup gives up. It is idempotent: run
// again after a crash, it finishes the job.
//
// The keys go only once the sale's pods are gone: a worker still shutting
// down would otherwise re-create the stream it reads (and a seckill pod its
// heartbeat) right after they were deleted. force skips that wait, for a
// cleanup that is giving up on pods stuck terminating.
func (r *FlashSaleReconciler) teardown(ctx context.Context, fs, sale *v1alpha1.FlashSale, c *conns, force bool) (string, error) {
	if err := r.deleteOwned(ctx, fs); err != nil {
		return "", err
	}
	if !force {
		var pods corev1.PodList
		if err := r.APIReader.List(ctx, &pods, client.InNamespace(fs.Namespace), client.MatchingLabels{SaleLabel: fs.Name}); err != nil {
			return "", fmt.Errorf("list the sale's pods: %w", err)
		}
		if n := len(pods.Items); n > 0 {
			return "", &podsLeft{n: n}
		}
	}
	parts := []string{"workloads deleted"}
	// What the dead-letter stores hold goes to MySQL before they can go.
	kept, err := r.keepDeadLetters(ctx, sale, c, force)
	if err != nil {
		return "", err
	}
	if kept != "" {
		parts = append(parts, kept)
	}
	saleKey := sale.SaleKey()
	if sale.Spec.Teardown.RedisKeys == v1alpha1.CleanupKeep {
		parts = append(parts, "Redis keys kept")
	} else {
		n, err := teardown.DeleteKeys(ctx, c.rdb, saleKey)
		if err != nil {
			return "", depErr(v1alpha1.ReasonRedisUnavailable, err)
		}
		parts = append(parts, fmt.Sprintf("%d Redis keys deleted", n))
	}
	switch {
	case sale.Spec.Kafka == nil:
	case sale.Spec.Teardown.Topic == v1alpha1.CleanupKeep:
		parts = append(parts, "topics kept")
	default:
		if c.admin == nil {
			return "", depErr(v1alpha1.ReasonKafkaUnavailable, errors.New("no Kafka connection to delete the topics with"))
		}
		if err := teardown.DeleteTopics(c.admin, saleKey); err != nil {
			return "", depErr(v1alpha1.ReasonKafkaUnavailable, err)
		}
		parts = append(parts, "topics "+keys.Topic(saleKey)+" and "+keys.DeadLetterTopic(saleKey)+" deleted")
	}
	return strings.Join(parts, "; "), nil
}

// deleteOwned deletes the objects the sale owns. Owner references would let
// the garbage collector do it, but only eventually, and the sale is Ended
// only once they are gone. It reads them through APIReader: once per sale,
// and the cache holds no informer for most of these kinds (a cached Get
// would start one, cluster-wide, for Secrets too).
func (r *FlashSaleReconciler) deleteOwned(ctx context.Context, fs *v1alpha1.FlashSale) error {
	r.applied.forget(fs.SaleKey())
	for _, o := range ownedObjects(fs) {
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("read %T %s: %w", o, o.GetName(), err)
		}
		// Only what this sale controls: a user's own Secret that happens to
		// share a name is left alone.
		if !metav1.IsControlledBy(o, fs) {
			continue
		}
		if err := r.Delete(ctx, o, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}
