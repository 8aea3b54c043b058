package controllers

// The delete path. A FlashSale deleted after buyers were admitted (live,
// paused or draining) still has orders on their way: answered 202 and
// waiting in the order streams or the topic, or created in MySQL awaiting a
// payment that can no longer come (the pay endpoint goes with the sale). Its
// finalizer therefore, one reconcile at a time:
//
//  1. closes purchases (the seckill pods answer 410 ENDED) but leaves the
//     workloads running, so the worker keeps draining and payments stay open;
//  2. waits for the queue to drain, for at most half of CleanupTimeout after
//     the deletion (the other half is for the pods to stop and the teardown
//     to be retried), and not at all when no worker is there to drain it;
//  3. deletes the workloads and waits for their pods to be gone, so that the
//     salvage reads a pipeline that no longer moves;
//  4. salvages what did not drain: the audit's repair stores the orders stuck
//     in the streams and the valid dead letters in MySQL; what it cannot
//     store is archived in seckill_dead_letter; then every order still
//     created is cancelled and its unit returned;
//  5. deletes the keys and topics as the normal teardown does.
//
// A sale that never went live has no order and is torn down at once. When a
// dependency stays unreachable past CleanupTimeout the finalizer gives up:
// only the Kubernetes objects are deleted, the orders stay where they are for
// a human, and an Event says so; a namespace deletion never hangs for ever.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/lag"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
)

const (
	// deletePoll is how often a deleted sale is looked at while it drains
	// or its pods terminate.
	deletePoll = 2 * time.Second
	// drainNoteEvery bounds the Draining Events of one deleted sale: the
	// count is logged at every poll, and told in an Event this often.
	drainNoteEvery = 30 * time.Second
)

// drainNotes holds, by sale UID, when a deleted sale's last Draining Event
// was recorded. A package variable rather than a reconciler field: only the
// delete path uses it, and an entry lives from the first drain poll to the
// release of the finalizer.
var drainNotes sync.Map

// deletion is one reconcile of a deleted sale.
type deletion struct {
	fs *v1alpha1.FlashSale
	// sale is fs with the defaults filled in.
	sale *v1alpha1.FlashSale
	c    *conns
	now  time.Time
	// waited is how long ago the sale was deleted; timeout is
	// CleanupTimeout, after which the cleanup gives up.
	waited, timeout time.Duration
}

// draining: the queue still holds orders a worker is draining.
type draining struct{ n int64 }

func (d *draining) Error() string {
	return fmt.Sprintf("draining before teardown: %d orders in the queue", d.n)
}

// reconcileDelete cleans up a deleted sale (see the top of this file), then
// releases its finalizer.
func (r *FlashSaleReconciler) reconcileDelete(ctx context.Context, fs *v1alpha1.FlashSale, now time.Time) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(fs, Finalizer) {
		return ctrl.Result{}, nil
	}
	if !apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionTornDown) {
		if res, waiting := r.cleanUpDeleted(ctx, fs, now); waiting {
			return res, nil
		}
	}
	return ctrl.Result{}, r.releaseDeleted(ctx, fs)
}

// cleanUpDeleted runs one step of the cleanup. waiting says to look again
// after res; otherwise the cleanup is done or given up, and the finalizer
// may go.
func (r *FlashSaleReconciler) cleanUpDeleted(ctx context.Context, fs *v1alpha1.FlashSale, now time.Time) (res ctrl.Result, waiting bool) {
	log := ctrl.LoggerFrom(ctx)
	sale := fs.DeepCopy()
	sale.SetDefaults()
	d := &deletion{fs: fs, sale: sale, now: now, waited: now.Sub(fs.DeletionTimestamp.Time), timeout: r.CleanupTimeout}
	var summary string
	var err error
	if b := r.pool.get(sale.SaleKey()); b != nil {
		// The connections the operator holds: a sale deleted with its
		// namespace has lost its Secrets already.
		d.c = b.c
	} else {
		d.c, err = r.connect(ctx, sale, now)
	}
	if err == nil {
		summary, err = r.cleanUp(ctx, d)
	}
	var drain *draining
	var pods *podsLeft
	switch {
	case errors.As(err, &drain):
		log.Info("Draining before teardown", "orders", drain.n, "gives up after", (r.drainBudget() - d.waited).Round(time.Second))
		return ctrl.Result{RequeueAfter: deletePoll}, true
	case errors.As(err, &pods):
		log.Info("Waiting for the sale's pods to terminate before deleting its keys", "pods", pods.n)
		return ctrl.Result{RequeueAfter: deletePoll}, true
	case err != nil:
		return r.cleanupFailed(ctx, d, err)
	}
	r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonCleanedUp, "Delete", "Cleaned up: %s", summary)
	return ctrl.Result{}, false
}

