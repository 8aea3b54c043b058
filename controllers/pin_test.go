package controllers_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const (
	imageA = "registry.example/flashsale:0.9.0"
	imageB = "registry.example/flashsale:1.0.0"
	imageC = "registry.example/flashsale:1.0.1-hotfix"
)

var components = []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback}

// TestDataplanePinnedAcrossOperatorUpgrade upgrades the operator (another
// image, another version whose pod template differs) during an Active sale:
// the sale's Deployments keep their image and their pod template and still
// get their replica counts; a change of the user (spec.image) applies at
// once; a sale that warms after the upgrade gets the new image.
func TestDataplanePinnedAcrossOperatorUpgrade(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.r.Image, e.r.OperatorVersion = imageA, "v0.9.0"
	e.sale(nil)
	later := e.laterSale("later", time.Hour)
	e.reconcile()
	if dp := e.get().Status.DataPlane; dp != nil {
		t.Fatalf("status.dataPlane %+v before the warm-up, want none", dp)
	}
	warmAndOpen(t, e, false)
	wantDataPlane(t, e, saleName, imageA, "v0.9.0")
	wantImages(t, e, saleName, imageA)

	// The Deployments as v0.9.0 rendered them: its ports were all named
	// "http" and the seckill pods served their metrics on the buyers' port.
	e.renderAsBeforePortSplit()
	e.markReady()
	before := e.templates(saleName)

	// The upgrade: a new image and a new version, whose template differs.
	e.r.Image, e.r.OperatorVersion = imageB, "v1.0.0"
	for range 3 {
		e.clk.Step(controllers.DefaultRefreshInterval)
		e.reconcile()
	}
	e.wantPhase(v1alpha1.PhaseActive)
	wantDataPlane(t, e, saleName, imageA, "v0.9.0")
	wantImages(t, e, saleName, imageA)
	e.wantTemplates(saleName, before, "after the operator upgrade")

	// Replica counts still apply: at the end the API pods scale down to
	// their draining size, with the template kept.
	e.clk.SetTime(e.t0.Add(20 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseDraining)
	if n := *e.deployment(controllers.ComponentSeckill).Spec.Replicas; n != 1 {
		t.Fatalf("seckill replicas %d while draining, want drainingReplicas 1", n)
	}
	e.wantTemplates(saleName, before, "while draining")

	// The user asks for another image: an explicit request, applied at once
	// by the running operator, which pins it.
	fs := e.get()
	fs.Spec.Image = imageC
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	wantDataPlane(t, e, saleName, imageC, "v1.0.0")
	wantImages(t, e, saleName, imageC)
	for _, comp := range components {
		d := e.deployment(comp)
		if v := d.Annotations[controllers.OperatorVersionAnnotation]; v != "v1.0.0" {
			t.Errorf("%s rendered by %q after the user's change, want v1.0.0", comp, v)
		}
		if p := d.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Port; p != intstr.FromString("metrics") {
			t.Errorf("%s probes port %s after the user's change, want this operator's template (metrics)", comp, p.StrVal)
		}
	}

	// A sale that warms after the upgrade runs the new operator's image.
	e.clk.SetTime(later.Spec.StartTime.Add(-5 * time.Minute))
	e.reconcileSale(later.Name)
	wantDataPlane(t, e, later.Name, imageB, "v1.0.0")
	wantImages(t, e, later.Name, imageB)
}

// TestDataplaneAdoptsRunningImage: a sale that went live under an operator
// from before the pin (no status.dataPlane, no record on its Deployments)
// is pinned to the image its pods run, and its templates are kept.
func TestDataplaneAdoptsRunningImage(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.r.Image = imageA
	e.sale(nil)
	warmAndOpen(t, e, false)
	e.forgetPin()
	e.renderAsBeforePortSplit()
	before := e.templates(saleName)

	e.r.Image, e.r.OperatorVersion = imageB, "v1.0.0"
	e.clk.Step(controllers.DefaultRefreshInterval)
	e.reconcile()
	wantDataPlane(t, e, saleName, imageA, "v1.0.0")
	wantImages(t, e, saleName, imageA)
	e.wantTemplates(saleName, before, "after adopting the sale")
}

// TestDataplaneWarmingSaleTakesNewTemplate: a sale still warming (gate not
// open) when the operator is upgraded runs the new operator's image with
// its template, never the old image with a template whose flags the old
// binary refuses; the pin moves to the new image.
func TestDataplaneWarmingSaleTakesNewTemplate(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.r.Image, e.r.OperatorVersion = imageA, "v0.9.0"
	e.sale(nil)
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	if e.get().Status.OpenedAt != nil {
		t.Fatal("the go-live gate opened before the pods were ready")
	}
	e.forgetPin()
	e.renderAsBeforePortSplit()

	e.r.Image, e.r.OperatorVersion = imageB, "v1.0.0"
	e.clk.Step(controllers.DefaultRefreshInterval)
	e.reconcile()
	wantDataPlane(t, e, saleName, imageB, "v1.0.0")
	wantImages(t, e, saleName, imageB)
	if args := e.deployment(controllers.ComponentSeckill).Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--metrics-addr=:9090") {
		t.Fatalf("seckill args %v of the warming sale, want the new template's --metrics-addr=:9090", args)
	}
}

