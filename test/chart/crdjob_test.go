package chart_test

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
)

// TestCRDUpgradeJob: crds.upgradeJob.enabled adds a pre-upgrade hook Job
// running `flashsale crds apply` with the operator's image, as a
// ServiceAccount that may get and patch the FlashSale CRD and nothing else.
// There is no kubelet here: the test creates the rendered RBAC for real and
// runs that command's ApplyCRDs as the ServiceAccount (impersonated) on a
// cluster holding the previous release's CRD. It upgrades the CRD, and the
// same identity is refused any other CRD.
func TestCRDUpgradeJob(t *testing.T) {
	objs := renderChart(t, minKubeVersion, "--set", "crds.upgradeJob.enabled=true")
	var job batchv1.Job
	fromUnstructured(t, find(t, objs, "Job"), &job)
	if got := job.Annotations["helm.sh/hook"]; got != "pre-upgrade" {
		t.Errorf("the Job's helm.sh/hook = %q, want pre-upgrade", got)
	}
	pod := job.Spec.Template.Spec
	if img := deployment(t, objs).Spec.Template.Spec.Containers[0].Image; pod.Containers[0].Image != img {
		t.Errorf("the Job runs %q, want the operator image %q (it embeds the new CRD)", pod.Containers[0].Image, img)
	}
	if !slices.Equal(pod.Containers[0].Args[:2], []string{"crds", "apply"}) {
		t.Errorf("the Job runs %v, want crds apply", pod.Containers[0].Args)
	}
	sa := findNamed(t, objs, "ServiceAccount", pod.ServiceAccountName)
	role := findNamed(t, objs, "ClusterRole", pod.ServiceAccountName)
	binding := findNamed(t, objs, "ClusterRoleBinding", pod.ServiceAccountName)

	c, kubeconfig := freshCluster(t)
	ctx := context.Background()
	var previous apiextensionsv1.CustomResourceDefinition
	readYAML(t, filepath.Join(root, "test", "chart", "testdata", "previous", previousChart, "crds", "flashsale.dev_flashsales.yaml"), &previous)
	if err := c.Create(ctx, &previous, client.FieldOwner("helm")); err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, c, namespace)
	for _, o := range []*unstructured.Unstructured{sa, role, binding} {
		if err := c.Create(ctx, o.DeepCopy()); err != nil {
			t.Fatalf("creating the hook's %s: %v", o.GetKind(), err)
		}
	}

	asJob := impersonate(t, kubeconfig, "system:serviceaccount:"+namespace+":"+sa.GetName())
	var out bytes.Buffer
	if err := cli.ApplyCRDs(ctx, asJob, &out, false); err != nil {
		t.Fatalf("flashsale crds apply as the Job's ServiceAccount: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "spec.seckill.nodeSelector") || !hasNodeSelector(t, c) {
		t.Errorf("the Job's crds apply did not upgrade the CRD:\n%s", out.String())
	}
	var other apiextensionsv1.CustomResourceDefinition
	err := asJob.Get(ctx, client.ObjectKey{Name: "servicemonitors.monitoring.coreos.com"}, &other)
	if !apierrors.IsForbidden(err) {
		t.Errorf("the Job's ServiceAccount reading another CRD: err %v, want Forbidden", err)
	}
	var rules rbacv1.ClusterRole
	fromUnstructured(t, role, &rules)
	for _, r := range rules.Rules {
		if len(r.ResourceNames) == 0 || slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "patch" }) {
			t.Errorf("the Job's ClusterRole rule %+v is wider than get/patch on named CRDs", r)
		}
	}
}

// impersonate returns a client of the cluster in kubeconfig acting as user.
func impersonate(t *testing.T, kubeconfig, user string) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	s := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
