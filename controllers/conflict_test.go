package controllers_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// The two sales of the overlap tests. The first is created a second before
// the second (creationTimestamp has whole seconds), and its name sorts
// after it: the later created one waits, not the one whose name sorts later.
const (
	firstSale  = "zeta"
	secondSale = "alpha"
)

// namedSale creates a sale named name in e's namespace (e.sale's defaults:
// warm-up at t0+5m, start t0+10m, end t0+20m, SKUs 1001 and 1002).
func (e *env) namedSale(name string, mod func(*v1alpha1.FlashSale)) *v1alpha1.FlashSale {
	e.t.Helper()
	for _, p := range keys.Patterns(e.ns + "/" + name) {
		testutil.CleanupKeys(e.t, e.uc, p)
	}
	return e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Name = name
		if mod != nil {
			mod(fs)
		}
	})
}

func (e *env) saleNamed(name string) *v1alpha1.FlashSale {
	e.t.Helper()
	var fs v1alpha1.FlashSale
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: name}, &fs); err != nil {
		e.t.Fatal(err)
	}
	return &fs
}

func (e *env) reconcileNamed(name string) ctrl.Result {
	e.t.Helper()
	res, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: e.ns, Name: name}})
	if err != nil {
		e.t.Fatalf("reconcile %s at t0+%s: %v", name, e.clk.Now().Sub(e.t0), err)
	}
	e.drainEvents()
	return res
}

