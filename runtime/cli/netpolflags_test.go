package cli_test

import (
	"context"
	"strings"
	"testing"
)

// TestNetworkPolicyMetricsFromFlag: a list of peers is accepted (the
// manager goes on to look for its cluster), anything else is refused
// before, naming the flag.
func TestNetworkPolicyMetricsFromFlag(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	cases := []struct {
		value, want string
	}{
		{`[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]`, "kubernetes client config"},
		{"- podSelector: {matchLabels: {app: prometheus}}\n  namespaceSelector: {}", "kubernetes client config"},
		{`{"namespaceSelector":{}}`, "--network-policy-metrics-from: not a list of NetworkPolicy peers"},
		{`[{"namespaceSelektor":{}}]`, "--network-policy-metrics-from: not a list of NetworkPolicy peers"},
		{`[{}]`, "--network-policy-metrics-from: peer 0 selects nothing"},
	}
	for _, tc := range cases {
		out, err := run(context.Background(), "manager", "--image", "flashsale:test", "--network-policies",
			"--network-policy-metrics-from", tc.value, "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("--network-policy-metrics-from %q: err %v, want %q", tc.value, err, tc.want)
		}
	}
}