// cleanUp runs the steps of the cleanup that are due and says what it did.
func (r *FlashSaleReconciler) cleanUp(ctx context.Context, d *deletion) (string, error) {
	var parts []string
	opened, err := r.wasOpened(ctx, d)
	if err != nil {
		return "", err
	}
	if opened {
		// Buyers were admitted: orders may be on their way.
		if err := r.drain(ctx, d); err != nil {
			return "", err
		}
		if err := r.stopPipeline(ctx, d); err != nil {
			return "", err
		}
		salvaged, err := r.salvage(ctx, d)
		if err != nil {
			return "", err
		}
		parts = append(parts, salvaged...)
	}
	summary, err := r.teardown(ctx, d.fs, d.sale, d.c, d.force())
	if err != nil {
		return "", err
	}
	return strings.Join(append(parts, summary), "; "), nil
}

// wasOpened says whether buyers may have been admitted: the status says
// the gate opened, or (the operator may have opened the gate in Redis and
// died before its status patch) a SKU's (or a bucket's) order stream or
// orders hash is not empty. Reading Redis when status says nothing costs two
// calls per bucket, and only for sales deleted before their status showed
// them live.
func (r *FlashSaleReconciler) wasOpened(ctx context.Context, d *deletion) (bool, error) {
	if d.fs.Status.OpenedAt != nil {
		return true, nil
	}
	pipe := d.c.rdb.Pipeline()
	var cmds []*redis.IntCmd
	for _, sku := range d.sale.Spec.SKUs {
		// Every bucket of a split SKU: each admits orders into its own stream.
		for _, k := range keys.Buckets(d.sale.SaleKey(), sku.ID, sku.BucketCount()) {
			cmds = append(cmds, pipe.XLen(ctx, k.Stream), pipe.HLen(ctx, k.Orders))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, depErr(v1alpha1.ReasonRedisUnavailable, fmt.Errorf("look for orders of the deleted sale: %w", err))
	}
	for _, c := range cmds {
		if c.Val() > 0 {
			return true, nil
		}
	}
	return false, nil
}

// force: CleanupTimeout has passed; pods still terminating are not waited
// for any more.
func (d *deletion) force() bool { return d.waited >= d.timeout }

// drainBudget is how long after its deletion a live sale waits for its
// queue to drain: half of CleanupTimeout, so that the pods' termination (30
// s of grace) and a retried teardown still fit in the other half.
func (r *FlashSaleReconciler) drainBudget() time.Duration { return r.CleanupTimeout / 2 }

// drain closes purchases, then returns a *draining while the queue (the
// streams' backlog and the consumer group's lag) still holds orders, a
// worker is there to drain them and the budget lasts.
func (r *FlashSaleReconciler) drain(ctx context.Context, d *deletion) error {
	if err := switches.SetClosed(ctx, d.c.rdb, d.sale.SaleKey(), true); err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	if d.waited >= r.drainBudget() {
		return nil // what is left is salvaged
	}
	runs, err := r.workerRuns(ctx, d.fs)
	if err != nil || !runs {
		return err
	}
	f := &liveFigures{}
	// A topic deleted by hand has no lag to wait for; the streams still do.
	if err := readQueueLag(ctx, d.c, d.sale, f); err != nil && !errors.Is(err, lag.ErrNoTopic) {
		return err
	}
	if f.total == 0 {
		return nil
	}
	r.noteDraining(d, f.total)
	return &draining{n: f.total}
}

// workerRuns: the worker Deployment is there, not being deleted, with a pod
// available. Without one (deleted with its namespace, or crashing) nothing
// drains the queue and waiting would only spend the budget.
func (r *FlashSaleReconciler) workerRuns(ctx context.Context, fs *v1alpha1.FlashSale) (bool, error) {
	var dep appsv1.Deployment
	err := r.Get(ctx, types.NamespacedName{Namespace: fs.Namespace, Name: Name(fs, ComponentWorker)}, &dep)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read worker Deployment: %w", err)
	}
	return dep.DeletionTimestamp.IsZero() && dep.Status.AvailableReplicas > 0, nil
}

