package cli_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const crdName = "flashsales.flashsale.dev"

// bareKube starts a kube-apiserver of its own without any CRD (testutil.Kube
// installs ours), and returns a client that knows CRDs and a kubeconfig.
func bareKube(t *testing.T) (client.Client, string) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal(`KUBEBUILDER_ASSETS is not set: KUBEBUILDER_ASSETS="$(bash hack/controlplane.sh)"`)
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	s := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c, testutil.Kubeconfig(t, cfg)
}

// olderCRD is the embedded CRD without spec.seckill's nodeSelector, as an
// earlier release would have it.
func olderCRD(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	crds, err := cli.EmbeddedCRDs()
	if err != nil || len(crds) != 1 {
		t.Fatalf("EmbeddedCRDs: %d CRDs, %v", len(crds), err)
	}
	u := crds[0]
	versions, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	v := versions[0].(map[string]any)
	props := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "seckill", "properties"}
	if _, ok, _ := unstructured.NestedMap(v, append(props, "nodeSelector")...); !ok {
		t.Fatal("the embedded CRD has no spec.seckill.nodeSelector")
	}
	unstructured.RemoveNestedField(v, append(props, "nodeSelector")...)
	if err := unstructured.SetNestedSlice(u.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestCRDsApply: `flashsale crds apply` upgrades a CRD created by another
// field manager (as helm install creates crds/), prints the fields it added,
// leaves the CRD to its own field manager, and changes nothing with --dry-run
// or a second time.
func TestCRDsApply(t *testing.T) {
	c, kubeconfig := bareKube(t)
	ctx := context.Background()

	out, err := run(ctx, "crds", "apply", "--kubeconfig", kubeconfig, "--dry-run")
	if err != nil || !strings.Contains(out, "customresourcedefinition/"+crdName+" created (dry run") {
		t.Fatalf("crds apply --dry-run on an empty cluster: %v\n%s", err, out)
	}
	var got apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKey{Name: crdName}, &got); !apierrors.IsNotFound(err) {
		t.Fatalf("after --dry-run the CRD exists (err %v)", err)
	}

	if err := c.Create(ctx, olderCRD(t), client.FieldOwner("helm")); err != nil {
		t.Fatal(err)
	}
	out, err = run(ctx, "crds", "apply", "--kubeconfig", kubeconfig, "--dry-run")
	if err != nil || !strings.Contains(out, "spec.seckill.nodeSelector") {
		t.Fatalf("crds apply --dry-run over the older CRD: %v\n%s", err, out)
	}
	out, err = run(ctx, "crds", "apply", "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatalf("crds apply: %v\n%s", err, out)
	}
	for _, want := range []string{crdName + " configured\n", "v1alpha1: 1 field(s) added:\n    spec.seckill.nodeSelector\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("crds apply output lacks %q:\n%s", want, out)
		}
	}
	if err := c.Get(ctx, client.ObjectKey{Name: crdName}, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["seckill"].Properties["nodeSelector"]; !ok {
		t.Error("after crds apply the stored CRD has no spec.seckill.nodeSelector")
	}
	for _, e := range got.ManagedFields {
		if e.Subresource == "" && e.Manager != cli.CRDFieldManager {
			t.Errorf("field manager %q (%s) still owns fields of the CRD: a field removed from the schema would stay", e.Manager, e.Operation)
		}
	}

	out, err = run(ctx, "crds", "apply", "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(out, crdName+" unchanged") {
		t.Errorf("a second crds apply: %v, want unchanged:\n%s", err, out)
	}
}

// TestCheckInstall: `flashsale check-install` passes only while the health
// endpoint answers 200 and the FlashSale CRD is served, and says which of the
// two fails.
func TestCheckInstall(t *testing.T) {
	c, kubeconfig := bareKube(t)
	ctx := context.Background()
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "[-]ping failed", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	check := func() (string, error) {
		return run(ctx, "check-install", "--kubeconfig", kubeconfig, "--health-url", srv.URL+"/healthz", "--timeout", "3s")
	}

	out, err := check()
	if err == nil || !strings.Contains(out, "the FlashSale CRD is not installed") || strings.Contains(out, "health endpoint") {
		t.Errorf("without the CRD: err %v, want a failure naming the CRD only:\n%s", err, out)
	}

	if out, err := run(ctx, "crds", "apply", "--kubeconfig", kubeconfig); err != nil {
		t.Fatalf("crds apply: %v\n%s", err, out)
	}
	if out, err := check(); err != nil || !strings.Contains(out, "ok: ") {
		t.Errorf("with the CRD and a healthy operator: %v\n%s", err, out)
	}

	healthy.Store(false)
	out, err = check()
	if err == nil || !strings.Contains(out, "answered 500") || strings.Contains(out, "CRD is not installed") {
		t.Errorf("with the health endpoint failing: err %v, want a failure naming the 500:\n%s", err, out)
	}
	srv.Close()
	out, err = check()
	if err == nil || !strings.Contains(out, "does not answer") {
		t.Errorf("with the operator gone: err %v, want a failure saying the endpoint does not answer:\n%s", err, out)
	}

	// Deleted again: the check must see it go.
	crd := &apiextensionsv1.CustomResourceDefinition{}
	crd.Name = crdName
	if err := c.Delete(ctx, crd); err != nil {
		t.Fatal(err)
	}
	healthy.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := c.Get(ctx, client.ObjectKey{Name: crdName}, crd); apierrors.IsNotFound(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	srv2 := httptest.NewServer(srv.Config.Handler)
	defer srv2.Close()
	out, err = run(ctx, "check-install", "--kubeconfig", kubeconfig, "--health-url", srv2.URL, "--timeout", "3s")
	if err == nil || !strings.Contains(out, "the FlashSale CRD is not installed") {
		t.Errorf("after the CRD was deleted: err %v, want a failure naming the CRD:\n%s", err, out)
	}
}