// condOf is the sale's condition typ, or a zero one (Status "") when absent.
func (e *env) condOf(name, typ string) metav1.Condition {
	e.t.Helper()
	if c := apimeta.FindStatusCondition(e.saleNamed(name).Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func (e *env) wantCondOf(name, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	e.t.Helper()
	c := e.condOf(name, typ)
	if c.Status != status || c.Reason != reason {
		e.t.Fatalf("sale %s at t0+%s: condition %s = %q/%q (%s), want %s/%s", name, e.clk.Now().Sub(e.t0), typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return c
}

// warmedKey says whether the sale's stock counter of sku is in Redis.
func (e *env) warmedKey(name, sku string) bool {
	e.t.Helper()
	return e.rdb.Exists(e.ctx, keys.ForSKU(e.ns+"/"+name, sku).Stock).Val() == 1
}

func (e *env) hasWorkloads(name string) bool {
	e.t.Helper()
	var d appsv1.Deployment
	err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: name + "-" + controllers.ComponentSeckill}, &d)
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

// overlappingSales creates the first sale, a second later the second one
// sharing SKU 1001 on the same Redis in the same window, and checks the
// second is refused while the first warms: Conflict naming the first, no
// key and no workload of its own, phase Pending then Warming, never Active.
func overlappingSales(t *testing.T) *env {
	e := newEnv(t, envOpts{})
	e.namedSale(firstSale, nil)
	time.Sleep(1100 * time.Millisecond)
	e.namedSale(secondSale, func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[1].ID = "3001" })

	e.reconcileNamed(firstSale)
	e.wantCondOf(firstSale, v1alpha1.ConditionConflict, metav1.ConditionFalse, v1alpha1.ReasonNoOverlap)
	res := e.reconcileNamed(secondSale)
	c := e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)
	from, till := e.t0.Add(5*time.Minute).UTC().Format(time.RFC3339), e.t0.Add(20*time.Minute).UTC().Format(time.RFC3339)
	for _, want := range []string{"sale " + e.ns + "/" + firstSale + " ", "SKU 1001 ", from, till} {
		if !strings.Contains(c.Message, want) {
			t.Fatalf("Conflict message %q does not say %q", c.Message, want)
		}
	}
	if strings.Contains(c.Message, "1002") || strings.Contains(c.Message, "3001") {
		t.Fatalf("Conflict message %q names a SKU the two do not share", c.Message)
	}
	e.wantCondOf(secondSale, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonOverlappingSale)
	if p := e.saleNamed(secondSale).Status.Phase; p != v1alpha1.PhasePending {
		t.Fatalf("refused sale in phase %s before its warm-up, want Pending", p)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 15*time.Second {
		t.Fatalf("refused sale requeued after %s, want within 15s", res.RequeueAfter)
	}
	e.wantEvent(corev1.EventTypeWarning, v1alpha1.ReasonOverlappingSale, e.ns+"/"+firstSale)
	e.reconcileNamed(secondSale)
	if n := e.countEventsOf(corev1.EventTypeWarning, v1alpha1.ReasonOverlappingSale); n != 1 {
		t.Fatalf("%d OverlappingSale Events after two reconciles, want 1", n)
	}

	// The warm-up: the first warms, the second stays cold.
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcileNamed(firstSale)
	e.wantCondOf(firstSale, v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
	for range 2 {
		e.reconcileNamed(secondSale)
	}
	e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)
	if p := e.saleNamed(secondSale).Status.Phase; p != v1alpha1.PhaseWarming {
		t.Fatalf("refused sale in phase %s after its warm-up time, want Warming", p)
	}
	for _, sku := range []string{"1001", "3001"} {
		if e.warmedKey(secondSale, sku) {
			t.Fatalf("the refused sale's SKU %s was warmed", sku)
		}
	}
	if e.hasWorkloads(secondSale) {
		t.Fatal("the refused sale has workloads")
	}
	if c := e.condOf(secondSale, v1alpha1.ConditionWarmed); c.Status != "" {
		t.Fatalf("the refused sale says Warmed %s/%s", c.Status, c.Reason)
	}
	// Past the start it is still not Active: the go-live gate needs Warmed.
	e.clk.SetTime(e.t0.Add(10 * time.Minute))
	e.reconcileNamed(secondSale)
	if p := e.saleNamed(secondSale).Status.Phase; p != v1alpha1.PhaseWarming {
		t.Fatalf("refused sale in phase %s past its start, want Warming", p)
	}
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	// The first, warmed, is never stopped by the check.
	e.reconcileNamed(firstSale)
	e.wantCondOf(firstSale, v1alpha1.ConditionConflict, metav1.ConditionFalse, v1alpha1.ReasonNoOverlap)
	return e
}

// TestOverlappingSaleWaits: of two sales of one SKU on one Redis in
// overlapping windows the later waits, and warms as soon as the overlap is
// gone, however it goes.
func TestOverlappingSaleWaits(t *testing.T) {
	ways := map[string]func(e *env){
		"first deleted": func(e *env) {
			if err := e.k8s.Delete(e.ctx, e.saleNamed(firstSale)); err != nil {
				t.Fatal(err)
			}
		},
		"first moved an hour later": func(e *env) {
			fs := e.saleNamed(firstSale)
			fs.Spec.StartTime.Time = fs.Spec.StartTime.Add(time.Hour)
			fs.Spec.EndTime.Time = fs.Spec.EndTime.Add(time.Hour)
			if err := e.k8s.Update(e.ctx, fs); err != nil {
				t.Fatal(err)
			}
		},
		"shared SKU removed from the first": func(e *env) {
			fs := e.saleNamed(firstSale)
			fs.Spec.SKUs = fs.Spec.SKUs[1:]
			if err := e.k8s.Update(e.ctx, fs); err != nil {
				t.Fatal(err)
			}
		},
		"first closed": func(e *env) {
			fs := e.saleNamed(firstSale)
			fs.Spec.Closed = true
			if err := e.k8s.Update(e.ctx, fs); err != nil {
				t.Fatal(err)
			}
			e.reconcileNamed(firstSale) // records closedAt: its effective end is now
		},
	}
	for name, free := range ways {
		t.Run(name, func(t *testing.T) {
			e := overlappingSales(t)
			free(e)
			e.reconcileNamed(secondSale)
			e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionFalse, v1alpha1.ReasonNoOverlap)
			e.wantCondOf(secondSale, v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
			if got := e.rdb.Get(e.ctx, keys.ForSKU(e.ns+"/"+secondSale, "1001").Stock).Val(); got != "100" {
				t.Fatalf("the second sale's stock of 1001 = %q once free, want 100", got)
			}
			if !e.hasWorkloads(secondSale) {
				t.Fatal("the second sale has no workloads once free")
			}
		})
	}
}

// TestOverlappedUntilItsEnd: a sale held back until its own end goes
// straight to Ended, never warmed: no pods start for a sale that is over.
func TestOverlappedUntilItsEnd(t *testing.T) {
	e := overlappingSales(t)
	e.clk.SetTime(e.t0.Add(20 * time.Minute))
	if res := e.reconcileNamed(secondSale); res.RequeueAfter != 0 {
		t.Fatalf("RequeueAfter %s once Ended", res.RequeueAfter)
	}
	if p := e.saleNamed(secondSale).Status.Phase; p != v1alpha1.PhaseEnded {
		t.Fatalf("phase %s at its end, want Ended", p)
	}
	c := e.wantCondOf(secondSale, v1alpha1.ConditionTornDown, metav1.ConditionTrue, v1alpha1.ReasonTornDown)
	if !strings.Contains(c.Message, "nothing was warmed") || !strings.Contains(c.Message, e.ns+"/"+firstSale) {
		t.Fatalf("TornDown message %q: want it to say nothing was warmed because of %s", c.Message, firstSale)
	}
	if e.warmedKey(secondSale, "1001") || e.hasWorkloads(secondSale) {
		t.Fatal("the sale held back until its end was warmed at its end")
	}
}

// TestNoConflictWithoutOverlap: two sales of one namespace run side by side
// when they share no SKU, when one's warm-up starts at the other's end
// (windows are half-open), or when they use different Redis servers. Also a
// sale of another namespace with the same SKU on the same Redis: SKU ids
// are a shop's own (see conflict.go).
func TestNoConflictWithoutOverlap(t *testing.T) {
	cases := map[string]func(e *env, fs *v1alpha1.FlashSale){
		"other SKUs": func(_ *env, fs *v1alpha1.FlashSale) {
			fs.Spec.SKUs[0].ID, fs.Spec.SKUs[1].ID = "2001", "2002"
		},
		"warm-up at the other's end": func(e *env, fs *v1alpha1.FlashSale) {
			fs.Spec.StartTime.Time = e.t0.Add(25 * time.Minute) // warm-up t0+20m, the first's end
			fs.Spec.EndTime.Time = e.t0.Add(35 * time.Minute)
		},
		"other Redis": func(e *env, fs *v1alpha1.FlashSale) {
			other := testutil.StartRedisServer(e.t)
			if err := e.k8s.Create(e.ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "other-redis"},
				StringData: map[string]string{"address": other.Addr},
			}); err != nil {
				e.t.Fatal(err)
			}
			fs.Spec.Redis.AddressSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "other-redis"}, Key: "address"}
		},
		"other namespace": func(e *env, fs *v1alpha1.FlashSale) {
			ns := e.ns + "-b"
			if err := e.k8s.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
				e.t.Fatal(err)
			}
			var sec corev1.Secret
			if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: controllers.DefaultEndpointsSecret}, &sec); err != nil {
				e.t.Fatal(err)
			}
			if err := e.k8s.Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sec.Name}, Data: sec.Data}); err != nil {
				e.t.Fatal(err)
			}
			for _, p := range keys.Patterns(ns + "/" + secondSale) {
				testutil.CleanupKeys(e.t, e.uc, p)
			}
			fs.Namespace = ns
		},
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			e.namedSale(firstSale, nil)
			time.Sleep(1100 * time.Millisecond)
			second := e.namedSale(secondSale, func(fs *v1alpha1.FlashSale) { mod(e, fs) })
			key := client.ObjectKeyFromObject(second)
			wantFree := func(when string) *v1alpha1.FlashSale {
				t.Helper()
				if _, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: key}); err != nil {
					t.Fatal(err)
				}
				var fs v1alpha1.FlashSale
				if err := e.k8s.Get(e.ctx, key, &fs); err != nil {
					t.Fatal(err)
				}
				c := apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionConflict)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonNoOverlap {
					t.Fatalf("second sale's Conflict %s: %+v, want False/NoOverlap", when, c)
				}
				return &fs
			}
			// Both pending and neither warmed: the first, created earlier,
			// would hold the second back if they overlapped.
			wantFree("while both are Pending")
			warmAt := second.Spec.StartTime.Add(-5 * time.Minute)
			e.clk.SetTime(e.t0.Add(5 * time.Minute))
			e.reconcileNamed(firstSale)
			e.wantCondOf(firstSale, v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
			e.clk.SetTime(warmAt)
			fs := wantFree("at its warm-up")
			if !apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionWarmed) {
				t.Fatalf("second sale not warmed at its warm-up: %+v", fs.Status.Conditions)
			}
		})
	}
}

