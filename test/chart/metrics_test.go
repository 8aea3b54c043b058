package chart_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// serviceAccountToken is where the kubelet mounts a pod's ServiceAccount
// token: the ServiceMonitor makes Prometheus send its own.
const serviceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token" //nolint:gosec // G101: a path, not a credential

// TestTemplateMetrics: the operator's /metrics as each metrics.* setting
// renders it, every rendering accepted by the API server. Secure (the
// default): HTTPS on 8443, scraped with Prometheus's token, verifying the
// certificate of metrics.certSecret when there is one (mounted for
// --metrics-cert-path) and skipping verification of the self-signed one
// otherwise. metrics.secure=false: plain HTTP, no token.
func TestTemplateMetrics(t *testing.T) {
	c, kubeVersion := cluster(t)
	cases := []struct {
		name     string
		set      []string
		args     []string // of the manager, besides --metrics-bind-address=:8443
		endpoint map[string]any
	}{
		{"self-signed", nil, []string{"--metrics-secure=true"}, map[string]any{
			"scheme": "https", "bearerTokenFile": serviceAccountToken, "tlsConfig": map[string]any{"insecureSkipVerify": true},
		}},
		{"certSecret", []string{"metrics.certSecret=metrics-tls"},
			[]string{"--metrics-secure=true", "--metrics-cert-path=/etc/flashsale-operator/metrics-certs"},
			map[string]any{"scheme": "https", "bearerTokenFile": serviceAccountToken, "tlsConfig": map[string]any{
				"serverName": release + "-flashsale-operator-metrics." + namespace + ".svc",
				"ca":         map[string]any{"secret": map[string]any{"name": "metrics-tls", "key": "ca.crt"}},
			}}},
		{"insecure", []string{"metrics.secure=false"}, []string{"--metrics-secure=false"}, map[string]any{"scheme": "http"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--set", "serviceMonitor.enabled=true"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			objs := renderChart(t, kubeVersion, args...)
			dryRunApply(t, c, objs)
			checkServiceMonitor(t, objs)
			ctr := deployment(t, objs).Spec.Template.Spec.Containers[0]
			var got []string
			for _, a := range ctr.Args {
				if strings.HasPrefix(a, "--metrics-") {
					got = append(got, a)
				}
			}
			if want := append([]string{"--metrics-bind-address=:8443"}, tc.args...); !slices.Equal(got, want) {
				t.Errorf("manager metrics args = %v, want %v", got, want)
			}
			checkEndpoint(t, findNamed(t, objs, "ServiceMonitor", release+"-flashsale-operator"), tc.endpoint)
		})
	}
}

// TestTemplateMetricsCertSecret: metrics.certSecret is mounted read-only
// where --metrics-cert-path points, and needs metrics.secure.
func TestTemplateMetricsCertSecret(t *testing.T) {
	_, kubeVersion := cluster(t)
	spec := deployment(t, renderChart(t, kubeVersion, "--set", "metrics.certSecret=metrics-tls")).Spec.Template.Spec
	i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "metrics-tls" })
	if i < 0 {
		t.Fatalf("no volume of Secret metrics-tls: %+v", spec.Volumes)
	}
	mounted := slices.ContainsFunc(spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == spec.Volumes[i].Name && m.ReadOnly &&
			slices.Contains(spec.Containers[0].Args, "--metrics-cert-path="+m.MountPath)
	})
	if !mounted {
		t.Errorf("Secret metrics-tls is not mounted read-only at --metrics-cert-path: mounts %+v, args %v",
			spec.Containers[0].VolumeMounts, spec.Containers[0].Args)
	}
	out, err := runHelm(t, "template", release, chartDir, "--kube-version", kubeVersion,
		"--set", "metrics.secure=false", "--set", "metrics.certSecret=metrics-tls")
	if err == nil || !strings.Contains(out, "metrics.certSecret needs metrics.secure") {
		t.Errorf("metrics.certSecret with metrics.secure=false: err %v, want a failure naming both:\n%s", err, out)
	}
}

// TestKustomizeMetricsLikeChart: config/ serves and scrapes /metrics as the
// chart's defaults do (same manager args and ports, same ServiceMonitor
// endpoint), so both installs need the same metrics-reader binding.
func TestKustomizeMetricsLikeChart(t *testing.T) {
	_, kubeVersion := cluster(t)
	chart := renderChart(t, kubeVersion, "--set", "serviceMonitor.enabled=true")
	kust := append(kustomize(t, filepath.Join(root, "config", "default")), kustomize(t, filepath.Join(root, "config", "prometheus"))...)
	metricsArgs := func(objs []*unstructured.Unstructured) ([]string, []corev1.ContainerPort) {
		ctr := deployment(t, objs).Spec.Template.Spec.Containers[0]
		var args []string
		for _, a := range ctr.Args {
			if strings.HasPrefix(a, "--metrics-") {
				args = append(args, a)
			}
		}
		// The chart states the default --metrics-secure=true; config/ leaves it.
		return slices.DeleteFunc(args, func(a string) bool { return a == "--metrics-secure=true" }), ctr.Ports
	}
	ca, cp := metricsArgs(chart)
	ka, kp := metricsArgs(kust)
	if !slices.Equal(ca, ka) || !equality.Semantic.DeepEqual(cp, kp) {
		t.Errorf("metrics args and ports differ: chart %v %+v, config/ %v %+v", ca, cp, ka, kp)
	}
	want := firstItem(t, findNamed(t, chart, "ServiceMonitor", release+"-flashsale-operator"), "spec", "endpoints")
	delete(want, "scrapeTimeout") // a chart value; config/ keeps Prometheus's default
	checkEndpoint(t, findNamed(t, kust, "ServiceMonitor", "controller-manager"), want)
}

// checkEndpoint: the ServiceMonitor's first endpoint has (at least) want's fields.
func checkEndpoint(t *testing.T, sm *unstructured.Unstructured, want map[string]any) {
	t.Helper()
	ep := firstItem(t, sm, "spec", "endpoints")
	for k, v := range want {
		if !equality.Semantic.DeepEqual(ep[k], v) {
			t.Errorf("ServiceMonitor %s endpoint %s = %v, want %v", sm.GetName(), k, ep[k], v)
		}
	}
	if want["scheme"] == "http" {
		for _, k := range []string{"bearerTokenFile", "authorization", "tlsConfig"} {
			if ep[k] != nil {
				t.Errorf("ServiceMonitor %s scrapes plain HTTP with %s %v", sm.GetName(), k, ep[k])
			}
		}
	}
}
