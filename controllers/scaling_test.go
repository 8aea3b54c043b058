package controllers_test

import (
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
)

// TestWorkersScaleWithLag: a backlog the workers have not taken yet scales
// the worker Deployment to one pod per lagThreshold orders; once the queue
// is drained it comes back to its floor.
func TestWorkersScaleWithLag(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) { fs.Spec.Worker.LagThreshold = 5 })
	warmAndOpen(t, e, false)
	if n := *e.deployment(controllers.ComponentWorker).Spec.Replicas; n != 1 {
		t.Fatalf("worker replicas %d before any order, want the floor 1", n)
	}

	// No worker runs yet: 12 orders wait in the streams.
	shop := e.startSeckill()
	for _, u := range users("buyer", 12) {
		if a := shop.buy(u, "1001"); a.Status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", a.Status, a.Error)
		}
	}
	e.reconcile()
	if lag := e.get().Status.QueueLag; lag != 12 {
		t.Fatalf("queue lag %d, want the 12 waiting orders", lag)
	}
	if n := *e.deployment(controllers.ComponentWorker).Spec.Replicas; n != 3 {
		t.Fatalf("worker replicas %d with a backlog of 12 at 5 per pod, want 3", n)
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonScaled, "Order workers 1 → 3", "queue lag 12")

	e.startWorker()
	e.eventually("the queue to drain", func() bool { return e.get().Status.QueueLag == 0 })
	if n := *e.deployment(controllers.ComponentWorker).Spec.Replicas; n != 1 {
		t.Fatalf("worker replicas %d once drained, want the floor 1", n)
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonScaled, "Order workers 3 → 1")
}
