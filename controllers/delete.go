package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// reconcileDelete cleans up a deleted sale the same way teardown does. When
// a dependency stays unreachable past CleanupTimeout (or its Secret is gone
// and the operator holds no connection) it gives up with an Event naming
// what was left behind, so a namespace deletion never hangs for ever.
func (r *FlashSaleReconciler) reconcileDelete(ctx context.Context, fs *v1alpha1.FlashSale, now time.Time) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(fs, Finalizer) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)
	sale := fs.DeepCopy()
	sale.SetDefaults()
	saleKey := sale.SaleKey()

	if !apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionTornDown) {
		var c *conns
		var err error
		if b := r.pool.get(saleKey); b != nil {
			c = b.c
		} else {
			c, err = r.connect(ctx, sale, now)
		}
		var summary string
		waited := now.Sub(fs.DeletionTimestamp.Time)
		if err == nil {
			summary, err = r.teardown(ctx, fs, sale, c, waited >= r.CleanupTimeout)
		}
		var wait *podsLeft
		if errors.As(err, &wait) {
			log.Info("Waiting for the sale's pods to terminate before deleting its keys", "pods", wait.n)
			return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
		}
		if err != nil {
			var cfg *ConfigError
			if !errors.As(err, &cfg) && waited < r.CleanupTimeout {
				r.event(fs, corev1.EventTypeWarning, v1alpha1.ReasonTeardownFailed, "Delete",
					"Cleanup failed, retrying (gives up %s after deletion): %v", r.CleanupTimeout, err)
				log.Info("Cleanup failed, retrying", "error", err.Error())
				return ctrl.Result{RequeueAfter: min(10*time.Second, r.CleanupTimeout-waited)}, nil
			}
			if derr := r.deleteOwned(ctx, fs); derr != nil {
				log.Info("Could not delete owned objects; the garbage collector will", "error", derr.Error())
			}
			left := "Redis keys " + strings.Join(keys.Patterns(saleKey), " ")
			if sale.Spec.Kafka != nil {
				left += " and topics " + keys.Topic(saleKey) + ", " + keys.DeadLetterTopic(saleKey)
			}
			r.event(fs, corev1.EventTypeWarning, v1alpha1.ReasonCleanupAbandoned, "Delete",
				"Gave up cleaning up after %s: %v; left behind: %s", waited.Round(time.Second), err, left)
		} else {
			r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonCleanedUp, "Delete", "Cleaned up: %s", summary)
		}
	}
	r.pool.drop(saleKey)
	r.tornDown.Delete(fs.UID)
	r.Metrics.forget(fs)
	patch := client.MergeFrom(fs.DeepCopy())
	controllerutil.RemoveFinalizer(fs, Finalizer)
	if err := r.Patch(ctx, fs, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}
