// Package chart_test checks what the project ships to clusters: the Helm chart
// (charts/flashsale-operator) and the kustomize bases (config/). Each rendering
// is applied, object by object, to a real kube-apiserver (envtest, with our CRD
// and the Prometheus Operator's) with a server-side apply dry run, so that a
// field the API server would refuse fails here and not in a user's cluster.
//
// helm comes from HELM (make test sets it) or `bash hack/tools.sh helm`;
// kubectl (for kustomize) from KUBECTL or PATH; the envtest binaries from
// KUBEBUILDER_ASSETS (make test; see test/testutil).
package chart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const (
	// prometheusOperatorModule holds the monitoring.coreos.com CRDs the chart's
	// ServiceMonitor, PodMonitor and PrometheusRule are checked against. It is
	// fetched with `go mod download` (the Go module proxy), never added to go.mod.
	prometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

	// minKubeVersion is the chart's kubeVersion floor: the chart must lint there.
	minKubeVersion = "1.28.0"

	release    = "fs"
	namespace  = "flashsale-system"
	fieldOwner = "flashsale-chart-test"
)

var (
	root     = testutil.RepoRoot()
	chartDir = filepath.Join(root, "charts", "flashsale-operator")
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopKube()
	os.Exit(code)
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{
		{"lint", chartDir, "--kube-version", minKubeVersion},
		{"lint", chartDir, "--kube-version", minKubeVersion, "--strict"},
		{"lint", chartDir, "--kube-version", minKubeVersion, "--strict", "-f", testdata("all-switches.yaml")},
	} {
		out, err := runHelm(t, args...)
		if err != nil {
			t.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestBadValues: the schema refuses a wrong type, an unknown key at any level
// and a value outside an enum, in helm template and helm lint alike, with a
// message that names the key.
func TestBadValues(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string // every one must appear in helm's output
	}{
		{"wrong type", []string{"-f", testdata("wrong-type.yaml")}, []string{"replicaCount", "integer"}},
		{"unknown nested key", []string{"-f", testdata("unknown-key.yaml")}, []string{"refreshIntervall"}},
		{"unknown top-level key", []string{"--set", "replicas=3"}, []string{"replicas"}},
		{"pullPolicy enum", []string{"--set", "image.pullPolicy=Sometimes"}, []string{"pullPolicy", "IfNotPresent"}},
		{"logFormat enum", []string{"--set", "operator.logFormat=xml"}, []string{"logFormat"}},
		{"duration", []string{"--set", "operator.refreshInterval=5"}, []string{"refreshInterval"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range [][]string{
				append([]string{"template", release, chartDir, "--kube-version", minKubeVersion}, tc.args...),
				append([]string{"lint", chartDir, "--kube-version", minKubeVersion}, tc.args...),
			} {
				out, err := runHelm(t, cmd...)
				if err == nil {
					t.Errorf("helm %s succeeded, want it refused", strings.Join(cmd, " "))
					continue
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("helm %s: output does not name %q:\n%s", strings.Join(cmd, " "), w, out)
					}
				}
			}
		})
	}
	// Several replicas without leader election would all reconcile: the
	// template fails. (helm lint cannot tell: it ignores fail.)
	out, err := runHelm(t, "template", release, chartDir, "--kube-version", minKubeVersion, "--set", "leaderElection.enabled=false")
	if err == nil || !strings.Contains(out, "leaderElection.enabled") {
		t.Errorf("replicaCount 2 without leader election: err %v, want a failure naming leaderElection.enabled:\n%s", err, out)
	}
	// One replica without leader election is a valid choice.
	if out, err := runHelm(t, "template", release, chartDir, "--kube-version", minKubeVersion,
		"--set", "leaderElection.enabled=false", "--set", "replicaCount=1"); err != nil {
		t.Errorf("one replica without leader election: %v\n%s", err, out)
	}
}

func TestTemplateDefaults(t *testing.T) {
	c, kubeVersion := cluster(t)
	objs := renderChart(t, kubeVersion)
	dryRunApply(t, c, objs)

	kinds := kindsOf(objs)
	// The Pod and the second ServiceAccount are the helm test hook's (helmtest_test.go).
	// The second and third ClusterRole, and the second binding, are the metrics-auth and metrics-reader ones;
	// the fourth and fifth the flashsale-editor and -viewer; the Role and RoleBinding leader election's.
	want := []string{"ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "NetworkPolicy", "Pod", "Role", "RoleBinding", "Service", "ServiceAccount", "ServiceAccount"}
	if !slices.Equal(kinds, want) {
		t.Errorf("default render has kinds %v, want %v (monitoring objects are off by default)", kinds, want)
	}

	dep := deployment(t, objs)
	if n := *dep.Spec.Replicas; n != 2 {
		t.Errorf("replicas = %d, want 2", n)
	}
	ctr := dep.Spec.Template.Spec.Containers[0]
	wantImage := "ghcr.io/flashsale-dev/flashsale-operator:" + chartAppVersion(t)
	if ctr.Image != wantImage {
		t.Errorf("image = %q, want %q (the chart's appVersion)", ctr.Image, wantImage)
	}
	for _, arg := range []string{
		"manager", "--leader-elect", "--metrics-bind-address=:8443", "--metrics-secure=true", "--health-probe-bind-address=:8081",
		"--image-pull-policy=IfNotPresent", "--default-endpoints-secret=flashsale-endpoints",
		"--refresh-interval=5s", "--audit-interval=30s", "--cleanup-timeout=2m",
		"--max-concurrent-reconciles=8", "--log-format=json",
	} {
		if !slices.Contains(ctr.Args, arg) {
			t.Errorf("args %v lack %q", ctr.Args, arg)
		}
	}
	checkOperatorContainer(t, dep)
	checkClusterRole(t, objs)
	checkLeaderElectionRole(t, objs)
}

func TestTemplateAllSwitches(t *testing.T) {
	c, kubeVersion := cluster(t)
	objs := renderChart(t, kubeVersion, "-f", testdata("all-switches.yaml"))
	dryRunApply(t, c, objs)

	dep := deployment(t, objs)
	ctr := dep.Spec.Template.Spec.Containers[0]
	if want := "ghcr.io/flashsale-dev/flashsale-operator:0.1.0-rc.1"; ctr.Image != want {
		t.Errorf("image = %q, want %q", ctr.Image, want)
	}
	for _, arg := range []string{
		"--image-pull-policy=Always", "--default-endpoints-secret=shop-endpoints", "--refresh-interval=2s",
		"--audit-interval=1m", "--cleanup-timeout=5m", "--max-concurrent-reconciles=16", "--log-format=text",
		"--watch-namespaces=shop,outlet",
	} {
		if !slices.Contains(ctr.Args, arg) {
			t.Errorf("args %v lack %q", ctr.Args, arg)
		}
	}
	checkOperatorContainer(t, dep)
	checkClusterRole(t, objs)

	sm := find(t, objs, "ServiceMonitor")
	if got := nestedString(sm, "metadata", "labels", "release"); got != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor label release = %q, want the extra label", got)
	}
	ep := firstItem(t, sm, "spec", "endpoints")
	if ep["port"] != "metrics" || ep["honorLabels"] != true || ep["interval"] != "15s" {
		t.Errorf("ServiceMonitor endpoint = %v, want port metrics, honorLabels, interval 15s", ep)
	}

	checkServiceMonitor(t, objs)

	pm := find(t, objs, "PodMonitor")
	if got := nestedString(pm, "spec", "selector", "matchLabels", "app.kubernetes.io/managed-by"); got != "flashsale-operator" {
		t.Errorf("PodMonitor selects managed-by=%q, want flashsale-operator", got)
	}
	if anyNS, _, _ := unstructured.NestedBool(pm.Object, "spec", "namespaceSelector", "any"); !anyNS {
		t.Error("PodMonitor namespaceSelector.any is not true: it must scrape the sales of every namespace")
	}
	if pep := firstItem(t, pm, "spec", "podMetricsEndpoints"); pep["port"] != "metrics" {
		t.Errorf("PodMonitor endpoint port = %v, want metrics (the data-plane pods' metrics port, not the buyers' http)", pep["port"])
	}

	// The PrometheusRule is config/prometheus/rules.yaml's spec under the chart's metadata.
	pr := find(t, objs, "PrometheusRule")
	var source unstructured.Unstructured
	readYAML(t, filepath.Join(root, "config", "prometheus", "rules.yaml"), &source.Object)
	if !equality.Semantic.DeepEqual(pr.Object["spec"], source.Object["spec"]) {
		t.Error("PrometheusRule spec differs from config/prometheus/rules.yaml's (run make chart-sync)")
	}
	if pr.GetName() != release+"-flashsale-operator" || pr.GetNamespace() != namespace {
		t.Errorf("PrometheusRule is %s/%s, want the release's name and namespace", pr.GetNamespace(), pr.GetName())
	}
	if got := pr.GetLabels()["release"]; got != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule label release = %q, want the extra label", got)
	}

	cm := find(t, objs, "ConfigMap")
	if got := cm.GetLabels()["grafana_dashboard"]; got != "1" {
		t.Errorf("dashboard ConfigMap label grafana_dashboard = %q, want \"1\" (the Grafana sidecar's)", got)
	}
	if cm.GetLabels()["team"] != "shop" || cm.GetAnnotations()["grafana_folder"] != "Flash sales" {
		t.Errorf("dashboard ConfigMap lacks the extra labels/annotations: %v %v", cm.GetLabels(), cm.GetAnnotations())
	}
	dashboard, err := os.ReadFile(filepath.Join(root, "config", "grafana", "flashsale-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	got := nestedString(cm, "data", "flashsale-dashboard.json")
	if got != string(dashboard) {
		t.Error("dashboard ConfigMap data differs from config/grafana/flashsale-dashboard.json (run make chart-sync)")
	}
	if !json.Valid([]byte(got)) {
		t.Error("dashboard ConfigMap data is not JSON")
	}
}

// TestHelmInstall installs the chart for real into the test API server (no
// kubelet: nothing runs), with every switch on, upgrades it to the defaults
// (which must remove the monitoring objects) and uninstalls it: what a user's
// helm does, including its kubeVersion check against the server and NOTES.txt.
func TestHelmInstall(t *testing.T) {
	c, _ := cluster(t)
	cfg, _ := testutil.Kube(t, clientgoscheme.Scheme)
	kubeconfig := testutil.Kubeconfig(t, cfg)
	const rel, ns = "fs-install", "flashsale-helm"
	helm := func(args ...string) string {
		t.Helper()
		args = append(args, "--kubeconfig", kubeconfig, "--namespace", ns)
		out, err := runHelm(t, args...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := helm("install", rel, chartDir, "--create-namespace", "-f", testdata("all-switches.yaml"))
	for _, want := range []string{"STATUS: deployed", "rollout status deployment/" + rel, "PodMonitor " + rel, "grafana_dashboard"} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, out)
		}
	}
	ctx := context.Background()
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-flashsale-operator"}, &dep); err != nil {
		t.Fatalf("the installed Deployment: %v", err)
	}
	pm := &unstructured.Unstructured{}
	pm.SetAPIVersion("monitoring.coreos.com/v1")
	pm.SetKind("PodMonitor")
	key := client.ObjectKey{Namespace: ns, Name: rel + "-flashsale-operator-sales"}
	if err := c.Get(ctx, key, pm); err != nil {
		t.Fatalf("the installed PodMonitor: %v", err)
	}

	// The operator's NetworkPolicy (networkPolicy.enabled is on by default).
	var np networkingv1.NetworkPolicy
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: rel + "-flashsale-operator"}, &np); err != nil {
		t.Errorf("the installed operator NetworkPolicy: %v", err)
	}

	helm("upgrade", rel, chartDir, "--reset-values")
	if err := c.Get(ctx, key, pm); !apierrors.IsNotFound(err) {
		t.Errorf("after an upgrade with serviceMonitor.enabled=false the PodMonitor is still there (err %v)", err)
	}

	helm("uninstall", rel, "--wait", "--timeout", "1m")
	var crb rbacv1.ClusterRoleBinding
	if err := c.Get(ctx, client.ObjectKey{Name: rel + "-flashsale-operator"}, &crb); !apierrors.IsNotFound(err) {
		t.Errorf("after helm uninstall the ClusterRoleBinding is still there (err %v)", err)
	}
}

