package cli_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestManagerMetricsAreAuthenticated runs the real `flashsale manager`
// against a real kube-apiserver, as its own ServiceAccount bound to the
// ClusterRoles of config/rbac, and scrapes its /metrics as Prometheus would:
// without a token it is refused (401), with a ServiceAccount token that may
// not GET /metrics it is forbidden (403), and once that ServiceAccount is
// bound to config/rbac/metrics_reader_role.yaml's ClusterRole it gets the
// controller-runtime and flashsale series, over HTTPS with the certificate
// given in --metrics-cert-path and HTTP/1.1 only.
func TestManagerMetricsAreAuthenticated(t *testing.T) {
	cfg, c := kubeWithCRD(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := testutil.UniqueName(t)
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	createServiceAccount(t, c, ns, "operator")
	bindServiceAccount(t, c, ns, "operator", "role.yaml", "metrics_auth_role.yaml")
	operatorCfg := rest.AnonymousClientConfig(cfg)
	operatorCfg.BearerToken = serviceAccountToken(t, cs, ns, "operator")
	t.Setenv("KUBECONFIG", testutil.Kubeconfig(t, operatorCfg))

	certDir, roots := servingCertificate(t)
	url := fmt.Sprintf("https://127.0.0.1:%d/metrics", testutil.FreePort(t))
	startManager(t, "--metrics-bind-address="+strings.TrimSuffix(strings.TrimPrefix(url, "https://"), "/metrics"),
		"--metrics-cert-path="+certDir)
	// A sale without its endpoints Secret: the operator gives it a phase, so
	// its flashsale_operator_sale_phase series exists.
	sale := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "metrics"}, Spec: v1alpha1.FlashSaleSpec{
		StartTime: metav1.NewTime(time.Now().Add(time.Hour)), EndTime: metav1.NewTime(time.Now().Add(2 * time.Hour)),
		SKUs: []v1alpha1.SKU{{ID: "1001", Stock: 5, Price: "9.99"}},
	}}
	if err := c.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}

	s := scraper{url: url, roots: roots}
	testutil.Eventually(t, time.Minute, "the manager serves "+url, func() bool { return s.get(t, "").err == nil })
	if r := s.get(t, ""); r.code != http.StatusUnauthorized {
		t.Errorf("scrape without a token: %s, want 401 Unauthorized", r)
	}
	// The API server's TokenReview answers a forged token with an error,
	// which controller-runtime's filter turns into a 500: refused all the same.
	if r := s.get(t, "not-a-token"); r.err != nil || r.code == http.StatusOK || strings.Contains(r.body, "controller_runtime") {
		t.Errorf("scrape with a token the API server never issued: %s, want it refused", r)
	}
	createServiceAccount(t, c, ns, "prometheus")
	token := serviceAccountToken(t, cs, ns, "prometheus")
	if r := s.get(t, token); r.code != http.StatusForbidden {
		t.Errorf("scrape by a ServiceAccount not bound to metrics-reader: %s, want 403 Forbidden", r)
	}

	bindServiceAccount(t, c, ns, "prometheus", "metrics_reader_role.yaml")
	// The filter caches a denial for 30 s: the binding takes up to that long.
	var last result
	wanted := []string{"controller_runtime_reconcile_total", controllers.MetricSalePhase + "{"}
	testutil.Eventually(t, 90*time.Second, "the bound ServiceAccount's scrape succeeds", func() bool {
		last = s.get(t, token)
		return last.code == http.StatusOK && containsAll(last.body, wanted)
	})
	if last.proto != "HTTP/1.1" {
		t.Errorf("/metrics answered over %s, want HTTP/1.1 (HTTP/2 is disabled)", last.proto)
	}
}

