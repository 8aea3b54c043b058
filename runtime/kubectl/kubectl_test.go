package kubectl_test

// These tests run the real binary under the name kubectl finds it by
// (kubectl-flashsale, so main's argv0 dispatch is exercised) against a real
// kube-apiserver (envtest), with FlashSales created there and, for audit,
// the local Redis and MariaDB. No operator runs: the actions are asserted on
// the spec they patch, the status screen on a status written through the
// status subresource and an Event recorded the way the operator records it.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// plugin is the built binary, named as kubectl finds it on the PATH.
var plugin string

func TestMain(m *testing.M) {
	log.SetLogger(logr.Discard()) // envtest logs through controller-runtime
	dir, err := os.MkdirTemp("", "kubectl-flashsale")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	plugin = filepath.Join(dir, "kubectl-flashsale")
	build := exec.Command("go", "build", "-o", plugin, ".")
	build.Dir = testutil.RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kubectl-flashsale:", err)
	} else {
		code = m.Run()
	}
	testutil.StopKube()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// world is one test's namespace in envtest and a kubeconfig for the plugin.
type world struct {
	t          *testing.T
	ctx        context.Context
	c          client.Client
	ns         string
	kubeconfig string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	cfg, c := testutil.Kube(t, s)
	w := &world{t: t, ctx: context.Background(), c: c, ns: testutil.UniqueName(t), kubeconfig: testutil.Kubeconfig(t, cfg)}
	if err := c.Create(w.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}); err != nil {
		t.Fatal(err)
	}
	return w
}

// sale creates a FlashSale with SKUs phone (1000) and case (5000) starting at start.
func (w *world) sale(name string, start time.Time) *v1alpha1.FlashSale {
	w.t.Helper()
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(start.Truncate(time.Second)),
			EndTime:   metav1.NewTime(start.Truncate(time.Second).Add(30 * time.Minute)),
			SKUs: []v1alpha1.SKU{
				{ID: "phone", Stock: 1000, Price: "3999.00"},
				{ID: "case", Stock: 5000, Price: "19.90", PerUserLimit: 2},
			},
		},
	}
	if err := w.c.Create(w.ctx, fs); err != nil {
		w.t.Fatal(err)
	}
	return fs
}

func (w *world) get(name string) *v1alpha1.FlashSale {
	w.t.Helper()
	var fs v1alpha1.FlashSale
	if err := w.c.Get(w.ctx, client.ObjectKey{Namespace: w.ns, Name: name}, &fs); err != nil {
		w.t.Fatal(err)
	}
	return &fs
}

