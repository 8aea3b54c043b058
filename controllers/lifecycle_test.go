package controllers_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
)

// TestSaleLifecycle walks one Kafka-backed sale through every phase with a
// fake clock: Pending → Warming → Active → Paused → Active → Draining →
// Ended, then deletes it.
func TestSaleLifecycle(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.sale(nil)
	key := e.ns + "/" + saleName
	ck := keys.ForSKU(key, "1001")

	// Pending: config checked, nothing deployed, next look at the warm-up instant.
	res := e.reconcile()
	e.wantPhase(v1alpha1.PhasePending)
	if res.RequeueAfter != 5*time.Minute {
		t.Fatalf("RequeueAfter %s in Pending, want the 5m until the warm-up", res.RequeueAfter)
	}
	e.wantCond(v1alpha1.ConditionConfigValid, metav1.ConditionTrue, v1alpha1.ReasonConfigValid)
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForWarmup)
	if n := e.rdb.Exists(e.ctx, ck.Stock).Val(); n != 0 {
		t.Fatal("Redis warmed while Pending")
	}
	var deps appsv1.DeploymentList
	if err := e.k8s.List(e.ctx, &deps, client.InNamespace(e.ns)); err != nil || len(deps.Items) != 0 {
		t.Fatalf("Deployments while Pending: %d (err %v)", len(deps.Items), err)
	}
	if fs := e.get(); !strings.Contains(strings.Join(fs.Finalizers, ","), controllers.Finalizer) {
		t.Fatalf("no finalizer: %v", fs.Finalizers)
	}

	// Warming, exactly at start - warmupLead.
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	res = e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)
	if res.RequeueAfter != controllers.DefaultRefreshInterval {
		t.Fatalf("RequeueAfter %s while warming, want the refresh interval", res.RequeueAfter)
	}
	e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
	e.wantCond(v1alpha1.ConditionSchemaReady, metav1.ConditionTrue, v1alpha1.ReasonSchemaMigrated)
	e.wantCond(v1alpha1.ConditionTopicReady, metav1.ConditionTrue, v1alpha1.ReasonTopicCreated)
	e.wantCond(v1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, v1alpha1.ReasonPodsNotReady)
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonPodsNotReady)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonPhaseChanged, "Pending → Warming")
	if got := e.rdb.Get(e.ctx, ck.Stock).Val(); got != "100" {
		t.Fatalf("stock of 1001 = %q after warming, want 100", got)
	}
	if sw, err := switches.Get(e.ctx, e.rdb, key); err != nil || !sw.Held {
		t.Fatalf("switches %+v, %v while warming, want held", sw, err)
	}
	if _, err := e.db.Exec("SELECT 1 FROM seckill_order LIMIT 1"); err != nil {
		t.Fatalf("schema not migrated: %v", err)
	}
	admin, err := sarama.NewClusterAdmin(e.brokers(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := topics[keys.Topic(key)]; !ok || d.NumPartitions != 3 {
		t.Fatalf("topic %s: %+v (present %v), want 3 partitions", keys.Topic(key), d, ok)
	}
	checkWorkloads(t, e)

	// A re-reconcile never overwrites a live counter.
	if err := e.rdb.DecrBy(e.ctx, ck.Stock, 1).Err(); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.reconcile()
	if got := e.rdb.Get(e.ctx, ck.Stock).Val(); got != "99" {
		t.Fatalf("stock = %q after re-reconciles, want the live 99 kept", got)
	}
	if err := e.rdb.IncrBy(e.ctx, ck.Stock, 1).Err(); err != nil {
		t.Fatal(err)
	}

	// The go-live gate stays shut until the pods are ready and the consumers
	// hold every partition.
	e.markReady()
	e.reconcile()
	e.wantCond(v1alpha1.ConditionWorkloadsReady, metav1.ConditionTrue, v1alpha1.ReasonWorkloadsReady)
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonConsumersNotReady)
	if e.get().Status.OpenedAt != nil {
		t.Fatal("gate opened without consumers")
	}
	stopWorker := e.startWorker()
	e.eventually("the go-live gate to open", func() bool { return e.get().Status.OpenedAt != nil })
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonLive, "Go-live gate open", "120 units")
	if sw, err := switches.Get(e.ctx, e.rdb, key); err != nil || sw.Held {
		t.Fatalf("switches %+v, %v after the gate opened, want not held", sw, err)
	}
	e.wantPhase(v1alpha1.PhaseWarming) // still before the start
	shop := e.startSeckill()
	if a := shop.buy("early", "1001"); a.Status != http.StatusTooEarly {
		t.Fatalf("purchase before the start: %d %s, want 425", a.Status, a.Error)
	}

	// Active exactly at the start; the requeue is the refresh interval.
	e.clk.SetTime(e.t0.Add(10 * time.Minute))
	res = e.reconcile()
	e.wantPhase(v1alpha1.PhaseActive)
	if res.RequeueAfter != controllers.DefaultRefreshInterval {
		t.Fatalf("RequeueAfter %s while Active", res.RequeueAfter)
	}
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonLive)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonPhaseChanged, "Warming → Active")

	var orders []string
	for _, u := range users("buyer", 30) {
		a := shop.buy(u, "1001")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase by %s: %d %s", u, a.Status, a.Error)
		}
		orders = append(orders, a.OrderNo)
	}
	e.eventually("30 orders in status", func() bool {
		fs := e.get()
		return fs.Status.Sold == 30 && fs.Status.QueueLag == 0 && fs.Status.Remaining == 90
	})

	// A stock raise mid-sale adds exactly the difference, once.
	fs := e.get()
	fs.Spec.SKUs[0].Stock = 150
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.reconcile()
	if got := e.rdb.Get(e.ctx, ck.Stock).Val(); got != "120" {
		t.Fatalf("stock = %q after raising 100 → 150 with 30 sold, want 120", got)
	}
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonStockRaised, "SKU 1001 stock raised by 50")

	// Pause: purchases answer 503 within a second; resume.
	fs = e.get()
	fs.Spec.Paused = true
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.wantPhase(v1alpha1.PhasePaused)
	took := shop.waitAnswer(t, "paused-buyer", http.StatusServiceUnavailable, "PAUSED")
	t.Logf("pause honoured after %s", took)
	fs = e.get()
	fs.Spec.Paused = false
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseActive)
	shop.waitAnswer(t, "resumed-buyer", http.StatusAccepted, "")

	// Pay 20 of the orders; the other 11 (with the resumed buyer's) expire.
	e.eventually("31 orders stored", func() bool { return e.get().Status.Sold == 31 && e.get().Status.QueueLag == 0 })
	for _, o := range orders[:20] {
		if a := shop.pay(o); a.Status != http.StatusOK {
			t.Fatalf("pay %s: %d %s", o, a.Status, a.Error)
		}
	}

	// Draining at the end: purchases closed, seckill down to its draining size.
	e.clk.SetTime(e.t0.Add(20 * time.Minute))
	res = e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	if res.RequeueAfter != controllers.DefaultRefreshInterval {
		t.Fatalf("RequeueAfter %s while draining", res.RequeueAfter)
	}
	shop.waitAnswer(t, "late-buyer", http.StatusGone, "ENDED")
	if n := *e.deployment(controllers.ComponentSeckill).Spec.Replicas; n != 1 {
		t.Fatalf("seckill replicas %d while draining, want drainingReplicas 1", n)
	}
	var hpa autoscalingv2.HorizontalPodAutoscaler
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-seckill"}, &hpa); !apierrors.IsNotFound(err) {
		t.Fatalf("autoscaler still there while draining (err %v)", err)
	}
	e.markReady()
	if fs := e.get(); fs.Status.Paid != 20 {
		t.Fatalf("paid %d, want 20", fs.Status.Paid)
	}

	// The payment window passes; the rollback cancels the 11 unpaid orders.
	e.clk.SetTime(e.t0.Add(21*time.Minute + time.Second))
	if p := e.rollbackOnce(); p.Cancelled != 11 {
		t.Fatalf("rollback cancelled %d, want 11", p.Cancelled)
	}
	// Settled: the workloads go first, and the keys only once their pods
	// are gone; meanwhile the workloads are not applied again.
	stopWorker()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sale-worker-x", Namespace: e.ns, Labels: map[string]string{controllers.SaleLabel: saleName}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "flashsale:test"}}},
	}
	if err := e.k8s.Create(e.ctx, pod); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.reconcile()
		e.wantPhase(v1alpha1.PhaseDraining)
		var d appsv1.Deployment
		if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-worker"}, &d); !apierrors.IsNotFound(err) {
			t.Fatalf("worker Deployment present while tearing down (err %v): it must not be applied again", err)
		}
		if n := e.rdb.Exists(e.ctx, ck.Stock).Val(); n != 1 {
			t.Fatal("keys deleted while a pod of the sale still runs")
		}
	}
	if err := e.k8s.Delete(e.ctx, pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	res = e.reconcile()
	e.wantPhase(v1alpha1.PhaseEnded)
	if res.RequeueAfter != 0 {
		t.Fatalf("RequeueAfter %s once Ended, want none", res.RequeueAfter)
	}
	fs = e.get()
	if fs.Status.Audit == nil || !fs.Status.Audit.Conserved || fs.Status.Audit.Initial != 170 {
		t.Fatalf("final audit %+v, want conserved over 170 units", fs.Status.Audit)
	}
	if fs.Status.Paid != 20 || fs.Status.Cancelled != 11 {
		t.Fatalf("final status paid %d cancelled %d, want 20 and 11", fs.Status.Paid, fs.Status.Cancelled)
	}
	e.wantCond(v1alpha1.ConditionStockConsistent, metav1.ConditionTrue, v1alpha1.ReasonConserved)
	e.wantCond(v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	e.wantCond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonPhaseChanged, "Draining → Ended")
	assertTornDown(t, e, admin)

	// Ended is final: another reconcile changes nothing and asks for none.
	if res := e.reconcile(); res.RequeueAfter != 0 {
		t.Fatalf("RequeueAfter %s after Ended", res.RequeueAfter)
	}
	e.wantPhase(v1alpha1.PhaseEnded)

	t.Logf("the sale's Events, as kubectl describe lists them:\n  %s", strings.Join(e.seen, "\n  "))

	// Deleting an ended sale releases it at once.
	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	var gone v1alpha1.FlashSale
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName}, &gone); !apierrors.IsNotFound(err) {
		t.Fatalf("FlashSale still there after delete: %v", err)
	}
}