// TestOverlapFreedByWatch: under a manager, a sale refused for an overlap
// is reconciled as soon as the sale it names is deleted (the watch), not
// only at its next retry 15 s later.
func TestOverlapFreedByWatch(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.namedSale(firstSale, nil)
	time.Sleep(1100 * time.Millisecond)
	e.namedSale(secondSale, nil)
	runScopedOperator(t, e, scopedOpts{})
	waitSale(t, e, secondSale, "Conflict", func(fs *v1alpha1.FlashSale, err error) bool {
		return err == nil && apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionConflict)
	})
	// The manager's next look of its own is configRetry away.
	time.Sleep(time.Second)
	if err := e.k8s.Delete(e.ctx, e.saleNamed(firstSale)); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	waitSale(t, e, secondSale, "Conflict gone", func(fs *v1alpha1.FlashSale, err error) bool {
		c := apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionConflict)
		return err == nil && c != nil && c.Status == metav1.ConditionFalse
	})
	if took := time.Since(deleted); took > 8*time.Second {
		t.Fatalf("the refused sale was looked at again %s after the other's deletion: the watch did not bring it", took)
	}
}

// restartOperator replaces e.r with a reconciler as a restarted operator
// has it: the same settings, no connection and nothing cached.
func (e *env) restartOperator() {
	old := e.r
	e.r = &controllers.FlashSaleReconciler{
		Client: old.Client, APIReader: old.APIReader, Scheme: old.Scheme, Clock: old.Clock, Recorder: old.Recorder,
		Image: old.Image, ResolveEvery: old.ResolveEvery, DialTimeout: old.DialTimeout, AuditInterval: old.AuditInterval,
	}
}

