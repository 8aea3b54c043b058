package controllers_test

import (
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// warmAndOpen brings a sale created by e.sale to Active.
func warmAndOpen(t *testing.T, e *env, kafka bool) (stopWorker func()) {
	t.Helper()
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.markReady()
	stopWorker = func() {}
	if kafka {
		stopWorker = e.startWorker()
	}
	e.eventually("the go-live gate to open", func() bool { return e.get().Status.OpenedAt != nil })
	e.clk.SetTime(e.t0.Add(10 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseActive)
	return stopWorker
}

func (e *env) gone() bool {
	var fs v1alpha1.FlashSale
	err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName}, &fs)
	return apierrors.IsNotFound(err)
}

func TestDeleteMidSaleCleansUp(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.sale(nil)
	stopWorker := warmAndOpen(t, e, true)
	shop := e.startSeckill()
	for _, u := range users("buyer", 5) {
		if a := shop.buy(u, "1001"); a.Status != 202 {
			t.Fatalf("purchase: %d %s", a.Status, a.Error)
		}
	}
	// Drained before the delete: the five orders wait for payment in MySQL
	// (TestDeleteMidSpikeDrainsFirst deletes with the queue full).
	e.eventually("5 orders stored", func() bool { return e.get().Status.Sold == 5 && e.get().Status.QueueLag == 0 })
	// A pod of the sale still terminating: its keys must wait for it.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sale-worker-x", Namespace: e.ns, Labels: map[string]string{controllers.SaleLabel: saleName}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "flashsale:test"}}},
	}
	if err := e.k8s.Create(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	if res := e.reconcile(); res.RequeueAfter <= 0 || e.gone() {
		t.Fatalf("did not wait for the terminating pod (requeue %s)", res.RequeueAfter)
	}
	if n := e.rdb.Exists(e.ctx, keys.ForSKU(e.ns+"/"+saleName, "1001").Stock).Val(); n != 1 {
		t.Fatal("keys deleted while a pod of the sale still runs")
	}
	stopWorker()
	if err := e.k8s.Delete(e.ctx, pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	if !e.gone() {
		t.Fatal("FlashSale still there: the finalizer was not released")
	}
	// Nobody can pay them once the sale is gone: they are cancelled.
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonCleanedUp, "5 unpaid orders cancelled and 5 units returned", "Redis keys deleted", "topics")
	admin, err := sarama.NewClusterAdmin(e.brokers(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	assertTornDown(t, e, admin)
}

// TestDeleteWhenRedisIsGone: the finalizer retries while Redis is
// unreachable, then gives up after the cleanup timeout with an Event naming
// what was left behind, so the namespace deletion does not hang.
func TestDeleteWhenRedisIsGone(t *testing.T) {
	rdb := testutil.Redis(t)
	proxy := testutil.TCPProxy(t, rdb.Options().Addr)
	e := newEnv(t, envOpts{redisAddr: proxy.Addr()})
	e.sale(nil)
	warmAndOpen(t, e, false)

	proxy.Cut()
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	// The operator's clock agrees with the API server's: the deletion
	// happened just now.
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	res := e.reconcile()
	if e.gone() {
		t.Fatal("gave up at once although the timeout has not passed")
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 10*time.Second {
		t.Fatalf("RequeueAfter %s while Redis is down, want a retry within 10s", res.RequeueAfter)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonTeardownFailed, "retrying")

	// Past the timeout (measured from the deletion timestamp) it gives up.
	e.clk.SetTime(e.get().DeletionTimestamp.Add(controllers.DefaultCleanupTimeout + time.Second))
	e.reconcile()
	if !e.gone() {
		t.Fatal("FlashSale still there after the cleanup timeout")
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonCleanupAbandoned, "left behind", "fs:{"+e.ns+"/"+saleName+"}")
	// The Kubernetes objects are removed all the same.
	var cm corev1.ConfigMap
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-config"}, &cm); !apierrors.IsNotFound(err) {
		t.Fatalf("ConfigMap left behind: %v", err)
	}
	// What was left behind really is there, for a human to clean.
	if n := rdb.Exists(e.ctx, keys.ForSKU(e.ns+"/"+saleName, "1001").Stock).Val(); n != 1 {
		t.Fatal("expected the stock key to be left behind")
	}
}

// TestConfigErrorFailsAndRecovers: a missing Secret puts the sale into
// Failed with a condition and an Event that name it; creating the Secret
// brings the sale back.
func TestConfigErrorFailsAndRecovers(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.MySQL.DSNSecretRef = &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "orders-db"}, Key: "dsn"}
	})
	res := e.reconcile()
	e.wantPhase(v1alpha1.PhaseFailed)
	e.wantCond(v1alpha1.ConditionConfigValid, metav1.ConditionFalse, v1alpha1.ReasonSecretMissing)
	if msg := e.cond(v1alpha1.ConditionConfigValid).Message; !strings.Contains(msg, "spec.mysql.dsnSecretRef") || !strings.Contains(msg, "orders-db") {
		t.Fatalf("condition message %q does not name the field and the Secret", msg)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonSecretMissing, "orders-db")
	if res.RequeueAfter <= 0 {
		t.Fatal("a failed sale must be looked at again")
	}
	if n := e.rdb.Exists(e.ctx, keys.ForSKU(e.ns+"/"+saleName, "1001").Stock).Val(); n != 0 {
		t.Fatal("state touched although the config is broken")
	}

	if err := e.k8s.Create(e.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "orders-db", Namespace: e.ns},
		StringData: map[string]string{"dsn": e.dsn},
	}); err != nil {
		t.Fatal(err)
	}
	e.r.ResolveEvery = 0 // re-read Secrets now (a Failed sale is requeued every 15s for this in a manager)
	e.reconcile()
	e.wantPhase(v1alpha1.PhasePending)
	e.wantCond(v1alpha1.ConditionConfigValid, metav1.ConditionTrue, v1alpha1.ReasonConfigValid)
}

// TestSaleCreatedAfterItsEnd settles at once: nothing was sold, the sale is
// torn down and Ended.
func TestSaleCreatedAfterItsEnd(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	e.clk.SetTime(e.t0.Add(time.Hour))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	e.wantCond(v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	assertTornDown(t, e, nil)
}

// TestRedisOnlyGateAndLostKeys: without Kafka the gate opens once the pods
// are ready; keys lost mid-sale are reported, never re-created at full stock.
func TestRedisOnlyGateAndLostKeys(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	warmAndOpen(t, e, false)
	e.wantCond(v1alpha1.ConditionTopicReady, metav1.ConditionTrue, v1alpha1.ReasonNoKafka)

	k := keys.ForSKU(e.ns+"/"+saleName, "1001")
	if err := e.rdb.Del(e.ctx, k.Stock, k.Initial).Err(); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	if n := e.rdb.Exists(e.ctx, k.Stock).Val(); n != 0 {
		t.Fatal("a lost stock counter was re-created mid-sale: that would sell the sold units again")
	}
	e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionFalse, v1alpha1.ReasonKeysMissing)
	e.wantCond(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonKeysMissing)
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonKeysMissing, "1001")
}
