package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// The control plane of a test binary is started once, by the first test that
// needs it, and stopped by StopKube from TestMain.
var (
	kubeOnce sync.Once
	kubeEnv  *envtest.Environment
	kubeCfg  *rest.Config
	kubeErr  error
)

// Kube returns the config of a real kube-apiserver and etcd (envtest) with
// the FlashSale CRD installed, and a client of it using scheme. The binaries
// come from `make controlplane` (hack/controlplane.sh), exported as
// KUBEBUILDER_ASSETS; `make test` does both. Without them the test fails
// with how to get them: it never skips.
func Kube(t testing.TB, scheme *runtime.Scheme) (*rest.Config, client.Client) {
	t.Helper()
	kubeOnce.Do(func() {
		if kubeErr = checkAssets(); kubeErr != nil {
			return
		}
		e := &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join(repoRoot(), "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
		cfg, err := e.Start()
		if err != nil {
			kubeErr = fmt.Errorf("starting kube-apiserver and etcd from KUBEBUILDER_ASSETS=%s "+
				"(rebuild them with make controlplane): %w", os.Getenv("KUBEBUILDER_ASSETS"), err)
			return
		}
		kubeEnv, kubeCfg = e, cfg
	})
	if kubeErr != nil {
		t.Fatal(kubeErr)
	}
	c, err := client.New(kubeCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("testutil: kube client: %v", err)
	}
	return rest.CopyConfig(kubeCfg), c
}

// StopKube stops the control plane if a test started it; call it from TestMain.
func StopKube() {
	if kubeEnv != nil {
		if err := kubeEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}
}

// checkAssets says what is missing, in words that tell how to fix it.
func checkAssets() error {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		return fmt.Errorf("KUBEBUILDER_ASSETS is not set: run make controlplane and export " +
			"KUBEBUILDER_ASSETS=\"$(bash hack/controlplane.sh)\" (make test does both)")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		p := filepath.Join(dir, bin)
		//nolint:gosec // G703: the path is the developer's own KUBEBUILDER_ASSETS
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("KUBEBUILDER_ASSETS=%s has no executable %s: run make controlplane", dir, bin)
		}
	}
	return nil
}

// repoRoot is the module root, found from this file's path.
func repoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