// TestDataplaneHeldSaleRollsForPrice: a live sale held on an older
// operator's template and image keeps them when the user changes a price,
// and its pods still roll to read the new sale.yaml (the config hash).
func TestDataplaneHeldSaleRollsForPrice(t *testing.T) {
	e, old := heldSale(t)
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[0].Price = "1" + fs.Spec.SKUs[0].Price })
	d := e.deployment(controllers.ComponentSeckill).Spec.Template
	wantOld(t, d, old, "after a price change")
	if d.Annotations["flashsale.dev/config-hash"] == old.Annotations["flashsale.dev/config-hash"] {
		t.Errorf("config-hash annotation unchanged after a price change: the pods would not read the new price")
	}
	wantImages(t, e, saleName, imageA)
}

// TestDataplaneHeldSaleTakesResources: more memory and another node pool
// asked of a held sale apply at once, with the old image and args.
func TestDataplaneHeldSaleTakesResources(t *testing.T) {
	e, old := heldSale(t)
	mem := resource.MustParse("777Mi")
	e.update(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Seckill.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: mem}}
		fs.Spec.Seckill.NodeSelector = map[string]string{"pool": "sale"}
	})
	d := e.deployment(controllers.ComponentSeckill).Spec.Template
	wantOld(t, d, old, "after a resources change")
	if q := d.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory]; !q.Equal(mem) {
		t.Errorf("seckill memory request %s after the user's change, want 777Mi", q.String())
	}
	if ns := d.Spec.NodeSelector; ns["pool"] != "sale" {
		t.Errorf("seckill nodeSelector %v after the user's change, want pool=sale", ns)
	}
	wantImages(t, e, saleName, imageA)
}

// heldSale is an Active sale an operator from before the pin rendered
// (imageA, seckill without --metrics-addr), adopted by v1.0.0 (imageB);
// old is its seckill pod template.
func heldSale(t *testing.T) (*env, corev1.PodTemplateSpec) {
	e := newEnv(t, envOpts{})
	e.r.Image = imageA
	e.sale(nil)
	warmAndOpen(t, e, false)
	e.forgetPin()
	e.renderAsBeforePortSplit()
	e.markReady()
	old := e.deployment(controllers.ComponentSeckill).Spec.Template
	e.r.Image, e.r.OperatorVersion = imageB, "v1.0.0"
	e.clk.Step(controllers.DefaultRefreshInterval)
	e.reconcile()
	wantDataPlane(t, e, saleName, imageA, "v1.0.0")
	return e, old
}

// TestDataplaneHeldSaleUserImage: naming another image on a held sale is
// an explicit request: the pods get it with this operator's template.
func TestDataplaneHeldSaleUserImage(t *testing.T) {
	e, _ := heldSale(t)
	e.update(func(fs *v1alpha1.FlashSale) { fs.Spec.Image = imageC })
	wantDataPlane(t, e, saleName, imageC, "v1.0.0")
	wantImages(t, e, saleName, imageC)
	if args := e.deployment(controllers.ComponentSeckill).Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--metrics-addr=:9090") {
		t.Fatalf("seckill args %v with the user's image, want this operator's template", args)
	}
}

// wantOld: the held template still has the old image and args.
func wantOld(t *testing.T, d, old corev1.PodTemplateSpec, when string) {
	t.Helper()
	c, o := d.Spec.Containers[0], old.Spec.Containers[0]
	if c.Image != o.Image || !slices.Equal(c.Args, o.Args) {
		t.Errorf("seckill runs %s %v %s, want the old %s %v", c.Image, c.Args, when, o.Image, o.Args)
	}
}