// run runs the plugin in the world's namespace and returns its output and
// exit code.
func (w *world) run(args ...string) (stdout, stderr string, code int) {
	w.t.Helper()
	args = append([]string{"--kubeconfig", w.kubeconfig, "-n", w.ns}, args...)
	cmd := exec.Command(plugin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		w.t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// ok runs the plugin and fails the test unless it exits 0.
func (w *world) ok(args ...string) string {
	w.t.Helper()
	out, errOut, code := w.run(args...)
	if code != 0 {
		w.t.Fatalf("kubectl flashsale %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// fails runs the plugin, expects a non-zero exit and returns stderr.
func (w *world) fails(args ...string) string {
	w.t.Helper()
	out, errOut, code := w.run(args...)
	if code == 0 {
		w.t.Fatalf("kubectl flashsale %v: exit 0, want a failure\n%s", args, out)
	}
	return errOut
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Fatalf("%s: no %q in:\n%s", what, want, got)
		}
	}
}

// TestSwitches: pause, resume and close each patch exactly their field of
// the spec (the generation moves, nothing else in the spec does) and say
// what changed; repeating one says "no change" and exits 0; a closed sale
// refuses pause; an unknown sale is named.
func TestSwitches(t *testing.T) {
	w := newWorld(t)
	fs := w.sale("spring-sale", time.Now().Add(time.Hour))
	before := fs.Spec.DeepCopy()

	out := w.ok("pause", "spring-sale")
	wantContains(t, "pause", out, "flashsale.dev/spring-sale paused (spec.paused: false → true)")
	got := w.get("spring-sale")
	if !got.Spec.Paused || got.Generation != fs.Generation+1 {
		t.Fatalf("after pause: paused %t generation %d (was %d)", got.Spec.Paused, got.Generation, fs.Generation)
	}
	want := before.DeepCopy()
	want.Paused = true
	if !equalSpec(t, &got.Spec, want) {
		t.Fatal("pause changed more than spec.paused")
	}
	wantContains(t, "pause again", w.ok("pause", "spring-sale"), "already paused (spec.paused: true): no change")
	if g := w.get("spring-sale").Generation; g != got.Generation {
		t.Fatalf("a repeated pause patched the sale: generation %d → %d", got.Generation, g)
	}

	wantContains(t, "resume", w.ok("resume", "spring-sale"), "flashsale.dev/spring-sale resumed (spec.paused: true → false)")
	if w.get("spring-sale").Spec.Paused {
		t.Fatal("resume left spec.paused true")
	}
	wantContains(t, "resume again", w.ok("resume", "spring-sale"), "no change")

	wantContains(t, "close", w.ok("close", "spring-sale"), "flashsale.dev/spring-sale closed (spec.closed: false → true)", "cannot be undone")
	if !w.get("spring-sale").Spec.Closed {
		t.Fatal("close left spec.closed false")
	}
	wantContains(t, "close again", w.ok("close", "spring-sale"), "no change")
	wantContains(t, "pause a closed sale", w.fails("pause", "spring-sale"), "is closed")
	wantContains(t, "stock of a closed sale", w.fails("add-stock", "spring-sale", "phone", "5"), "is closed")

	wantContains(t, "unknown sale", w.fails("pause", "no-such-sale"), `flashsale "no-such-sale" not found in namespace "`+w.ns+`"`)
	wantContains(t, "unknown sale", w.fails("status", "no-such-sale"), `flashsale "no-such-sale" not found`)
}

// TestCloseAfterEnd: close on a sale already past its endTime says there is
// nothing to close, exits 0 and leaves the sale unpatched (spec.closed stays
// false, the generation does not move): the operator keeps endTime as the
// end, so the close would only make the sale read as closed early.
func TestCloseAfterEnd(t *testing.T) {
	w := newWorld(t)
	fs := w.sale("summer-sale", time.Now().Add(-time.Hour)) // ended 30 minutes ago
	out := w.ok("close", "summer-sale")
	wantContains(t, "close after the end", out,
		"flashsale.dev/summer-sale already past its end (endTime "+fs.Spec.EndTime.UTC().Format(time.RFC3339)+", 30m ago)",
		"nothing to close: no change")
	if got := w.get("summer-sale"); got.Spec.Closed || got.Generation != fs.Generation {
		t.Fatalf("close after the end patched the sale: closed %t, generation %d → %d", got.Spec.Closed, fs.Generation, got.Generation)
	}
}

// equalSpec compares two specs as the API server stores them.
func equalSpec(t *testing.T, a, b *v1alpha1.FlashSaleSpec) bool {
	t.Helper()
	return equality.Semantic.DeepEqual(a, b)
}

// TestStock: add-stock and set-stock change one SKU's stock and answer with
// before and after; a lowering prints the caution; bad input (unknown SKU,
// N not a positive integer) is refused with the field named and the spec
// untouched; and ten additions run at once all count (the optimistic lock
// and its retry: a plain merge patch of the SKU list would lose some).
func TestStock(t *testing.T) {
	w := newWorld(t)
	w.sale("spring-sale", time.Now().Add(time.Hour))

	wantContains(t, "add-stock", w.ok("add-stock", "spring-sale", "phone", "500"),
		"add-stock phone 500: spec.skus[phone].stock 1000 → 1500")
	fs := w.get("spring-sale")
	if s, _ := fs.SKU("phone"); s.Stock != 1500 {
		t.Fatalf("phone stock %d, want 1500", s.Stock)
	}
	if s, _ := fs.SKU("case"); s.Stock != 5000 || s.PerUserLimit != 2 {
		t.Fatalf("case changed: %+v", s)
	}

	out := w.ok("set-stock", "spring-sale", "case", "4000")
	wantContains(t, "set-stock lower", out, "set-stock case 4000: spec.skus[case].stock 5000 → 4000", "caution: stock lowered by 1000", "debt")
	out = w.ok("set-stock", "spring-sale", "case", "4200")
	wantContains(t, "set-stock raise", out, "spec.skus[case].stock 4000 → 4200")
	if strings.Contains(out, "caution") {
		t.Fatalf("a raise printed the caution:\n%s", out)
	}
	wantContains(t, "set-stock same", w.ok("set-stock", "spring-sale", "case", "4200"), "no change")

	gen := w.get("spring-sale").Generation
	wantContains(t, "unknown SKU", w.fails("add-stock", "spring-sale", "tablet", "5"), `has no SKU "tablet"; its SKUs: phone, case`)
	wantContains(t, "N zero", w.fails("add-stock", "spring-sale", "phone", "0"), `N must be an integer >= 1, not "0"`)
	wantContains(t, "N not a number", w.fails("add-stock", "spring-sale", "phone", "lots"), `N must be an integer >= 1, not "lots"`)
	wantContains(t, "N negative", w.fails("set-stock", "spring-sale", "phone", "--", "-1"), `N must be an integer >= 0, not "-1"`)
	if g := w.get("spring-sale").Generation; g != gen {
		t.Fatalf("refused input changed the sale: generation %d → %d", gen, g)
	}

	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, errOut, code := w.run("add-stock", "spring-sale", "phone", "7"); code != 0 {
				t.Errorf("concurrent add-stock: exit %d: %s", code, errOut)
			}
		}()
	}
	wg.Wait()
	if s, _ := w.get("spring-sale").SKU("phone"); s.Stock != 1500+70 {
		t.Fatalf("after 10 concurrent add-stock 7: phone stock %d, want %d", s.Stock, 1570)
	}
}

// writeStatus plays the operator: a live sale's figures, conditions and an
// Event recorded through events.k8s.io/v1 about the sale.
func (w *world) writeStatus(fs *v1alpha1.FlashSale, phase v1alpha1.Phase, note string) {
	w.t.Helper()
	now := metav1.Now()
	fs.Status = v1alpha1.FlashSaleStatus{
		Phase: phase, Stock: 6000, Remaining: 5100, Sold: 900, Paid: 700, Cancelled: 12, QueueLag: 42,
		SKUs: []v1alpha1.SKUStatus{
			{ID: "phone", Stock: 1000, Remaining: 100, Sold: 900, Paid: 700, Cancelled: 12},
			{ID: "case", Stock: 5000, Remaining: 5000},
		},
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonLive, Message: "purchases admitted", LastTransitionTime: now},
			{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonHealthy, Message: "all dependencies answer", LastTransitionTime: now},
		},
	}
	if err := w.c.Status().Update(w.ctx, fs); err != nil {
		w.t.Fatal(err)
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", fs.Name, time.Now().UnixNano()), Namespace: w.ns},
		EventTime:           metav1.NewMicroTime(time.Now()),
		ReportingController: "flashsale.dev/operator", ReportingInstance: "test",
		Action: "Reconcile", Reason: v1alpha1.ReasonPhaseChanged, Type: corev1.EventTypeNormal, Note: note,
		Regarding: corev1.ObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "FlashSale",
			Namespace: w.ns, Name: fs.Name, UID: fs.UID},
	}
	if err := w.c.Create(w.ctx, ev); err != nil {
		w.t.Fatal(err)
	}
}