// TestManagerMetricsFlags: the flags say what they do, and a certificate
// directory without its files, or one for plain HTTP, is refused by name
// (controller-runtime would fall back to a self-signed certificate).
func TestManagerMetricsFlags(t *testing.T) {
	out, err := run(context.Background(), "manager", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`--metrics-bind-address string`, `(default ":8443")`, "--metrics-secure",
		"(default true)", "plain HTTP", "--metrics-cert-path", "tls.crt", "metrics-reader"} {
		if !strings.Contains(out, want) {
			t.Errorf("manager --help lacks %q:\n%s", want, out)
		}
	}
	empty := t.TempDir()
	for args, want := range map[string]string{
		"--metrics-cert-path=" + empty:                        "--metrics-cert-path " + empty,
		"--metrics-secure=false --metrics-cert-path=" + empty: "--metrics-secure=false",
	} {
		argv := append([]string{"manager", "--image=example/flashsale:test"}, strings.Fields(args)...)
		if out, err := run(context.Background(), argv...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("manager %s: err %v (%s), want an error naming %q", args, err, out, want)
		}
	}
}

// kubeWithCRD starts a kube-apiserver (envtest) of the test's own with the
// FlashSale CRD, stopped when the test ends. (testutil.Kube's control plane
// lives until a TestMain stops it, and this package's TestMain is the
// flashsale binary's main.)
func kubeWithCRD(t *testing.T) (*rest.Config, client.Client) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal(`KUBEBUILDER_ASSETS is not set: KUBEBUILDER_ASSETS="$(bash hack/controlplane.sh)"`)
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(testutil.RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: cli.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c
}

// startManager runs `flashsale manager` until the test ends.
func startManager(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	argv := append([]string{"manager", "--image=example/flashsale:test", "--health-probe-bind-address=0", "--log-format=text"}, args...)
	go func() {
		_, err := run(ctx, argv...)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the manager did not stop within 30 s of its context's end")
		}
	})
}

// servingCertificate writes a certificate for 127.0.0.1 as tls.crt and
// tls.key, as a mounted kubernetes.io/tls Secret holds them, and returns
// their directory and a pool that trusts it.
func servingCertificate(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	crt, key, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"tls.crt": crt, "tls.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(crt) {
		t.Fatal("no certificate in the generated PEM")
	}
	return dir, roots
}

func createServiceAccount(t *testing.T, c client.Client, ns, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.Create(context.Background(), sa); err != nil {
		t.Fatalf("create ServiceAccount %s/%s: %v", ns, name, err)
	}
}

// serviceAccountToken asks the API server for a token of the ServiceAccount
// (TokenRequest), as the kubelet mounts one into a pod.
func serviceAccountToken(t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for ServiceAccount %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}

// bindServiceAccount creates the ClusterRoles of the config/rbac files, named
// after the test's namespace, and binds each to the ServiceAccount.
func bindServiceAccount(t *testing.T, c client.Client, ns, sa string, files ...string) {
	t.Helper()
	ctx := context.Background()
	for _, file := range files {
		for _, role := range clusterRoles(t, filepath.Join(testutil.RepoRoot(), "config", "rbac", file)) {
			role.Name = ns + "-" + role.Name
			if err := c.Create(ctx, role); err != nil {
				t.Fatalf("create ClusterRole %s from %s: %v", role.Name, file, err)
			}
			crb := &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: role.Name + "-" + sa},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
			}
			if err := c.Create(ctx, crb); err != nil {
				t.Fatalf("bind ClusterRole %s: %v", role.Name, err)
			}
			t.Cleanup(func() { _ = c.Delete(ctx, crb); _ = c.Delete(ctx, role) })
		}
	}
}

// clusterRoles are the ClusterRoles of a YAML file (one or more documents).
func clusterRoles(t *testing.T, path string) []*rbacv1.ClusterRole {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var roles []*rbacv1.ClusterRole
	d := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		role := &rbacv1.ClusterRole{}
		err := d.Decode(role)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if role.Kind == "ClusterRole" {
			role.TypeMeta = metav1.TypeMeta{}
			roles = append(roles, role)
		}
	}
	if len(roles) == 0 {
		t.Fatalf("%s has no ClusterRole", path)
	}
	return roles
}

// scraper GETs /metrics as Prometheus does: HTTPS, trusting roots, with a
// bearer token; it offers HTTP/2, so that an answer over HTTP/1.1 shows the
// server refused it.
type scraper struct {
	url   string
	roots *x509.CertPool
}

type result struct {
	code  int
	proto string
	body  string
	err   error
}

func (r result) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("%d %.200q", r.code, r.body)
}

func (s scraper) get(t *testing.T, token string) result {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return result{err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, proto: resp.Proto, body: string(body), err: err}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