// TestKustomizeDefault: `kubectl apply -k config/default` would be accepted,
// and installs the same operator as the chart.
func TestKustomizeDefault(t *testing.T) {
	c, _ := cluster(t)
	objs := kustomize(t, filepath.Join(root, "config", "default"))
	dryRunApply(t, c, objs)

	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s %s is in namespace %q, want %s", o.GetKind(), o.GetName(), ns, namespace)
		}
		if o.GetKind() != "CustomResourceDefinition" && o.GetKind() != "Namespace" &&
			!strings.HasPrefix(o.GetName(), "flashsale-operator-") {
			t.Errorf("%s %s lacks the name prefix flashsale-operator-", o.GetKind(), o.GetName())
		}
	}
	if ns := find(t, objs, "Namespace"); ns.GetName() != namespace {
		t.Errorf("Namespace is %q, want %s", ns.GetName(), namespace)
	}
	dep := deployment(t, objs)
	checkOperatorContainer(t, dep)
	if !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--leader-elect") {
		t.Error("the kustomize Deployment runs without --leader-elect")
	}
	checkClusterRole(t, objs)
	checkLeaderElectionRole(t, objs)
}

// TestKustomizePrometheus: config/default with its [PROMETHEUS] line
// uncommented, as its comment tells users to do.
func TestKustomizePrometheus(t *testing.T) {
	c, _ := cluster(t)
	// A copy of config/ (kustomize refuses absolute paths to bases), edited there.
	dir := filepath.Join(t.TempDir(), "config")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(root, "config"))); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "default", "kustomization.yaml")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const commented = "#- ../prometheus"
	if !bytes.Contains(src, []byte(commented)) {
		t.Fatalf("config/default/kustomization.yaml has no %q line to uncomment", commented)
	}
	src = bytes.Replace(src, []byte(commented), []byte("- ../prometheus"), 1)
	//nolint:gosec // G703: path is in the test's own temporary directory
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	objs := kustomize(t, filepath.Join(dir, "default"))
	dryRunApply(t, c, objs)
	for _, kind := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"} {
		if o := find(t, objs, kind); o.GetNamespace() != namespace {
			t.Errorf("%s is in namespace %q, want %s", kind, o.GetNamespace(), namespace)
		}
	}
	checkServiceMonitor(t, objs)
}

