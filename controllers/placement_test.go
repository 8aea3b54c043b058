package controllers_test

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
)

// placements are what an SRE sets to put each workload of a sale on its
// dedicated nodes: every field on seckill, other values on the worker, and
// only a few on rollback (so its defaults show too).
func placements() map[string]v1alpha1.Placement {
	dedicated := corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "sale", Effect: corev1.TaintEffectNoSchedule}
	zone := corev1.TopologySpreadConstraint{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.ScheduleAnyway}
	return map[string]v1alpha1.Placement{
		controllers.ComponentSeckill: {
			NodeSelector: map[string]string{"node-role.example.com/sale": "api"},
			Tolerations:  []corev1.Toleration{dedicated},
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/arch", Operator: corev1.NodeSelectorOpIn, Values: []string{"amd64"}}},
				}}},
			}},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{zone},
			PriorityClassName:         "sale-critical",
			PodLabels:                 map[string]string{"team": "shop", "cost-center": "1234"},
			// prometheus.io/port is the operator's: its value wins.
			PodAnnotations: map[string]string{"example.com/owner": "sre", "prometheus.io/port": "1"},
		},
		controllers.ComponentWorker: {
			NodeSelector: map[string]string{"node-role.example.com/sale": "pipeline"},
			Tolerations:  []corev1.Toleration{dedicated, {Key: "spot", Operator: corev1.TolerationOpExists}},
			Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "batch"}}, TopologyKey: corev1.LabelHostname,
				}}},
			}},
			// A constraint with its own selector keeps it.
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
				MaxSkew: 2, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.DoNotSchedule,
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "pipeline"}},
			}},
			PriorityClassName: "sale-pipeline",
			PodLabels:         map[string]string{"team": "orders"},
			PodAnnotations:    map[string]string{"example.com/owner": "orders"},
		},
		controllers.ComponentRollback: {
			NodeSelector: map[string]string{"node-role.example.com/sale": "pipeline"},
			Tolerations:  []corev1.Toleration{dedicated},
		},
	}
}

// TestPlacementReachesDeployments: the placement of each workload of the
// spec is in the pod template of its Deployment, exactly; the operator's own
// labels and annotations win over the user's, a spread constraint without a
// selector selects the workload's own pods, and the API pods without an
// affinity of the spec keep the operator's default (spread over nodes).
func TestPlacementReachesDeployments(t *testing.T) {
	e := newEnv(t, envOpts{})
	want := placements()
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Seckill.Placement = want[controllers.ComponentSeckill]
		fs.Spec.Worker.Placement = want[controllers.ComponentWorker]
		fs.Spec.Rollback.Placement = want[controllers.ComponentRollback]
	})
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)

	for comp, p := range want {
		d := e.deployment(comp)
		pod := d.Spec.Template.Spec
		if !maps.Equal(pod.NodeSelector, p.NodeSelector) {
			t.Errorf("%s nodeSelector %v, want %v", comp, pod.NodeSelector, p.NodeSelector)
		}
		if !equality.Semantic.DeepEqual(pod.Tolerations, p.Tolerations) {
			t.Errorf("%s tolerations %+v, want %+v", comp, pod.Tolerations, p.Tolerations)
		}
		if pod.PriorityClassName != p.PriorityClassName {
			t.Errorf("%s priorityClassName %q, want %q", comp, pod.PriorityClassName, p.PriorityClassName)
		}
		if !equality.Semantic.DeepEqual(pod.Affinity, p.Affinity) {
			t.Errorf("%s affinity %+v, want %+v", comp, pod.Affinity, p.Affinity)
		}
		wantSpread := slices.Clone(p.TopologySpreadConstraints)
		for i := range wantSpread {
			if wantSpread[i].LabelSelector == nil {
				wantSpread[i].LabelSelector = &metav1.LabelSelector{MatchLabels: d.Spec.Selector.MatchLabels}
			}
		}
		if !equality.Semantic.DeepEqual(pod.TopologySpreadConstraints, wantSpread) {
			t.Errorf("%s topologySpreadConstraints %+v, want %+v", comp, pod.TopologySpreadConstraints, wantSpread)
		}
		checkPodMeta(t, comp, d, p)
	}
}

// checkPodMeta: the pods carry the user's labels and annotations and the
// operator's own, the operator's winning.
func checkPodMeta(t *testing.T, comp string, d *appsv1.Deployment, p v1alpha1.Placement) {
	t.Helper()
	meta := d.Spec.Template.ObjectMeta
	for k, v := range p.PodLabels {
		if meta.Labels[k] != v {
			t.Errorf("%s pod label %s=%q, want %q", comp, k, meta.Labels[k], v)
		}
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if meta.Labels[k] != v {
			t.Errorf("%s pod label %s=%q: the selector's label is lost", comp, k, meta.Labels[k])
		}
	}
	for k, v := range p.PodAnnotations {
		if k == "prometheus.io/port" {
			continue
		}
		if meta.Annotations[k] != v {
			t.Errorf("%s pod annotation %s=%q, want %q", comp, k, meta.Annotations[k], v)
		}
	}
	if meta.Annotations["flashsale.dev/config-hash"] == "" {
		t.Errorf("%s pods lost the operator's config-hash annotation: %v", comp, meta.Annotations)
	}
	if port := meta.Annotations["prometheus.io/port"]; port == "1" || port == "" {
		t.Errorf("%s prometheus.io/port %q: the operator's value must win", comp, port)
	}
	if len(p.PodLabels) == 0 && len(p.PodAnnotations) == 0 && len(meta.Labels) != len(controllers.Labels(&v1alpha1.FlashSale{}, comp)) {
		t.Errorf("%s pods carry labels nobody asked for: %v", comp, meta.Labels)
	}
}

