package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// The file names of the serving certificate in --metrics-cert-path: those of
// a kubernetes.io/tls Secret (cert-manager's), so that one mounts as it is.
const (
	metricsCertName = "tls.crt"
	metricsKeyName  = "tls.key"
)

// metricsFlags configure the manager's /metrics endpoint.
type metricsFlags struct {
	addr     string
	secure   bool
	certPath string
}

func (m *metricsFlags) register(f *pflag.FlagSet) {
	f.StringVar(&m.addr, "metrics-bind-address", ":8443",
		"serve Prometheus /metrics on this address (HTTPS unless --metrics-secure=false); 0 disables it")
	f.BoolVar(&m.secure, "metrics-secure", true,
		"serve /metrics over HTTPS, only to callers the API server authenticates (TokenReview) and allows "+
			"GET on the /metrics URL (SubjectAccessReview, e.g. bound to the metrics-reader ClusterRole); "+
			"false serves plain HTTP to anyone, for local runs (make run) only")
	f.StringVar(&m.certPath, "metrics-cert-path", "",
		"directory holding the serving certificate of /metrics as "+metricsCertName+" and "+metricsKeyName+
			" (e.g. a mounted cert-manager Secret), reloaded when they change; empty: a self-signed certificate made at start")
}

// options are controller-runtime's metrics server options for the flags, as
// kubebuilder's scaffold sets them: HTTPS behind the authentication and
// authorisation filter, which asks the API server about each caller's token.
func (m *metricsFlags) options() (metricsserver.Options, error) {
	o := metricsserver.Options{BindAddress: m.addr}
	if !m.secure {
		if m.certPath != "" {
			return o, errors.New("--metrics-cert-path is set but --metrics-secure=false serves plain HTTP: drop one of them")
		}
		return o, nil
	}
	o.SecureServing = true
	o.FilterProvider = filters.WithAuthenticationAndAuthorization
	// HTTP/2 is off: its stream handling has had denial-of-service flaws
	// (Rapid Reset, CVE-2023-44487) and a scrape gains nothing from it.
	o.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	if m.certPath == "" {
		return o, nil
	}
	// controller-runtime silently falls back to a self-signed certificate
	// when the files are missing: a mount gone wrong must fail instead.
	for _, name := range []string{metricsCertName, metricsKeyName} {
		if _, err := os.Stat(filepath.Join(m.certPath, name)); err != nil {
			return o, fmt.Errorf("--metrics-cert-path %s: %w", m.certPath, err)
		}
	}
	o.CertDir, o.CertName, o.KeyName = m.certPath, metricsCertName, metricsKeyName
	return o, nil
}