// TestSamples: the sample sales pass the CRD's validation, and there is a
// minimal one and a realistic multi-SKU one.
func TestSamples(t *testing.T) {
	c, _ := cluster(t)
	objs := kustomize(t, filepath.Join(root, "config", "samples"))
	ensureNamespace(t, c, "shop")
	dryRunApply(t, c, objs)
	maxSKUs := 0
	for _, o := range objs {
		skus, _, _ := unstructured.NestedSlice(o.Object, "spec", "skus")
		maxSKUs = max(maxSKUs, len(skus))
	}
	if len(objs) < 2 || maxSKUs < 2 {
		t.Errorf("config/samples has %d sales, the largest with %d SKUs: want a minimal and a multi-SKU one", len(objs), maxSKUs)
	}
}

// checkOperatorContainer checks what both installs must get right: the data
// plane runs the operator's own image, the lease namespace, probes, and a
// locked-down container with a writable /tmp.
func checkOperatorContainer(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	spec := dep.Spec.Template.Spec
	ctr := spec.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	if got := env["FLASHSALE_IMAGE"].Value; got != ctr.Image {
		t.Errorf("FLASHSALE_IMAGE = %q, want the container's own image %q", got, ctr.Image)
	}
	if ref := env["POD_NAMESPACE"].ValueFrom; ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE is not from fieldRef metadata.namespace: %+v", env["POD_NAMESPACE"])
	}
	for name, p := range map[string]*corev1.Probe{"liveness": ctr.LivenessProbe, "readiness": ctr.ReadinessProbe} {
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe = %+v, want GET %s on port health", name, p, want)
		}
	}
	ports := map[string]int32{}
	for _, p := range ctr.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != 8443 || ports["health"] != 8081 {
		t.Errorf("container ports = %v, want metrics 8443 (HTTPS) and health 8081", ports)
	}
	psc, sc := spec.SecurityContext, ctr.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context = %+v, want non-root 65532 with RuntimeDefault seccomp", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context = %+v, want a read-only root, no privilege escalation, drop ALL", sc)
	}
	tmp := false
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == "/tmp" {
			for _, v := range spec.Volumes {
				tmp = tmp || (v.Name == m.Name && v.EmptyDir != nil)
			}
		}
	}
	if !tmp {
		t.Error("no writable /tmp (an emptyDir) under the read-only root filesystem")
	}
	if ctr.Resources.Requests.Cpu().IsZero() || ctr.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want requests and a memory limit", ctr.Resources)
	}
}

