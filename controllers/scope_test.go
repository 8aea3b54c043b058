package controllers_test

// The operator's reach: what its manager caches and watches, which
// namespaces it reconciles, and what its RBAC lets it do. These tests run a
// manager built with the very cache and client options `flashsale manager`
// uses (cli.CacheOptions, cli.ClientOptions) against envtest's real
// kube-apiserver, the reconciler on a fake clock that the test moves from one
// phase to the next; the manager requeues every few hundred milliseconds of
// real time, so each move is seen at once.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// scopedOperator is a running manager with the FlashSale controller.
type scopedOperator struct {
	mgr       ctrl.Manager
	informers *informerLog
}

type scopedOpts struct {
	// cfg is the manager's rest.Config (default: envtest's admin).
	cfg *rest.Config
	// watch is --watch-namespaces (empty: all).
	watch []string
	// leaderElection elects a leader with a Lease in the test's namespace.
	leaderElection bool
}

var scopedLogger sync.Once

// runScopedOperator starts a manager wired as runtime/cli/manager.go wires
// it, the reconciler on e's fake clock, and stops it at cleanup.
func runScopedOperator(t *testing.T, e *env, o scopedOpts) *scopedOperator {
	t.Helper()
	op, stop := startScopedOperator(t, e, o)
	t.Cleanup(stop)
	return op
}

// runScopedOperatorStoppable is runScopedOperator for a test that stops the
// manager itself (stop may be called again at cleanup).
func runScopedOperatorStoppable(t *testing.T, e *env, o scopedOpts) (stop func()) {
	t.Helper()
	_, stop = startScopedOperator(t, e, o)
	t.Cleanup(stop)
	return stop
}

func startScopedOperator(t *testing.T, e *env, o scopedOpts) (*scopedOperator, func()) {
	t.Helper()
	scopedLogger.Do(func() {
		ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	})
	if o.cfg == nil {
		o.cfg, _ = testutil.Kube(t, cli.Scheme())
	}
	op := &scopedOperator{informers: &informerLog{kinds: map[string]bool{}}}
	mgr, err := ctrl.NewManager(o.cfg, ctrl.Options{
		Scheme:                        cli.Scheme(),
		Cache:                         cli.CacheOptions(o.watch),
		Client:                        cli.ClientOptions(),
		NewCache:                      op.informers.newCache,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.leaderElection,
		LeaderElectionID:              "flashsale-operator.flashsale.dev",
		LeaderElectionNamespace:       e.ns,
		LeaderElectionReleaseOnCancel: true,
		// Several tests start a manager of their own in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := controllers.NewFlashSaleReconciler(mgr)
	r.Clock, r.Image = e.clk, "flashsale:test"
	r.RefreshInterval, r.ResolveEvery, r.DialTimeout = 200*time.Millisecond, 500*time.Millisecond, time.Second
	r.NetworkPolicy.Enabled = true // as the chart installs it
	// As the manager's --max-concurrent-reconciles default: this operator
	// watches every namespace, and sales other tests left in envtest (their
	// private redis-server stopped) each take a dial timeout per reconcile;
	// one worker would make this test's sales wait behind them.
	r.MaxConcurrentReconciles = 8
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	op.mgr = mgr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	return op, func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("the manager did not stop within 30s")
			}
		})
	}
}

// informerLog records the kind of every informer the manager's cache is
// asked for, and of every read it serves: a kind the cache holds is a kind
// the operator watches.
type informerLog struct {
	mu    sync.Mutex
	kinds map[string]bool
}

func (l *informerLog) newCache(cfg *rest.Config, opts cache.Options) (cache.Cache, error) {
	c, err := cache.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	return &recordingCache{Cache: c, log: l}, nil
}

func (l *informerLog) note(gvk schema.GroupVersionKind) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kinds[gvk.GroupKind().String()] = true
}

func (l *informerLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.kinds))
	for k := range l.kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type recordingCache struct {
	cache.Cache
	log *informerLog
}

func (c *recordingCache) noteObj(obj client.Object) {
	if gvk, err := apiutil.GVKForObject(obj, cli.Scheme()); err == nil {
		c.log.note(gvk)
	}
}

func (c *recordingCache) GetInformer(ctx context.Context, obj client.Object, o ...cache.InformerGetOption) (cache.Informer, error) {
	c.noteObj(obj)
	return c.Cache.GetInformer(ctx, obj, o...)
}