// TestPlacementDefaults: without placement in the spec, the API pods prefer
// distinct nodes (a soft anti-affinity on their own labels) and the other
// workloads are left to the scheduler.
func TestPlacementDefaults(t *testing.T) {
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "singles-day"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)),
			EndTime:   metav1.NewTime(time.Date(2026, 11, 11, 12, 30, 0, 0, time.UTC)),
			SKUs:      []v1alpha1.SKU{{ID: "1001", Stock: 1, Price: "1.00"}},
			Seckill:   v1alpha1.Seckill{Replicas: 3},
			Worker:    v1alpha1.Worker{Replicas: 1},
		},
	}
	fs.SetDefaults()
	p, err := controllers.BuildPlan(fs, controllers.PlanInput{Image: "flashsale:1", Targets: controllers.Targets{Seckill: 3, Worker: 1}})
	if err != nil {
		t.Fatal(err)
	}
	a := p.Seckill.Spec.Template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Fatalf("seckill affinity %+v, want the default soft anti-affinity", a)
	}
	term := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != corev1.LabelHostname || !maps.Equal(term.LabelSelector.MatchLabels, p.Seckill.Spec.Selector.MatchLabels) {
		t.Errorf("seckill anti-affinity term %+v, want its own pods per host", term)
	}
	// An empty affinity in the spec is no affinity: the default stays.
	fs.Spec.Seckill.Affinity = &corev1.Affinity{}
	q, err := controllers.BuildPlan(fs, controllers.PlanInput{Image: "flashsale:1", Targets: controllers.Targets{Seckill: 3, Worker: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(q.Seckill.Spec.Template.Spec.Affinity, a) {
		t.Errorf("an empty spec affinity dropped the default: %+v", q.Seckill.Spec.Template.Spec.Affinity)
	}
	for _, d := range []*appsv1.Deployment{p.Worker, p.Rollback} {
		pod := d.Spec.Template.Spec
		if pod.Affinity != nil || pod.NodeSelector != nil || pod.Tolerations != nil || pod.TopologySpreadConstraints != nil || pod.PriorityClassName != "" {
			t.Errorf("%s placed without a placement in the spec: %+v", d.Name, pod)
		}
	}
}

// TestDataplanePorts: buyers reach the seckill pods on "http" only; their
// metrics and probes are on "metrics", a port of their own, as are the
// worker's and rollback's (the port contract NetworkPolicies and the
// PodMonitor rely on).
func TestDataplanePorts(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()

	type port struct {
		name string
		num  int32
	}
	for comp, want := range map[string][]port{
		controllers.ComponentSeckill:  {{"http", 8080}, {"metrics", 9090}},
		controllers.ComponentWorker:   {{"metrics", 9090}},
		controllers.ComponentRollback: {{"metrics", 9091}},
	} {
		d := e.deployment(comp)
		ctr := d.Spec.Template.Spec.Containers[0]
		var got []port
		for _, p := range ctr.Ports {
			got = append(got, port{p.Name, p.ContainerPort})
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s container ports %v, want %v", comp, got, want)
		}
		for name, probe := range map[string]*corev1.Probe{"readiness": ctr.ReadinessProbe, "liveness": ctr.LivenessProbe} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port != intstr.FromString("metrics") {
				t.Errorf("%s %s probe %+v, want HTTP on port metrics", comp, name, probe)
			}
		}
		metrics := want[len(want)-1].num
		if !slices.Contains(ctr.Args, "--metrics-addr=:"+itoa(metrics)) {
			t.Errorf("%s args %v lack --metrics-addr=:%d", comp, ctr.Args, metrics)
		}
		if got := d.Spec.Template.Annotations["prometheus.io/port"]; got != itoa(metrics) {
			t.Errorf("%s prometheus.io/port %q, want %d", comp, got, metrics)
		}
	}
	if args := e.deployment(controllers.ComponentSeckill).Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--listen=:8080") {
		t.Errorf("seckill args %v lack --listen=:8080", args)
	}

	var svc corev1.Service
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-seckill"}, &svc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range svc.Spec.Ports {
		got[p.Name] = itoa(p.Port) + "->" + p.TargetPort.StrVal
	}
	if want := map[string]string{"http": "80->http", "metrics": "9090->metrics"}; !maps.Equal(got, want) {
		t.Errorf("seckill Service ports %v, want %v", got, want)
	}
}

// TestSaleManifestLeavesOutPlacement: the sale.yaml the pods read carries
// no placement and no resources: no data-plane command reads them, and a
// pod of an older version (held through an operator upgrade) refuses
// unknown fields in it.
func TestSaleManifestLeavesOutPlacement(t *testing.T) {
	fs := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}}
	p := placements()
	fs.Spec.Seckill.Placement, fs.Spec.Worker.Placement, fs.Spec.Rollback.Placement =
		p[controllers.ComponentSeckill], p[controllers.ComponentWorker], p[controllers.ComponentRollback]
	fs.Spec.Seckill.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
	fs.Spec.Seckill.Replicas = 7
	m, err := controllers.SaleManifest(fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName", "podLabels", "podAnnotations", "resources"} {
		if strings.Contains(string(m), field+":") {
			t.Errorf("sale manifest carries %s:\n%s", field, m)
		}
	}
	if !strings.Contains(string(m), "replicas: 7") {
		t.Errorf("sale manifest lost seckill.replicas:\n%s", m)
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