// checkServiceMonitor: the ServiceMonitor selects the metrics Service by its
// labels and port name, and the Service reaches the operator's metrics port.
func checkServiceMonitor(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var svc corev1.Service
	fromUnstructured(t, find(t, objs, "Service"), &svc)
	sm := find(t, objs, "ServiceMonitor")
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service (labels %v)", sel, svc.Labels)
	}
	ep := firstItem(t, sm, "spec", "endpoints")
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep["port"] })
	if i < 0 {
		t.Fatalf("ServiceMonitor scrapes port %v, the Service has %+v", ep["port"], svc.Spec.Ports)
	}
	dep := deployment(t, objs)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("metrics Service selector %v does not select the operator pods (labels %v)", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	if tp := svc.Spec.Ports[i].TargetPort.String(); tp != "metrics" {
		t.Errorf("metrics Service targets port %q, want the container's port named metrics", tp)
	}
}

// operatorClusterRoles are the ClusterRoles of config/rbac that both installs
// render, each with whether the operator's ServiceAccount is bound to it.
var operatorClusterRoles = map[string]bool{
	"role.yaml":                  true,  // generated by controller-gen from the markers (make manifests)
	"metrics_auth_role.yaml":     true,  // TokenReviews and SubjectAccessReviews of /metrics scrapers
	"metrics_reader_role.yaml":   false, // for Prometheus's ServiceAccount
	"flashsale_editor_role.yaml": false, // for people: aggregated into edit/admin
	"flashsale_viewer_role.yaml": false, // for people: aggregated into view
}

