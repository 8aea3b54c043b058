package chart_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// exporterMonitor is what one exporters.<name> switch must render.
type exporterMonitor struct {
	kind           string
	selector       map[string]any
	nsSelector     map[string]any // nil: none (the monitor's own namespace)
	port, interval string
	extraLabel     string // the value of the extra label "release", if any
}

// TestExporterMonitors: each exporters.* switch renders the ServiceMonitor or
// PodMonitor that scrapes an existing exporter, as configured, and the API
// server (with the Prometheus Operator's CRDs) accepts them; by default none
// is rendered.
func TestExporterMonitors(t *testing.T) {
	c, kubeVersion := cluster(t)
	for _, o := range renderChart(t, kubeVersion) {
		if strings.Contains(o.GetName(), "-exporter") {
			t.Errorf("defaults render %s %s: the exporter switches are off by default", o.GetKind(), o.GetName())
		}
	}

	objs := renderChart(t, kubeVersion, "-f", testdata("exporters.yaml"))
	dryRunApply(t, c, objs)
	want := map[string]exporterMonitor{
		"redis": {kind: "ServiceMonitor", selector: map[string]any{"app.kubernetes.io/name": "redis-exporter"},
			nsSelector: map[string]any{"matchNames": []any{"redis"}}, port: "http-metrics", interval: "15s", extraLabel: "kube-prometheus-stack"},
		"mysql": {kind: "PodMonitor", selector: map[string]any{"app": "mysqld-exporter"}, port: "mysql-exporter", interval: "30s"},
		"kafka": {kind: "ServiceMonitor", selector: map[string]any{"app.kubernetes.io/name": "kafka-exporter"},
			nsSelector: map[string]any{"any": true}, port: "metrics", interval: "30s"},
	}
	for name, w := range want {
		checkExporterMonitor(t, objs, release+"-flashsale-operator-"+name+"-exporter", w)
	}
}

func checkExporterMonitor(t *testing.T, objs []*unstructured.Unstructured, name string, w exporterMonitor) {
	t.Helper()
	var m *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == w.kind && o.GetName() == name {
			m = o
		}
	}
	if m == nil {
		t.Errorf("no %s %s rendered (have %v)", w.kind, name, kindsOf(objs))
		return
	}
	if m.GetNamespace() != namespace {
		t.Errorf("%s is in namespace %q, want the release's %q", name, m.GetNamespace(), namespace)
	}
	if got, _, _ := unstructured.NestedMap(m.Object, "spec", "selector", "matchLabels"); !reflect.DeepEqual(got, w.selector) {
		t.Errorf("%s selects %v, want %v", name, got, w.selector)
	}
	if got, _, _ := unstructured.NestedMap(m.Object, "spec", "namespaceSelector"); !reflect.DeepEqual(got, w.nsSelector) {
		t.Errorf("%s namespaceSelector = %v, want %v", name, got, w.nsSelector)
	}
	endpoints := "endpoints"
	if w.kind == "PodMonitor" {
		endpoints = "podMetricsEndpoints"
	}
	ep := firstItem(t, m, "spec", endpoints)
	if ep["port"] != w.port || ep["path"] != "/metrics" || ep["interval"] != w.interval {
		t.Errorf("%s %s[0] = %v, want port %s, path /metrics, interval %s", name, endpoints, ep, w.port, w.interval)
	}
	if got := m.GetLabels()["release"]; got != w.extraLabel {
		t.Errorf("%s label release = %q, want %q", name, got, w.extraLabel)
	}
}

// TestExporterMonitorsNeedSelector: a switch turned on without a selector
// would scrape every Service of the namespace; the schema refuses it, naming
// the key, and so does the template where the schema is skipped.
func TestExporterMonitorsNeedSelector(t *testing.T) {
	for _, extra := range [][]string{nil, {"--skip-schema-validation"}} {
		args := append([]string{"template", release, chartDir, "--kube-version", minKubeVersion,
			"--set", "exporters.mysql.enabled=true"}, extra...)
		out, err := runHelm(t, args...)
		if err == nil || !strings.Contains(out, "exporters/mysql/selector") && !strings.Contains(out, "exporters.mysql.selector") {
			t.Errorf("helm %s: err %v, want a refusal naming exporters.mysql.selector:\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, err := runHelm(t, "template", release, chartDir, "--kube-version", minKubeVersion,
		"--set", "exporters.kafka.enabled=true", "--set", "exporters.kafka.selector.app=k", "--set", "exporters.kafka.kind=Probe")
	if err == nil || !strings.Contains(out, "kind") {
		t.Errorf("exporters.kafka.kind=Probe: err %v, want a refusal naming kind:\n%s", err, out)
	}
}

// TestKustomizeExportersExample: config/prometheus/exporters.yaml, the
// kustomize example of the same scrapes, is accepted by the API server.
func TestKustomizeExportersExample(t *testing.T) {
	c, _ := cluster(t)
	b, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "exporters.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, string(b))
	if len(objs) != 3 {
		t.Fatalf("config/prometheus/exporters.yaml: %d objects, want one per exporter (3)", len(objs))
	}
	for _, o := range objs {
		ensureNamespace(t, c, o.GetNamespace())
	}
	dryRunApply(t, c, objs)
}
