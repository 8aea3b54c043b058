package chart_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// TestHelmTestPod: the chart's `helm test` Pod runs `flashsale check-install`
// with the operator's image against the health port of the operator's
// Service, under the restricted security profile and a ServiceAccount bound
// to no role; the API server accepts it. (make test-e2e runs helm test for
// real on the local cluster.)
func TestHelmTestPod(t *testing.T) {
	c, kubeVersion := cluster(t)
	objs := renderChart(t, kubeVersion)
	var pod corev1.Pod
	fromUnstructured(t, find(t, objs, "Pod"), &pod)
	if got := pod.Annotations["helm.sh/hook"]; got != "test" {
		t.Errorf("the Pod's helm.sh/hook = %q, want test", got)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("the test Pod has %d containers, want 1", len(pod.Spec.Containers))
	}
	ctr := pod.Spec.Containers[0]
	dep := deployment(t, objs)
	if ctr.Image != dep.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("test image %q, want the operator's %q", ctr.Image, dep.Spec.Template.Spec.Containers[0].Image)
	}
	var svc corev1.Service
	fromUnstructured(t, find(t, objs, "Service"), &svc)
	// The kubelet's service-link variables of the Service, as the local
	// cluster (make test-e2e) has no cluster DNS; its port named health.
	healthPort(t, &svc, dep.Spec.Template.Spec.Containers[0])
	env := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
	wantURL := fmt.Sprintf("--health-url=http://$(%s_SERVICE_HOST):$(%s_SERVICE_PORT_HEALTH)/healthz", env, env)
	if pod.Spec.EnableServiceLinks == nil || !*pod.Spec.EnableServiceLinks {
		t.Error("the test Pod does not enable service links: its health URL's variables would be empty")
	}
	if len(ctr.Args) == 0 || ctr.Args[0] != "check-install" || !slices.Contains(ctr.Args, wantURL) {
		t.Errorf("test args %v, want check-install %s", ctr.Args, wantURL)
	}
	if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("the operator Service selects the test Pod (labels %v): it would send it traffic", pod.Labels)
	}
	checkRestricted(t, &pod)
	checkUnboundServiceAccount(t, objs, pod.Spec.ServiceAccountName)

	// helm creates the ServiceAccount hook first: the Pod is checked with it there.
	sa := findNamed(t, objs, "ServiceAccount", pod.Spec.ServiceAccountName)
	ensureNamespace(t, c, namespace)
	dryRunApply(t, c, []*unstructured.Unstructured{sa, find(t, objs, "Pod")})
}

// healthPort: the Service's port named health reaches the operator
// container's port named health, the one its liveness probe (/healthz) uses.
func healthPort(t *testing.T, svc *corev1.Service, operator corev1.Container) {
	t.Helper()
	if p := operator.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "health" || p.HTTPGet.Path != "/healthz" {
		t.Errorf("the operator's liveness probe is not GET /healthz on port health: %+v", p)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == "health" {
			if p.TargetPort.String() != "health" {
				t.Errorf("Service port health targets %q, want the container port named health", p.TargetPort.String())
			}
			return
		}
	}
	t.Fatalf("the operator Service has no port named health: %+v", svc.Spec.Ports)
}

func checkRestricted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	psc, sc := pod.Spec.SecurityContext, pod.Spec.Containers[0].SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("test pod security context = %+v, want non-root with RuntimeDefault seccomp", psc)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("test container security context = %+v, want no privilege escalation, drop ALL", sc)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod restartPolicy %q, want Never (helm test waits for it to end)", pod.Spec.RestartPolicy)
	}
}

// checkUnboundServiceAccount: the test's ServiceAccount is its own, a test
// hook, and no binding of the chart grants it anything.
func checkUnboundServiceAccount(t *testing.T, objs []*unstructured.Unstructured, name string) {
	t.Helper()
	sa := findNamed(t, objs, "ServiceAccount", name)
	if sa.GetAnnotations()["helm.sh/hook"] != "test" {
		t.Errorf("the test Pod's ServiceAccount %s is not a test hook (annotations %v)", name, sa.GetAnnotations())
	}
	for _, o := range objs {
		if !strings.HasSuffix(o.GetKind(), "Binding") {
			continue
		}
		subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
		for _, s := range subjects {
			if m, _ := s.(map[string]any); m["kind"] == "ServiceAccount" && m["name"] == name {
				t.Errorf("%s %s grants the test ServiceAccount %s a role: it needs none", o.GetKind(), o.GetName(), name)
			}
		}
	}
}

func findNamed(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered (kinds: %v)", kind, name, kindsOf(objs))
	return nil
}