// checkLeaderElectionRole: the only Role is leader election's, with exactly
// the rules of config/rbac/leader_election_role.yaml, bound to the operator's
// ServiceAccount in the operator's namespace.
func checkLeaderElectionRole(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var want, role rbacv1.Role
	var rb rbacv1.RoleBinding
	readYAML(t, filepath.Join(root, "config", "rbac", "leader_election_role.yaml"), &want)
	fromUnstructured(t, find(t, objs, "Role"), &role)
	fromUnstructured(t, find(t, objs, "RoleBinding"), &rb)
	if !equality.Semantic.DeepEqual(role.Rules, want.Rules) || role.Namespace != namespace {
		t.Errorf("leader election Role %s/%s has rules %+v, want those of config/rbac/leader_election_role.yaml in %s: %+v",
			role.Namespace, role.Name, role.Rules, namespace, want.Rules)
	}
	sa := deployment(t, objs).Spec.Template.Spec.ServiceAccountName
	if rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 || rb.Subjects[0].Name != sa || rb.Subjects[0].Namespace != namespace {
		t.Errorf("leader election RoleBinding %+v does not bind Role %s to ServiceAccount %s/%s", rb, role.Name, namespace, sa)
	}
}

// checkClusterRole: each ClusterRole of operatorClusterRoles is rendered with
// exactly its rules, bound to the operator's ServiceAccount where it should be.
func checkClusterRole(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	bound := operatorBindings(t, objs)
	var rendered []rbacv1.ClusterRole
	for _, o := range objs {
		if o.GetKind() == "ClusterRole" {
			var cr rbacv1.ClusterRole
			fromUnstructured(t, o, &cr)
			rendered = append(rendered, cr)
		}
	}
	for file, wantBound := range operatorClusterRoles {
		var want rbacv1.ClusterRole
		readYAML(t, filepath.Join(root, "config", "rbac", file), &want)
		i := slices.IndexFunc(rendered, func(cr rbacv1.ClusterRole) bool { return equality.Semantic.DeepEqual(cr.Rules, want.Rules) })
		if len(want.Rules) == 0 || i < 0 {
			w, _ := yaml.Marshal(want.Rules)
			t.Errorf("no rendered ClusterRole has the rules of config/rbac/%s (run make manifests):\n%s", file, w)
			continue
		}
		if name := rendered[i].Name; bound[name] != wantBound {
			t.Errorf("ClusterRole %s (config/rbac/%s): bound to the operator's ServiceAccount is %v, want %v", name, file, bound[name], wantBound)
		}
	}
}

