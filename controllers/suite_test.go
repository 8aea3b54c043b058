package controllers_test

// These tests drive the FlashSale reconciler against the real parts: a real
// kube-apiserver and etcd (envtest, from `make controlplane`), the local
// Redis and MariaDB, and an in-process Kafka broker (kfake). They call
// Reconcile directly with a fake clock, as kube-green's tests do, so every
// phase boundary is reached at an exact instant and RequeueAfter can be
// asserted. envtest runs no kubelet: the tests play it by marking the
// Deployments' pods ready, and run the data plane (seckill API, worker,
// rollback) in-process from the very manifest the operator renders into
// the sale's ConfigMap.

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopKube()
	os.Exit(code)
}

const saleName = "sale"

// env is one test's world: a namespace, a reconciler with a fake clock, and
// the dependencies the sale's Secret points at.
type env struct {
	t   *testing.T
	ctx context.Context
	k8s client.Client
	r   *controllers.FlashSaleReconciler
	clk *clocktesting.FakeClock
	rec *events.FakeRecorder
	rdb *redis.Client
	// uc is the sale's Redis: rdb, or with envOpts.cluster a client of the
	// test's Redis Cluster. The in-process data plane uses it.
	uc      redis.UniversalClient
	cluster *testutil.Cluster
	db      *sql.DB
	dsn     string
	kafka   *kfake.Cluster
	ns      string
	t0      time.Time
	// seen collects every Event recorded so far.
	seen []string
}

type envOpts struct {
	kafka bool
	// redisAddr overrides the Redis the endpoints Secret names.
	redisAddr string
	// cluster runs the sale on a local 3-master Redis Cluster of its own
	// (e.sale sets spec.redis.mode: cluster).
	cluster bool
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	scheme := cli.Scheme()
	_, k8s := testutil.Kube(t, scheme)
	e := &env{t: t, ctx: context.Background(), k8s: k8s, rdb: testutil.Redis(t), ns: testutil.UniqueName(t)}
	e.uc = e.rdb
	e.db, e.dsn = testutil.MySQL(t)
	redisAddr := o.redisAddr
	if redisAddr == "" {
		redisAddr = e.rdb.Options().Addr
	}
	if o.cluster {
		e.cluster = testutil.RedisCluster(t)
		e.uc = e.cluster.Client(t)
		redisAddr = strings.Join(e.cluster.Addrs, ",")
	}
	for _, p := range keys.Patterns(e.ns + "/" + saleName) {
		testutil.CleanupKeys(t, e.uc, p)
	}
	if err := k8s.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}); err != nil {
		t.Fatal(err)
	}
	data := map[string]string{controllers.KeyRedisAddress: redisAddr, controllers.KeyMySQLDSN: e.dsn}
	if o.kafka {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		e.kafka = c
		data[controllers.KeyKafkaBrokers] = strings.Join(c.ListenAddrs(), ",")
	}
	if err := k8s.Create(e.ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: controllers.DefaultEndpointsSecret, Namespace: e.ns},
		StringData: data,
	}); err != nil {
		t.Fatal(err)
	}
	// Whole seconds, like the times a user writes in a manifest.
	e.t0 = time.Now().Truncate(time.Second)
	e.clk = clocktesting.NewFakeClock(e.t0)
	e.rec = events.NewFakeRecorder(1000)
	e.r = &controllers.FlashSaleReconciler{
		Client: k8s, APIReader: k8s, Scheme: scheme, Clock: e.clk, Recorder: e.rec,
		Image: "flashsale:test", ResolveEvery: time.Hour, DialTimeout: time.Second,
		// Tests decide when the audit runs by moving the clock.
		AuditInterval: 30 * time.Second,
	}
	return e
}