// secretNaming creates a Secret whose key "address" holds addr, and
// returns the reference a sale's spec.redis.addressSecretRef takes.
func (e *env) secretNaming(name, addr string) *corev1.SecretKeySelector {
	e.t.Helper()
	if err := e.k8s.Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		StringData: map[string]string{"address": addr}}); err != nil {
		e.t.Fatal(err)
	}
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "address"}
}

// TestWarmedSaleSecretGone: a warmed sale whose Redis Secret is deleted a
// moment (a GitOps re-sync, a rotation) still holds a later overlapping
// sale back: the later one must not warm the same SKU on the same Redis,
// neither while this operator holds the warmed sale's connection (it is
// compared by what that dials) nor after a restart, when nothing tells
// which Redis the warmed sale sells on (it waits, saying why).
func TestWarmedSaleSecretGone(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.r.ResolveEvery = time.Minute
	ref := e.secretNaming("redis-a", e.rdb.Options().Addr)
	e.namedSale(firstSale, func(fs *v1alpha1.FlashSale) { fs.Spec.Redis.AddressSecretRef = ref })
	time.Sleep(1100 * time.Millisecond)
	e.namedSale(secondSale, nil)
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcileNamed(firstSale)
	e.wantCondOf(firstSale, v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
	e.reconcileNamed(secondSale)
	e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)

	if err := e.k8s.Delete(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "redis-a", Namespace: e.ns}}); err != nil {
		t.Fatal(err)
	}
	e.clk.Step(2 * time.Minute) // the address cache expired
	for range 2 {
		e.reconcileNamed(secondSale)
	}
	c := e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)
	if !strings.Contains(c.Message, "against the same Redis ("+e.rdb.Options().Addr) {
		t.Fatalf("Conflict message %q: want the Redis the warmed sale's connection dials", c.Message)
	}
	if e.warmedKey(secondSale, "1001") {
		t.Fatal("the later sale warmed SKU 1001 on the Redis the warmed sale sells it on")
	}

	e.restartOperator()
	for range 2 {
		e.reconcileNamed(secondSale)
	}
	c = e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)
	for _, want := range []string{"sale " + e.ns + "/" + firstSale + " ", "Redis is unknown", "Secret " + e.ns + "/redis-a not found", "this sale waits"} {
		if !strings.Contains(c.Message, want) {
			t.Fatalf("Conflict message %q after a restart does not say %q", c.Message, want)
		}
	}
	if e.warmedKey(secondSale, "1001") {
		t.Fatal("after a restart the later sale warmed SKU 1001 beside the warmed sale whose Secret is missing")
	}
	// The Secret back: the two are compared again, and still overlap.
	e.secretNaming("redis-a", e.rdb.Options().Addr)
	e.reconcileNamed(secondSale)
	c = e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)
	if strings.Contains(c.Message, "unknown") {
		t.Fatalf("Conflict message %q once the Secret is back", c.Message)
	}
}

