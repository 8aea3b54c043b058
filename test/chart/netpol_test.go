package chart_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// monitoringPeer is the scrapers' peer of the metricsFrom tests.
const monitoringPeer = `[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]`

// TestOperatorNetworkPolicy: by default the chart fences the operator's pods
// (accepted by the API server): ingress only on the container's metrics and
// health ports, scrapes from any namespace, egress left open; and it turns
// the sales' policies on (--network-policies). networkPolicy.metricsFrom
// narrows the scrapers of both; networkPolicy.enabled=false drops both.
func TestOperatorNetworkPolicy(t *testing.T) {
	c, kubeVersion := cluster(t)
	objs := renderChart(t, kubeVersion)
	dryRunApply(t, c, objs)
	dep := deployment(t, objs)
	np := operatorPolicy(t, objs)
	checkOperatorPolicy(t, np, dep)
	if from := np.Spec.Ingress[0].From; len(from) != 1 || from[0].NamespaceSelector == nil || len(from[0].NamespaceSelector.MatchLabels) != 0 {
		t.Errorf("scrapes from %+v, want any namespace by default", from)
	}
	args := dep.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--network-policies") || slices.ContainsFunc(args, hasPrefix("--network-policy-metrics-from")) {
		t.Errorf("default args %v: want --network-policies and no --network-policy-metrics-from", args)
	}

	objs = renderChart(t, kubeVersion, "--set-json", "networkPolicy.metricsFrom="+monitoringPeer)
	dryRunApply(t, c, objs)
	var want []networkingv1.NetworkPolicyPeer
	if err := json.Unmarshal([]byte(monitoringPeer), &want); err != nil {
		t.Fatal(err)
	}
	np = operatorPolicy(t, objs)
	if !equality.Semantic.DeepEqual(np.Spec.Ingress[0].From, want) {
		t.Errorf("scrapes from %+v, want networkPolicy.metricsFrom %+v", np.Spec.Ingress[0].From, want)
	}
	args = deployment(t, objs).Spec.Template.Spec.Containers[0].Args
	i := slices.IndexFunc(args, hasPrefix("--network-policy-metrics-from="))
	var got []networkingv1.NetworkPolicyPeer
	if i < 0 || json.Unmarshal([]byte(strings.TrimPrefix(args[i], "--network-policy-metrics-from=")), &got) != nil ||
		!equality.Semantic.DeepEqual(got, want) {
		t.Errorf("args %v: want --network-policy-metrics-from with the peers %+v", args, want)
	}

	objs = renderChart(t, kubeVersion, "--set", "networkPolicy.enabled=false")
	if slices.Contains(kindsOf(objs), "NetworkPolicy") {
		t.Error("networkPolicy.enabled=false still renders a NetworkPolicy")
	}
	if args := deployment(t, objs).Spec.Template.Spec.Containers[0].Args; slices.ContainsFunc(args, hasPrefix("--network-polic")) {
		t.Errorf("networkPolicy.enabled=false: args %v still turn the sales' policies on", args)
	}
}

// TestKustomizeNetworkPolicy: config/default installs config/network-policy,
// whose policy selects the kustomize operator's pods and opens their metrics
// and health ports only; the operator applies the sales' policies.
func TestKustomizeNetworkPolicy(t *testing.T) {
	objs := kustomize(t, filepath.Join(root, "config", "default"))
	dep := deployment(t, objs)
	checkOperatorPolicy(t, operatorPolicy(t, objs), dep)
	if args := dep.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--network-policies") {
		t.Errorf("the kustomize operator's args %v lack --network-policies", args)
	}
}

func operatorPolicy(t *testing.T, objs []*unstructured.Unstructured) *networkingv1.NetworkPolicy {
	t.Helper()
	var np networkingv1.NetworkPolicy
	fromUnstructured(t, find(t, objs, "NetworkPolicy"), &np)
	return &np
}

// checkOperatorPolicy: np selects the operator's pods, restricts their
// ingress to two rules on the container's metrics and health ports (by name
// or number), and leaves egress open.
func checkOperatorPolicy(t *testing.T, np *networkingv1.NetworkPolicy, dep *appsv1.Deployment) {
	t.Helper()
	sel := np.Spec.PodSelector.MatchLabels
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy selects %v, not the operator pods (labels %v)", sel, dep.Spec.Template.Labels)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policy types %v, want Ingress only (the operator's egress stays open)", np.Spec.PolicyTypes)
	}
	ports := map[string]int32{}
	for _, p := range dep.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("%d ingress rules, want 2 (metrics, health): %+v", len(np.Spec.Ingress), np.Spec.Ingress)
	}
	for i, name := range []string{"metrics", "health"} {
		r := np.Spec.Ingress[i]
		if len(r.Ports) != 1 || *r.Ports[0].Protocol != corev1.ProtocolTCP || ports[name] == 0 ||
			(r.Ports[0].Port.String() != name && r.Ports[0].Port.IntVal != ports[name]) {
			t.Errorf("ingress rule %d: ports %+v, want TCP %s (container port %d)", i, r.Ports, name, ports[name])
		}
	}
}

func hasPrefix(prefix string) func(string) bool {
	return func(s string) bool { return strings.HasPrefix(s, prefix) }
}