// update changes the sale's spec and reconciles.
func (e *env) update(change func(*v1alpha1.FlashSale)) {
	e.t.Helper()
	fs := e.get()
	change(fs)
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		e.t.Fatal(err)
	}
	e.clk.Step(controllers.DefaultRefreshInterval)
	e.reconcile()
}

// forgetPin makes the sale look as an operator from before the pin left
// it: no status.dataPlane, no record on its Deployments.
func (e *env) forgetPin() {
	e.t.Helper()
	fs := e.get()
	base := fs.DeepCopy()
	fs.Status.DataPlane = nil
	if err := e.k8s.Status().Patch(e.ctx, fs, client.MergeFrom(base)); err != nil {
		e.t.Fatal(err)
	}
	for _, comp := range components {
		d := e.deployment(comp)
		delete(d.Annotations, controllers.OperatorVersionAnnotation)
		if err := e.k8s.Update(e.ctx, d); err != nil {
			e.t.Fatal(err)
		}
	}
}

// laterSale creates a second sale in the test's namespace, starting lead
// after the first.
func (e *env) laterSale(name string, lead time.Duration) *v1alpha1.FlashSale {
	e.t.Helper()
	for _, p := range keys.Patterns(e.ns + "/" + name) {
		testutil.CleanupKeys(e.t, e.uc, p)
	}
	return e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Name = name
		fs.Spec.StartTime.Time = fs.Spec.StartTime.Add(lead)
		fs.Spec.EndTime.Time = fs.Spec.EndTime.Add(lead)
	})
}

func (e *env) reconcileSale(name string) {
	e.t.Helper()
	if _, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: e.ns, Name: name}}); err != nil {
		e.t.Fatalf("reconcile %s: %v", name, err)
	}
}

func (e *env) deploymentOf(sale, comp string) *appsv1.Deployment {
	e.t.Helper()
	var d appsv1.Deployment
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: sale + "-" + comp}, &d); err != nil {
		e.t.Fatalf("%s Deployment of %s: %v", comp, sale, err)
	}
	return &d
}

// renderAsBeforePortSplit rewrites the three pod templates as an operator
// from before the metrics port split rendered them.
func (e *env) renderAsBeforePortSplit() {
	e.t.Helper()
	for _, comp := range components {
		d := e.deployment(comp)
		ctr := &d.Spec.Template.Spec.Containers[0]
		ctr.Ports = slices.DeleteFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && comp == controllers.ComponentSeckill })
		ctr.Args = slices.DeleteFunc(ctr.Args, func(a string) bool {
			return strings.HasPrefix(a, "--metrics-addr") && comp == controllers.ComponentSeckill
		})
		ctr.Ports[0].Name = "http"
		ctr.ReadinessProbe.HTTPGet.Port = intstr.FromString("http")
		ctr.LivenessProbe.HTTPGet.Port = intstr.FromString("http")
		if err := e.k8s.Update(e.ctx, d); err != nil {
			e.t.Fatalf("render %s as before: %v", comp, err)
		}
	}
}

func (e *env) templates(sale string) map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, comp := range components {
		out[comp] = e.deploymentOf(sale, comp).Spec.Template
	}
	return out
}

// wantTemplates: the sale's pod templates are still those of before, so
// no pod was rolled.
func (e *env) wantTemplates(sale string, before map[string]corev1.PodTemplateSpec, when string) {
	e.t.Helper()
	for comp, tmpl := range e.templates(sale) {
		if !equality.Semantic.DeepEqual(tmpl, before[comp]) {
			c, b := tmpl.Spec.Containers[0], before[comp].Spec.Containers[0]
			e.t.Errorf("%s pod template changed %s (the pods roll): ports %+v args %v, were %+v %v",
				comp, when, c.Ports, c.Args, b.Ports, b.Args)
		}
	}
}

func wantDataPlane(t *testing.T, e *env, sale, image, version string) {
	t.Helper()
	var fs v1alpha1.FlashSale
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: sale}, &fs); err != nil {
		t.Fatal(err)
	}
	if dp := fs.Status.DataPlane; dp == nil || dp.Image != image || dp.OperatorVersion != version {
		t.Fatalf("%s status.dataPlane %+v, want image %s pinned by %s", sale, dp, image, version)
	}
}

func wantImages(t *testing.T, e *env, sale, image string) {
	t.Helper()
	for _, comp := range components {
		if got := e.deploymentOf(sale, comp).Spec.Template.Spec.Containers[0].Image; got != image {
			t.Errorf("%s of %s runs %s, want %s", comp, sale, got, image)
		}
	}
}