// noteDraining tells in an Event, at most every drainNoteEvery, what the
// deleted sale is waiting for.
func (r *FlashSaleReconciler) noteDraining(d *deletion, n int64) {
	if last, ok := drainNotes.Load(d.fs.UID); ok && d.now.Sub(last.(time.Time)) < drainNoteEvery {
		return
	}
	drainNotes.Store(d.fs.UID, d.now)
	r.event(d.fs, corev1.EventTypeNormal, v1alpha1.ReasonDraining, "Delete",
		"Draining before teardown: %d orders in the queue; purchases are closed, the worker drains for up to %s after the deletion",
		n, r.drainBudget())
}

// stopPipeline deletes the workloads and, until CleanupTimeout, returns a
// *podsLeft while their pods terminate. The salvage must read a pipeline
// that no longer moves: an order a worker stored after it would stay
// created with nobody left to cancel it.
func (r *FlashSaleReconciler) stopPipeline(ctx context.Context, d *deletion) error {
	if err := r.deleteOwned(ctx, d.fs); err != nil {
		return err
	}
	if d.force() {
		return nil
	}
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(d.fs.Namespace), client.MatchingLabels{SaleLabel: d.fs.Name}); err != nil {
		return fmt.Errorf("list the sale's pods: %w", err)
	}
	if n := len(pods.Items); n > 0 {
		return &podsLeft{n: n}
	}
	return nil
}

// salvage keeps every order that did not drain and ends every order that
// can no longer be paid, before teardown deletes the stores. What could not
// drain is told in a Warning Event; the rest of what it did goes into the
// CleanedUp Event. An error means the stores must stay (the next reconcile
// tries again).
func (r *FlashSaleReconciler) salvage(ctx context.Context, d *deletion) ([]string, error) {
	u, err := r.storeUndrained(ctx, d)
	if err != nil {
		return nil, err
	}
	p, err := r.cancelUnpaid(ctx, d)
	if err != nil {
		return nil, err
	}
	var parts []string
	if u.orders > 0 || u.poison > 0 {
		r.event(d.fs, corev1.EventTypeWarning, v1alpha1.ReasonOrdersUndrained, "Delete", "%s", u)
		parts = append(parts, fmt.Sprintf("%d undrained orders stored, %d archived", u.stored, u.kept()))
	}
	if p.Cancelled > 0 || p.Returned > 0 {
		// The choice, told in the CleanedUp Event: the rollback's
		// compare-and-set without its deadline (rollback.CancelAll).
		parts = append(parts, fmt.Sprintf("%d unpaid orders cancelled and %d units returned "+
			"(the rollback's created → cancelled compare-and-set without waiting for the deadline: "+
			"the pay endpoint goes with the sale; a payment that won first stays paid)", p.Cancelled, p.Returned))
	}
	return parts, nil
}

// undrained is what the salvage found not yet in MySQL.
type undrained struct {
	// orders are valid orders not in MySQL (in a stream, behind the
	// consumer group, or a dead letter); stored of them are now.
	orders, stored int64
	// poison are messages that are no valid order.
	poison int64
}

// kept are the undrained orders archived instead of stored.
func (u undrained) kept() int64 { return max(u.orders-u.stored, 0) }

// String is the Warning Event's text.
func (u undrained) String() string {
	var parts []string
	if u.orders > 0 {
		parts = append(parts, fmt.Sprintf("%d orders could not be drained before teardown: %d stored in MySQL by the audit's repair "+
			"(then cancelled with the other unpaid orders), %d archived in seckill_dead_letter", u.orders, u.stored, u.kept()))
	}
	if u.poison > 0 {
		parts = append(parts, fmt.Sprintf("%d poison messages (no valid order) archived in seckill_dead_letter", u.poison))
	}
	return strings.Join(parts, "; ")
}