func (c *recordingCache) GetInformerForKind(ctx context.Context, gvk schema.GroupVersionKind, o ...cache.InformerGetOption) (cache.Informer, error) {
	c.log.note(gvk)
	return c.Cache.GetInformerForKind(ctx, gvk, o...)
}

func (c *recordingCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, o ...client.GetOption) error {
	c.noteObj(obj)
	return c.Cache.Get(ctx, key, obj, o...)
}

func (c *recordingCache) List(ctx context.Context, list client.ObjectList, o ...client.ListOption) error {
	if gvk, err := apiutil.GVKForObject(list, cli.Scheme()); err == nil {
		gvk.Kind = strings.TrimSuffix(gvk.Kind, "List")
		c.log.note(gvk)
	}
	return c.Cache.List(ctx, list, o...)
}

// waitSale polls the sale (the manager reconciles it) until cond holds, for
// up to 30 s.
func waitSale(t *testing.T, e *env, name, what string, cond func(fs *v1alpha1.FlashSale, err error) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var fs v1alpha1.FlashSale
		err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: name}, &fs)
		if cond(&fs, err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sale %s: timed out waiting for %s at t0+%s; phase %s, conditions %+v (err %v)",
				name, what, e.clk.Now().Sub(e.t0), fs.Status.Phase, fs.Status.Conditions, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitPhase(t *testing.T, e *env, name string, p v1alpha1.Phase) {
	t.Helper()
	waitSale(t, e, name, "phase "+string(p), func(fs *v1alpha1.FlashSale, err error) bool {
		return err == nil && fs.Status.Phase == p
	})
}

// playKubelet marks every Deployment of the sales in e's namespace ready,
// as the kubelet and the Deployment controller would, once there are want
// of them. It retries on conflicts: the operator applies them meanwhile.
func playKubelet(t *testing.T, e *env, want int) {
	t.Helper()
	var list appsv1.DeploymentList
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("%d Deployments", want), func() bool {
		err := e.k8s.List(e.ctx, &list, client.InNamespace(e.ns), client.HasLabels{controllers.SaleLabel})
		return err == nil && len(list.Items) >= want
	})
	for _, d := range list.Items {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cur appsv1.Deployment
			if err := e.k8s.Get(e.ctx, client.ObjectKeyFromObject(&d), &cur); err != nil {
				return err
			}
			n := *cur.Spec.Replicas
			cur.Status = appsv1.DeploymentStatus{ObservedGeneration: cur.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
			return e.k8s.Status().Update(e.ctx, &cur)
		})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("mark %s ready: %v", d.Name, err)
		}
	}
}

// saleToActive moves the fake clock to the warm-up, plays the kubelet for
// want Deployments, waits for the go-live gate of each named sale, then
// moves to the start.
func saleToActive(t *testing.T, e *env, want int, names ...string) {
	t.Helper()
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	for _, n := range names {
		waitPhase(t, e, n, v1alpha1.PhaseWarming)
	}
	playKubelet(t, e, want)
	for _, n := range names {
		waitSale(t, e, n, "the go-live gate", func(fs *v1alpha1.FlashSale, err error) bool { return err == nil && fs.Status.OpenedAt != nil })
	}
	e.clk.SetTime(e.t0.Add(10 * time.Minute))
	for _, n := range names {
		waitPhase(t, e, n, v1alpha1.PhaseActive)
	}
}

func deleteSale(t *testing.T, e *env, name string) {
	t.Helper()
	fs := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}}
	if err := e.k8s.Delete(e.ctx, fs); err != nil {
		t.Fatal(err)
	}
	waitSale(t, e, name, "the finalizer to let it go", func(_ *v1alpha1.FlashSale, err error) bool { return apierrors.IsNotFound(err) })
}