// TestOverlapSameRedisOtherName: one Redis named two ways is one Redis.
// A proxy in front of the sales' redis-server has another address but the
// same server behind it (its run_id); two cluster-mode sales naming
// different seed nodes of one Redis Cluster share its node ids. The later
// sale waits in both cases.
func TestOverlapSameRedisOtherName(t *testing.T) {
	cases := map[string]struct {
		opts envOpts
		// addrs are the Redis addresses of the first and the second sale.
		addrs func(e *env) (string, string)
		how   string
	}{
		"through a proxy": {
			addrs: func(e *env) (string, string) {
				return e.rdb.Options().Addr, testutil.TCPProxy(e.t, e.rdb.Options().Addr).Addr()
			},
			how: "the same server by its run_id",
		},
		"other seed nodes of one cluster": {
			opts: envOpts{cluster: true},
			addrs: func(e *env) (string, string) {
				return e.cluster.Addrs[0], strings.Join(e.cluster.Addrs[1:], ",")
			},
			how: "the same server by its cluster node ids",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			first, second := tc.addrs(e)
			refA, refB := e.secretNaming("redis-a", first), e.secretNaming("redis-b", second)
			e.namedSale(firstSale, func(fs *v1alpha1.FlashSale) { fs.Spec.Redis.AddressSecretRef = refA })
			time.Sleep(1100 * time.Millisecond)
			e.namedSale(secondSale, func(fs *v1alpha1.FlashSale) { fs.Spec.Redis.AddressSecretRef = refB })
			e.clk.SetTime(e.t0.Add(5 * time.Minute))
			e.reconcileNamed(firstSale)
			e.wantCondOf(firstSale, v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
			// A restarted operator too: it holds no connection of the first.
			for _, restart := range []bool{false, true} {
				if restart {
					e.restartOperator()
				}
				e.reconcileNamed(secondSale)
				c := e.wantCondOf(secondSale, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale)
				want := "(" + normalized(second) + ", which the other sale names " + normalized(first) + ": " + tc.how + ")"
				if !strings.Contains(c.Message, want) {
					t.Fatalf("Conflict message %q (restart %t): want it to say %q", c.Message, restart, want)
				}
				if e.uc.Exists(e.ctx, keys.ForSKU(e.ns+"/"+secondSale, "1001").Stock).Val() != 0 {
					t.Fatal("the later sale warmed SKU 1001 on the same Redis under another name")
				}
			}
		})
	}
}

// normalized is addrs as the operator spells them: sorted, comma-separated.
func normalized(addrs string) string {
	l := strings.Split(addrs, ",")
	slices.Sort(l)
	return strings.Join(l, ",")
}