// TestStatus: the screen shows the phase, the countdown to the next
// boundary, a row per SKU with its figures, the queue lag, the conditions
// and the sale's Event, not another sale's; the namespace comes from -n or
// from the kubeconfig's context.
func TestStatus(t *testing.T) {
	w := newWorld(t)
	fs := w.sale("spring-sale", time.Now().Add(-time.Minute))
	other := w.sale("other-sale", time.Now().Add(time.Hour))
	w.writeStatus(fs, v1alpha1.PhaseActive, "phase Warming → Active: buyers admitted")
	w.writeStatus(other, v1alpha1.PhasePending, "this note belongs to another sale")

	out := w.ok("status", "spring-sale")
	wantContains(t, "status", out,
		"FlashSale "+w.ns+"/spring-sale   phase Active   ends in 28m",
		"SKU    STOCK  REMAINING  SOLD  PAID  CANCELLED  SOLD OUT  DEBT",
		"phone  1000   100        900   700   12         no",
		"case   5000   5000       0     0     0          no",
		"queue lag 42",
		"Ready     True    Live", "purchases admitted",
		"PhaseChanged  phase Warming → Active: buyers admitted")
	if strings.Contains(out, "another sale") || strings.Contains(out, "\033[") {
		t.Fatalf("status shows another sale's Event or escape codes:\n%s", out)
	}

	// The sale not yet warming: the countdown names the warm-up and the start.
	wantContains(t, "pending status", w.ok("status", "other-sale"), "phase Pending   warm-up in 54m", "starts in 59m")

	// Without -n: the namespace of the kubeconfig's context.
	kc, err := clientcmd.LoadFromFile(w.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.Contexts[kc.CurrentContext].Namespace = w.ns
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	out2, err := exec.Command(plugin, "--kubeconfig", path, "status", "spring-sale").CombinedOutput()
	if err != nil {
		t.Fatalf("status with the context's namespace: %v\n%s", err, out2)
	}
	wantContains(t, "status in the context's namespace", string(out2), "phase Active")
}

// TestStatusWatch: --watch into a pipe prints a frame, then a new frame
// (after a blank line, no escape codes) when the sale changes, and exits 0
// on Ctrl-C (SIGINT).
func TestStatusWatch(t *testing.T) {
	w := newWorld(t)
	fs := w.sale("spring-sale", time.Now().Add(-time.Minute))
	w.writeStatus(fs, v1alpha1.PhaseActive, "phase Warming → Active")

	var out testutil.SyncBuffer
	cmd := exec.Command(plugin, "--kubeconfig", w.kubeconfig, "-n", w.ns, "status", "spring-sale", "--watch")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	testutil.Eventually(t, 20*time.Second, "the first frame", func() bool {
		return strings.Contains(out.String(), "PhaseChanged")
	})
	first := out.String()
	if strings.Count(first, "FlashSale "+w.ns) != 1 || !strings.Contains(first, "paused false") {
		t.Fatalf("first frame:\n%s", first)
	}

	w.ok("pause", "spring-sale")
	testutil.Eventually(t, 20*time.Second, "a new frame showing the pause", func() bool {
		return strings.Contains(out.String(), "paused true")
	})
	got := out.String()
	if strings.Contains(got, "\033[") || !strings.Contains(got, "\n\nFlashSale "+w.ns+"/spring-sale") {
		t.Fatalf("frames in a pipe: escape codes, or no blank line between frames:\n%q", got)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("--watch after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--watch did not stop on Ctrl-C")
	}
}