// checkWorkloads asserts the objects the operator applied while warming.
func checkWorkloads(t *testing.T, e *env) {
	t.Helper()
	fs := e.get()
	for _, comp := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		d := e.deployment(comp)
		if !metav1.IsControlledBy(d, fs) {
			t.Errorf("%s Deployment not controlled by the FlashSale: %+v", comp, d.OwnerReferences)
		}
		managed := false
		for _, m := range d.ManagedFields {
			managed = managed || (m.Manager == controllers.FieldOwner && m.Operation == metav1.ManagedFieldsOperationApply)
		}
		if !managed {
			t.Errorf("%s Deployment not server-side applied by %s", comp, controllers.FieldOwner)
		}
		pod := d.Spec.Template.Spec
		ctr := pod.Containers[0]
		if ctr.Image != "flashsale:test" || ctr.Args[0] != comp {
			t.Errorf("%s runs %s %v, want our image with subcommand %s", comp, ctr.Image, ctr.Args, comp)
		}
		sc := ctr.SecurityContext
		if pod.SecurityContext == nil || !*pod.SecurityContext.RunAsNonRoot || sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s is not non-root with a read-only root filesystem", comp)
		}
		if ctr.ReadinessProbe == nil || ctr.LivenessProbe == nil || ctr.Resources.Requests.Cpu().IsZero() {
			t.Errorf("%s lacks probes or resources", comp)
		}
		secrets := map[string]string{}
		for _, ev := range ctr.Env {
			if ev.ValueFrom != nil && ev.ValueFrom.SecretKeyRef != nil {
				secrets[ev.Name] = ev.ValueFrom.SecretKeyRef.Name + "/" + ev.ValueFrom.SecretKeyRef.Key
			}
		}
		for _, want := range []string{"FLASHSALE_REDIS_ADDR", "FLASHSALE_MYSQL_DSN", "FLASHSALE_KAFKA_BROKERS"} {
			if !strings.HasPrefix(secrets[want], controllers.DefaultEndpointsSecret+"/") {
				t.Errorf("%s: env %s not from the endpoints Secret: %v", comp, want, secrets)
			}
		}
	}
	if n := *e.deployment(controllers.ComponentSeckill).Spec.Replicas; n != 2 {
		t.Errorf("seckill pre-scaled to %d, want 2", n)
	}
	if n := *e.deployment(controllers.ComponentWorker).Spec.Replicas; n != 1 {
		t.Errorf("worker replicas %d, want 1", n)
	}
	var svc corev1.Service
	var pdb policyv1.PodDisruptionBudget
	var hpa autoscalingv2.HorizontalPodAutoscaler
	name := types.NamespacedName{Namespace: e.ns, Name: saleName + "-seckill"}
	for _, o := range []client.Object{&svc, &pdb, &hpa} {
		if err := e.k8s.Get(e.ctx, name, o); err != nil {
			t.Errorf("%T: %v", o, err)
		} else if !metav1.IsControlledBy(o, fs) {
			t.Errorf("%T not controlled by the FlashSale", o)
		}
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 6 {
		t.Errorf("autoscaler %v..%d, want 2..6", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	// The pods read the very sale the user applied, defaults filled in.
	r := e.renderedSale()
	if r.Name != saleName || r.Namespace != e.ns || len(r.Spec.SKUs) != 2 || r.Spec.SKUs[1].PerUserLimit != 2 ||
		!r.Spec.StartTime.Equal(&fs.Spec.StartTime) || r.Spec.Kafka == nil || r.Spec.Kafka.Partitions != 3 {
		t.Errorf("rendered sale differs from the FlashSale: %+v", r.Spec)
	}
}

// assertTornDown: no owned object, no Redis key, no topic left.
func assertTornDown(t *testing.T, e *env, admin sarama.ClusterAdmin) {
	t.Helper()
	var deps appsv1.DeploymentList
	var cms corev1.ConfigMapList
	var svcs corev1.ServiceList
	for _, l := range []client.ObjectList{&deps, &cms, &svcs} {
		if err := e.k8s.List(e.ctx, l, client.InNamespace(e.ns), client.MatchingLabels{controllers.SaleLabel: saleName}); err != nil {
			t.Fatal(err)
		}
	}
	if len(deps.Items)+len(cms.Items)+len(svcs.Items) != 0 {
		t.Errorf("left behind: %d Deployments, %d ConfigMaps, %d Services", len(deps.Items), len(cms.Items), len(svcs.Items))
	}
	var sec corev1.Secret
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-token"}, &sec); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret left behind (err %v)", err)
	}
	key := e.ns + "/" + saleName
	for _, p := range keys.Patterns(key) {
		if ks := e.rdb.Keys(e.ctx, p).Val(); len(ks) != 0 {
			t.Errorf("Redis keys left behind: %v", ks)
		}
	}
	if admin != nil {
		topics, err := admin.ListTopics()
		if err != nil {
			t.Fatal(err)
		}
		for name := range topics {
			if strings.Contains(name, "."+e.ns+".") {
				t.Errorf("topic %s left behind", name)
			}
		}
	}
}