// sale is a FlashSale starting 10 minutes after t0, warmed 5 minutes before,
// running 10 minutes with a 1-minute payment window.
func (e *env) sale(mod func(*v1alpha1.FlashSale)) *v1alpha1.FlashSale {
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: saleName},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime:      metav1.NewTime(e.t0.Add(10 * time.Minute)),
			EndTime:        metav1.NewTime(e.t0.Add(20 * time.Minute)),
			WarmupLead:     &metav1.Duration{Duration: 5 * time.Minute},
			PaymentTimeout: &metav1.Duration{Duration: time.Minute},
			SKUs: []v1alpha1.SKU{
				{ID: "1001", Stock: 100, Price: "3999.00", PerUserLimit: 1},
				{ID: "1002", Stock: 20, Price: "19.90", PerUserLimit: 2},
			},
			Seckill: v1alpha1.Seckill{Replicas: 2, MaxReplicas: 6},
			Worker:  v1alpha1.Worker{Replicas: 1},
		},
	}
	if e.kafka != nil {
		fs.Spec.Kafka = &v1alpha1.Kafka{Partitions: 3}
	}
	if e.cluster != nil {
		fs.Spec.Redis.Mode = v1alpha1.RedisCluster
	}
	if mod != nil {
		mod(fs)
	}
	if err := e.k8s.Create(e.ctx, fs); err != nil {
		e.t.Fatal(err)
	}
	return fs
}

func (e *env) reconcile() ctrl.Result {
	e.t.Helper()
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: e.ns, Name: saleName}})
	if err != nil {
		e.t.Fatalf("reconcile at %s: %v", e.clk.Now().Sub(e.t0), err)
	}
	e.drainEvents()
	return res
}

func (e *env) get() *v1alpha1.FlashSale {
	e.t.Helper()
	var fs v1alpha1.FlashSale
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName}, &fs); err != nil {
		e.t.Fatal(err)
	}
	return &fs
}

func (e *env) cond(typ string) metav1.Condition {
	e.t.Helper()
	c := apimeta.FindStatusCondition(e.get().Status.Conditions, typ)
	if c == nil {
		e.t.Fatalf("no condition %s in %+v", typ, e.get().Status.Conditions)
	}
	return *c
}

func (e *env) wantCond(typ string, status metav1.ConditionStatus, reason string) {
	e.t.Helper()
	c := e.cond(typ)
	if c.Status != status || c.Reason != reason {
		e.t.Fatalf("condition %s = %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, status, reason)
	}
}

func (e *env) wantPhase(p v1alpha1.Phase) {
	e.t.Helper()
	if got := e.get().Status.Phase; got != p {
		e.t.Fatalf("phase %s at t0+%s, want %s; conditions %+v", got, e.clk.Now().Sub(e.t0), p, e.get().Status.Conditions)
	}
}

func (e *env) drainEvents() {
	for {
		select {
		case ev := <-e.rec.Events:
			e.seen = append(e.seen, ev)
		default:
			return
		}
	}
}

// wantEvent fails unless an Event with that type and reason, whose text
// contains all of the given parts, was recorded.
func (e *env) wantEvent(eventType, reason string, parts ...string) {
	e.t.Helper()
	e.drainEvents()
next:
	for _, ev := range e.seen {
		if !strings.HasPrefix(ev, eventType+" "+reason+" ") {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(ev, p) {
				continue next
			}
		}
		return
	}
	e.t.Fatalf("no %s %s event containing %q; events:\n  %s", eventType, reason, parts, strings.Join(e.seen, "\n  "))
}

func (e *env) deployment(component string) *appsv1.Deployment {
	e.t.Helper()
	var d appsv1.Deployment
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-" + component}, &d); err != nil {
		e.t.Fatalf("%s Deployment: %v", component, err)
	}
	return &d
}

// markReady plays the kubelet and the Deployment controller: every wanted
// pod of the three workloads is updated and available.
func (e *env) markReady() {
	e.t.Helper()
	for _, c := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		d := e.deployment(c)
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		if err := e.k8s.Status().Update(e.ctx, d); err != nil {
			e.t.Fatalf("mark %s ready: %v", c, err)
		}
	}
}

// renderedSale is the sale as the pods read it: the operator's ConfigMap.
func (e *env) renderedSale() *v1alpha1.FlashSale {
	e.t.Helper()
	var cm corev1.ConfigMap
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-config"}, &cm); err != nil {
		e.t.Fatal(err)
	}
	fs, err := manifest.Parse([]byte(cm.Data["sale.yaml"]))
	if err != nil {
		e.t.Fatalf("the rendered sale.yaml does not load: %v\n%s", err, cm.Data["sale.yaml"])
	}
	return fs
}

func (e *env) brokers() []string {
	if e.kafka == nil {
		return nil
	}
	return e.kafka.ListenAddrs()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// eventually reconciles until cond holds, for up to 20 s of real time (the
// in-process data plane runs on real time).
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.reconcile()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			fs := e.get()
			e.t.Fatalf("timed out waiting for %s; phase %s, status %+v", what, fs.Status.Phase, fs.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