// storeUndrained stores what did not drain: the audit (every stream entry
// counts as stuck, the workers are gone) and its repair insert the orders
// of the streams and the valid dead letters into MySQL; the rest (orders
// behind the consumer group, orders MySQL refuses, poison) is archived in
// seckill_dead_letter, which outlives the sale.
func (r *FlashSaleReconciler) storeUndrained(ctx context.Context, d *deletion) (undrained, error) {
	var u undrained
	// Every stream entry counts as stuck: the workers are gone.
	a, err := r.newAuditor(d.sale, d.c, time.Nanosecond)
	if err != nil {
		return u, err
	}
	rep, err := a.Run(ctx)
	if err != nil {
		return u, fmt.Errorf("audit before teardown: %w", err)
	}
	for _, sk := range rep.SKUs {
		u.orders += sk.InFlight.Total
	}
	for _, f := range rep.Findings {
		if f.Kind == audit.KindPoison {
			u.poison++
		}
	}
	if u.orders == 0 && u.poison == 0 {
		return u, nil
	}
	// A sale warmed by an older operator has the schema without
	// seckill_dead_letter; the migrations are idempotent.
	if _, err := orderdb.Migrate(ctx, d.c.db); err != nil {
		return u, depErr(v1alpha1.ReasonMySQLUnavailable, err)
	}
	repairs, err := a.Repair(ctx, rep)
	if err != nil {
		// Not fatal: what was not stored is archived below.
		ctrl.LoggerFrom(ctx).Info("Storing undrained orders failed in part; archiving them", "error", err.Error())
	}
	u.stored = inserted(repairs)
	if _, err := a.Archive(ctx, rep, true); err != nil {
		return u, fmt.Errorf("archive undrained orders in seckill_dead_letter: %w", err)
	}
	return u, nil
}

// inserted counts the orders the repair stored.
func inserted(repairs []audit.Repair) int64 {
	seen := map[string]bool{}
	for _, rp := range repairs {
		if rp.Action == audit.ActionInsert && !rp.Failed {
			seen[rp.OrderNo] = true
		}
	}
	return int64(len(seen))
}

// cancelUnpaid cancels every order still created and returns its unit
// (rollback.CancelAll): nobody can pay it once the sale is gone.
func (r *FlashSaleReconciler) cancelUnpaid(ctx context.Context, d *deletion) (rollback.Pass, error) {
	clk, ok := r.Clock.(clock.Clock)
	if !ok {
		clk = clock.RealClock{}
	}
	rb, err := rollback.New(rollback.Config{SaleKey: d.sale.SaleKey(), Redis: d.c.rdb, Orders: d.c.orders, Buckets: orderstate.BucketsOf(d.sale), Clock: clk})
	if err != nil {
		return rollback.Pass{}, err
	}
	p, err := rb.CancelAll(ctx)
	if err != nil {
		return p, fmt.Errorf("cancel unpaid orders: %w", err)
	}
	return p, nil
}

// cleanupFailed retries a failed cleanup until CleanupTimeout (a broken
// configuration gives up at once: nobody can reach the stores), then gives
// up with an Event naming what was left behind.
func (r *FlashSaleReconciler) cleanupFailed(ctx context.Context, d *deletion, err error) (ctrl.Result, bool) {
	log := ctrl.LoggerFrom(ctx)
	var cfg *ConfigError
	if !errors.As(err, &cfg) && d.waited < d.timeout {
		r.event(d.fs, corev1.EventTypeWarning, v1alpha1.ReasonTeardownFailed, "Delete",
			"Cleanup failed, retrying (gives up %s after deletion): %v", d.timeout, err)
		log.Info("Cleanup failed, retrying", "error", err.Error())
		return ctrl.Result{RequeueAfter: min(10*time.Second, d.timeout-d.waited)}, true
	}
	if derr := r.deleteOwned(ctx, d.fs); derr != nil {
		log.Info("Could not delete owned objects; the garbage collector will", "error", derr.Error())
	}
	saleKey := d.sale.SaleKey()
	left := "Redis keys " + strings.Join(keys.Patterns(saleKey), " ")
	if d.sale.Spec.Kafka != nil {
		left += " and topics " + keys.Topic(saleKey) + ", " + keys.DeadLetterTopic(saleKey)
	}
	if d.fs.Status.OpenedAt != nil {
		left += " (orders not in MySQL yet are still there: run `flashsale audit --repair` against them)"
	}
	r.event(d.fs, corev1.EventTypeWarning, v1alpha1.ReasonCleanupAbandoned, "Delete",
		"Gave up cleaning up after %s: %v; left behind: %s", d.waited.Round(time.Second), err, left)
	return ctrl.Result{}, false
}

// releaseDeleted forgets the sale and removes its finalizer.
func (r *FlashSaleReconciler) releaseDeleted(ctx context.Context, fs *v1alpha1.FlashSale) error {
	r.pool.drop(fs.SaleKey())
	r.tornDown.Delete(fs.UID)
	drainNotes.Delete(fs.UID)
	r.plans.m.Delete(fs.UID)
	r.dropNotifications(fs) // before forget: a drop stops the attempts that count
	r.Metrics.forget(fs)
	patch := client.MergeFrom(fs.DeepCopy())
	controllerutil.RemoveFinalizer(fs, Finalizer)
	if err := r.Patch(ctx, fs, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer: %w", err)
	}
	return nil
}