// operatorBindings are the names of the ClusterRoles bound to the operator's
// ServiceAccount (the Deployment's, in namespace).
func operatorBindings(t *testing.T, objs []*unstructured.Unstructured) map[string]bool {
	t.Helper()
	sa := deployment(t, objs).Spec.Template.Spec.ServiceAccountName
	bound := map[string]bool{}
	for _, o := range objs {
		if o.GetKind() != "ClusterRoleBinding" {
			continue
		}
		var crb rbacv1.ClusterRoleBinding
		fromUnstructured(t, o, &crb)
		for _, s := range crb.Subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == namespace {
				bound[crb.RoleRef.Name] = true
			}
		}
	}
	return bound
}

// cluster returns a client of the test API server, with the Prometheus
// Operator's CRDs installed, and the Kubernetes version it reports.
func cluster(t *testing.T) (client.Client, string) {
	t.Helper()
	cfg, _ := testutil.Kube(t, clientgoscheme.Scheme)
	monitoringOnce.Do(func() { monitoringErr = installMonitoringCRDs(cfg) })
	if monitoringErr != nil {
		t.Fatal(monitoringErr)
	}
	// A client made after the CRDs exist: its REST mapper knows their kinds.
	_, c := testutil.Kube(t, clientgoscheme.Scheme)
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	ensureNamespace(t, c, namespace)
	return c, v.GitVersion
}

var (
	monitoringOnce sync.Once
	monitoringErr  error
)

// installMonitoringCRDs installs the ServiceMonitor, PodMonitor and
// PrometheusRule CRDs from the Prometheus Operator module.
func installMonitoringCRDs(cfg *rest.Config) error {
	var paths []string
	dir, err := moduleDir(prometheusOperatorModule)
	if err != nil {
		return err
	}
	for _, kind := range []string{"servicemonitors", "podmonitors", "prometheusrules"} {
		paths = append(paths, filepath.Join(dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_"+kind+".yaml"))
	}
	_, err = envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true})
	if err != nil {
		return fmt.Errorf("installing the monitoring.coreos.com CRDs from %s: %w", dir, err)
	}
	return nil
}

// moduleDir downloads a module (path@version) through the Go module proxy into
// the module cache and returns its directory. It runs outside this module, so
// that go.mod is never touched.
func moduleDir(mod string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, info.Error)
	}
	if err != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %v\n%s%s", mod, err, out, stderr.Bytes())
	}
	return info.Dir, nil
}

func ensureNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.Name = name
	if err := c.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// dryRunApply server-side applies every object with dryRun=All: the API
// server decodes, defaults, validates (schema, CEL, admission) and refuses
// unknown fields, and nothing is stored. Namespaces are created for real first,
// as the objects in them could not be checked otherwise.
func dryRunApply(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	if len(objs) == 0 {
		t.Fatal("nothing rendered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			ensureNamespace(t, c, o.GetName())
		}
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			continue
		}
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
			client.FieldOwner(fieldOwner), client.ForceOwnership, client.DryRunAll)
		if err != nil {
			t.Errorf("server-side apply (dry run) of %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// renderChart runs helm template on the chart, with its CRDs, for the release
// in namespace and the given Kubernetes version.
func renderChart(t *testing.T, kubeVersion string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	args = append([]string{"template", release, chartDir, "--namespace", namespace,
		"--kube-version", kubeVersion, "--include-crds"}, args...)
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return decode(t, out)
}

// kustomize renders a kustomization with kubectl's built-in kustomize.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	kubectl := os.Getenv("KUBECTL")
	if kubectl == "" {
		var err error
		if kubectl, err = exec.LookPath("kubectl"); err != nil {
			t.Fatal("kubectl is not on PATH (the kustomize tests render config/ with `kubectl kustomize`): " +
				"install it (apt-get install kubectl from the Kubernetes apt repository, " +
				"see https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/) or set KUBECTL to its path")
		}
	}
	//nolint:gosec // G702: kubectl is the developer's own (KUBECTL or PATH)
	cmd := exec.Command(kubectl, "kustomize", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.Bytes())
	}
	return decode(t, string(out))
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// runHelm runs helm with its cache, config and data in a temporary directory
// and returns its combined output.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmErr = findHelm() })
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	home := t.TempDir()
	cmd := exec.Command(helmPath, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// findHelm: HELM, else the pinned helm of hack/tools.sh (built on first use, ~3 min cold).
func findHelm() (string, error) {
	if h := os.Getenv("HELM"); h != "" {
		//nolint:gosec // G703: the path is the developer's own HELM
		if _, err := os.Stat(h); err != nil {
			return "", fmt.Errorf("HELM=%s: %w (make helm installs it)", h, err)
		}
		return h, nil
	}
	cmd := exec.Command("bash", filepath.Join(root, "hack", "tools.sh"), "helm")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("bash hack/tools.sh helm: %w (or set HELM to a helm binary)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// decode splits a multi-document YAML stream into objects, skipping empty documents.
func decode(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	for {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decoding the rendered manifests: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

func kindsOf(objs []*unstructured.Unstructured) []string {
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	slices.Sort(kinds)
	return kinds
}

// find returns the only object of kind.
func find(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s rendered, want 1 (kinds: %v)", len(found), kind, kindsOf(objs))
	}
	return found[0]
}

func deployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	var dep appsv1.Deployment
	fromUnstructured(t, find(t, objs, "Deployment"), &dep)
	if len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", len(dep.Spec.Template.Spec.Containers))
	}
	return &dep
}

func fromUnstructured(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func nestedString(u *unstructured.Unstructured, fields ...string) string {
	s, _, _ := unstructured.NestedString(u.Object, fields...)
	return s
}

func firstItem(t *testing.T, u *unstructured.Unstructured, fields ...string) map[string]any {
	t.Helper()
	items, _, _ := unstructured.NestedSlice(u.Object, fields...)
	if len(items) == 0 {
		t.Fatalf("%s %s has no %s", u.GetKind(), u.GetName(), strings.Join(fields, "."))
	}
	m, _ := items[0].(map[string]any)
	return m
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &chart)
	return chart.AppVersion
}

func testdata(name string) string { return filepath.Join(root, "test", "chart", "testdata", name) }