// longRunning reads, from the kube-apiserver's own /metrics, how many
// requests of verb on resource are open right now (apiserver_longrunning_requests).
func longRunning(t *testing.T, verb, resource string) float64 {
	t.Helper()
	cfg, _ := testutil.Kube(t, cli.Scheme())
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(strings.TrimSuffix(cfg.Host, "/") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("kube-apiserver /metrics: %d %s", resp.StatusCode, body)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") ||
			!strings.Contains(line, `verb="`+verb+`"`) || !strings.Contains(line, `resource="`+resource+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestCacheHoldsOnlyTheOperatorsObjects: with the operator running a sale
// (warmed, live, deleted), the manager's cache holds FlashSales and the
// operator's own Deployments, nothing else: no informer on Secrets (nor on
// any other kind), no WATCH on Secrets open on the API server, and a
// Deployment that is not the operator's stays out of the cache.
func TestCacheHoldsOnlyTheOperatorsObjects(t *testing.T) {
	e := newEnv(t, envOpts{})
	foreign := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "shop-frontend", Labels: map[string]string{"app": "shop"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "shop:1"}}},
			},
		},
	}
	if err := e.k8s.Create(e.ctx, foreign); err != nil {
		t.Fatal(err)
	}
	secretWatchesBefore := longRunning(t, "WATCH", "secrets")
	op := runScopedOperator(t, e, scopedOpts{})
	e.sale(nil)
	waitPhase(t, e, saleName, v1alpha1.PhasePending)
	saleToActive(t, e, 3, saleName)

	if n := longRunning(t, "WATCH", "flashsales"); n < 1 {
		t.Fatalf("%v WATCH requests on flashsales open: the metric does not show the manager's watches", n)
	}
	if n := longRunning(t, "WATCH", "secrets"); n > secretWatchesBefore {
		t.Fatalf("%v WATCH requests on secrets open with the operator running (%v before): it watches Secrets", n, secretWatchesBefore)
	}
	var cached appsv1.DeploymentList
	if err := op.mgr.GetCache().List(e.ctx, &cached, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range cached.Items {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	if want := []string{"sale-rollback", "sale-seckill", "sale-worker"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("cached Deployments %v, want only the sale's %v", names, want)
	}

	// The teardown reads each kind the sale owns once: straight from the API server.
	deleteSale(t, e, saleName)
	if got, want := strings.Join(op.informers.list(), ","), "Deployment.apps,FlashSale.flashsale.dev"; got != want {
		t.Fatalf("the manager's cache was asked for %s, want only %s", got, want)
	}
	if n := longRunning(t, "WATCH", "secrets"); n > secretWatchesBefore {
		t.Fatalf("%v WATCH requests on secrets open after the teardown (%v before)", n, secretWatchesBefore)
	}
}

// TestWatchNamespaces: with --watch-namespaces the operator reconciles the
// sales of those namespaces and leaves every other sale alone: no
// finalizer, no status, not even in the cache.
func TestWatchNamespaces(t *testing.T) {
	e := newEnv(t, envOpts{})
	other := testutil.UniqueName(t) + "-other"
	if err := e.k8s.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}); err != nil {
		t.Fatal(err)
	}
	e.sale(nil)
	outside := e.sale(func(fs *v1alpha1.FlashSale) { fs.Namespace = other })
	op := runScopedOperator(t, e, scopedOpts{watch: []string{e.ns}})

	waitSale(t, e, saleName, "Pending with a finalizer", func(fs *v1alpha1.FlashSale, err error) bool {
		return err == nil && fs.Status.Phase == v1alpha1.PhasePending && len(fs.Finalizers) > 0
	})
	// Both were there when the manager started: had it watched the other
	// namespace, it would have reconciled both by now. Give it a moment more.
	time.Sleep(time.Second)
	var got v1alpha1.FlashSale
	if err := e.k8s.Get(e.ctx, client.ObjectKeyFromObject(outside), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Finalizers) != 0 || got.Status.Phase != "" || len(got.Status.Conditions) != 0 {
		t.Fatalf("the sale in unwatched namespace %s was reconciled: finalizers %v, status %+v", other, got.Finalizers, got.Status)
	}
	if err := op.mgr.GetCache().Get(e.ctx, client.ObjectKeyFromObject(outside), &got); err == nil {
		t.Fatalf("the cache holds a FlashSale of unwatched namespace %s", other)
	}
	// Left alone means deletable without the operator, too.
	if err := e.k8s.Delete(e.ctx, outside); err != nil {
		t.Fatal(err)
	}
	if err := e.k8s.Get(e.ctx, client.ObjectKeyFromObject(outside), &got); !apierrors.IsNotFound(err) {
		t.Fatalf("the unwatched sale is still there after its delete (err %v)", err)
	}
}
