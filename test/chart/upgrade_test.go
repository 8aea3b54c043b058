package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// previousChart is the chart release users have installed
// (testdata/previous/README.md says how to refresh it at each release).
const previousChart = "flashsale-operator-0.1.0"

// TestHelmUpgradeFromPrevious upgrades an installation of the previous chart
// release, with a FlashSale in it, the supported way: the CRD step (Helm never
// upgrades crds/), then helm upgrade. Both documented CRD steps are run:
// `make upgrade-crds` (flashsale crds apply) and its kubectl equivalent.
func TestHelmUpgradeFromPrevious(t *testing.T) {
	for _, tc := range []struct {
		name    string
		crdStep func(t *testing.T, kubeconfig string) string
	}{
		{"make upgrade-crds", func(t *testing.T, kubeconfig string) string {
			return runIn(t, root, []string{"KUBECONFIG=" + kubeconfig}, "make", "--no-print-directory", "upgrade-crds")
		}},
		{"kubectl apply --server-side", func(t *testing.T, kubeconfig string) string {
			return runIn(t, root, nil, kubectlPath(t), "--kubeconfig", kubeconfig, "apply", "--server-side",
				"--force-conflicts", "--field-manager=flashsale-operator", "-f", filepath.Join(chartDir, "crds"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testUpgrade(t, tc.crdStep) })
	}
}

func testUpgrade(t *testing.T, crdStep func(t *testing.T, kubeconfig string) string) {
	c, kubeconfig := freshCluster(t)
	const rel, ns = "fs-upgrade", "flashsale-upgrade"
	helm := func(args ...string) string {
		t.Helper()
		args = append(args, "--kubeconfig", kubeconfig, "--namespace", ns)
		out, err := runHelm(t, args...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	helm("install", rel, filepath.Join(root, "test", "chart", "testdata", "previous", previousChart), "--create-namespace")
	if hasNodeSelector(t, c) {
		t.Fatalf("the CRD of %s already has spec.seckill.nodeSelector: testdata/previous is not the previous release", previousChart)
	}
	old := sale("before-upgrade", ns, nil)
	if err := c.Create(context.Background(), old); err != nil {
		t.Fatalf("a FlashSale of the old schema: %v", err)
	}
	placed := map[string]any{"disktype": "ssd"}
	checkPlacement(t, c, ns, placed, false)

	out := crdStep(t, kubeconfig)
	t.Logf("CRD step:\n%s", out)
	out = helm("upgrade", rel, chartDir)
	if !strings.Contains(out, "STATUS: deployed") {
		t.Errorf("helm upgrade output lacks STATUS: deployed:\n%s", out)
	}

	if !hasNodeSelector(t, c) {
		t.Error("after the upgrade the served CRD has no spec.seckill.nodeSelector: the CRD step did not upgrade it")
	}
	checkPlacement(t, c, ns, placed, true)
	var got v1alpha1.FlashSale
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(old), &got); err != nil {
		t.Fatalf("the FlashSale created before the upgrade: %v", err)
	}
	if len(got.Spec.SKUs) != 1 || got.Spec.SKUs[0].ID != "1001" || got.Spec.SKUs[0].Stock != 5 {
		t.Errorf("the FlashSale created before the upgrade reads back as %+v", got.Spec.SKUs)
	}
	var dep appsv1.Deployment
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: rel + "-flashsale-operator"}, &dep); err != nil {
		t.Fatal(err)
	}
	want := "ghcr.io/flashsale-dev/flashsale-operator:" + chartAppVersion(t)
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != want || strings.HasSuffix(want, ":0.1.0") {
		t.Errorf("after helm upgrade the operator image is %q, want %q (the new chart's appVersion)", img, want)
	}
}

// checkPlacement creates a FlashSale with spec.seckill.nodeSelector, with
// strict field validation (kubectl's default) and without (client-go's). An
// old CRD refuses the first and drops the field from the second; an upgraded
// one accepts and keeps it.
func checkPlacement(t *testing.T, c client.Client, ns string, nodeSelector map[string]any, served bool) {
	t.Helper()
	ctx := context.Background()
	strict := sale("placed-strict", ns, nodeSelector)
	err := c.Create(ctx, strict, client.FieldValidation("Strict"))
	if served && err != nil {
		t.Errorf("a FlashSale with spec.seckill.nodeSelector refused after the upgrade: %v", err)
	}
	if !served && (err == nil || !strings.Contains(err.Error(), "nodeSelector")) {
		t.Errorf("the old CRD accepted spec.seckill.nodeSelector with strict validation (err %v), want it refused naming the field", err)
	}
	lax := sale("placed", ns, nodeSelector)
	if err := c.Create(ctx, lax); err != nil {
		t.Fatalf("a FlashSale with spec.seckill.nodeSelector, no strict validation: %v", err)
	}
	kept, _, _ := unstructured.NestedMap(lax.Object, "spec", "seckill", "nodeSelector")
	if served != (len(kept) > 0) {
		t.Errorf("served schema has nodeSelector %t, but the stored sale kept spec.seckill.nodeSelector=%v", served, kept)
	}
	for _, o := range []*unstructured.Unstructured{strict, lax} {
		_ = c.Delete(ctx, o)
	}
}

func sale(name, ns string, nodeSelector map[string]any) *unstructured.Unstructured {
	spec := map[string]any{
		"startTime": "2099-01-01T00:00:00Z",
		"endTime":   "2099-01-01T01:00:00Z",
		"skus":      []any{map[string]any{"id": "1001", "stock": int64(5), "price": "9.99"}},
	}
	if nodeSelector != nil {
		spec["seckill"] = map[string]any{"replicas": int64(1), "nodeSelector": nodeSelector}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("FlashSale")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func hasNodeSelector(t *testing.T, c client.Client) bool {
	t.Helper()
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Get(context.Background(), client.ObjectKey{Name: "flashsales.flashsale.dev"}, &crd); err != nil {
		t.Fatalf("the FlashSale CRD: %v", err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == "v1alpha1" && v.Served && v.Schema != nil {
			_, ok := v.Schema.OpenAPIV3Schema.Properties["spec"].Properties["seckill"].Properties["nodeSelector"]
			return ok
		}
	}
	return false
}

// freshCluster starts a kube-apiserver of the test's own, without our CRD
// (the shared one of cluster() has the current CRD installed, and Helm skips
// a CRD that exists), and returns a client and a kubeconfig of it.
func freshCluster(t *testing.T) (client.Client, string) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal(`KUBEBUILDER_ASSETS is not set: KUBEBUILDER_ASSETS="$(bash hack/controlplane.sh)" (make test sets it)`)
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c, testutil.Kubeconfig(t, cfg)
}

// runIn runs a command in dir with extra environment and returns its output,
// failing the test when it fails.
func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func kubectlPath(t *testing.T) string {
	t.Helper()
	if k := os.Getenv("KUBECTL"); k != "" {
		return k
	}
	k, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is not on PATH: install it or set KUBECTL to its path")
	}
	return k
}
