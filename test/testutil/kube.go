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
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
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
			CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
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

// Kubeconfig writes a kubeconfig file for cfg (envtest's admin), for the
// programs a test runs (helm, flashsale manager), and returns its path.
func Kubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
	}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("testutil: write kubeconfig: %v", err)
	}
	return path
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

// RepoRoot is the module root, found from this file's path, so tests of any
// package can reach config/, charts/ and hack/.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
