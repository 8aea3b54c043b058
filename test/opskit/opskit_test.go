// Package opskit_test checks the operations kit against the code: the alert
// rules (config/prometheus/rules.yaml), the Grafana dashboard
// (config/grafana/flashsale-dashboard.json) and the runbook (docs/runbook.md).
//
// Every metric the rules and the dashboard query must be one the code exports
// (read from the real collectors' descriptors), every label matcher must name
// a label the metric has or the scrape adds, every alert must say how bad it
// is, what happened to which sale and where its runbook section is, and the
// rules must pass `promtool check rules` and their unit tests
// (config/prometheus/rules_test.yaml) under `promtool test rules`. promtool is
// built from the Go module proxy by hack/tools.sh (pinned, cached outside the
// repository); the first run builds it (a few minutes).
package opskit_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/consumer"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/relay"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const (
	rulesFile     = "config/prometheus/rules.yaml"
	rulesTestFile = "config/prometheus/rules_test.yaml"
	dashboardFile = testutil.DashboardFile
	runbookFile   = "docs/runbook.md"
	runbookURL    = "https://github.com/flashsale-dev/flashsale-operator/blob/main/docs/runbook.md#"
)

// targetLabels are added by the scrape, not by the code: the pod's namespace
// and its flashsale.dev/sale label (PodMonitor podTargetLabels, or labelmap
// of the pod labels), plus Prometheus' own.
var targetLabels = []string{"namespace", "flashsale_dev_sale", "pod", "instance", "job"}

// root is the repository root (two levels above this file).
func root(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func read(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// metricInfo is one exported metric family: its variable labels.
type metricInfo struct {
	labels []string
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// exported lists the metric names the code exports, from the descriptors of
// the real collectors: the seckill API's, the worker's (relay, consumer,
// dbsink and the stream readers' replica waits: what worker.New registers), the rollback's, the audit's and the
// operator's; plus the known series of the standard exporters (exporters_test.go).
func exported(t *testing.T) map[string]metricInfo {
	t.Helper()
	worker := prometheus.NewRegistry()
	relay.NewMetrics(worker)
	consumer.NewMetrics(worker)
	dbsink.NewMetrics(worker)
	streamgroup.NewReplicaMetrics(worker)
	collectors := []prometheus.Collector{seckill.NewMetrics().Registry, rollback.NewMetrics().Registry, worker}
	collectors = append(collectors, audit.NewMetrics().Collectors()...)
	collectors = append(collectors, controllers.NewMetrics().Collectors()...)

	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	out := map[string]metricInfo{}
	for d := range ch {
		s := d.String()
		m := descName.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("no fqName in descriptor %s", s)
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, v := range strings.Split(l[1], ",") {
				labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(v, "c("), ")"))
			}
		}
		out[m[1]] = metricInfo{labels: labels}
	}
	if len(out) < 30 {
		t.Fatalf("only %d metrics described; the collectors changed?", len(out))
	}
	// The standard exporters' series the kit may use: the known list that
	// exporters_test.go proves against the real exporters.
	for name, m := range exporterMetrics() {
		out[name] = m
	}
	return out
}

// lookup resolves a name used in PromQL to the exported family: the name
// itself, or a histogram's (or summary's) _bucket, _sum or _count series.
func lookup(known map[string]metricInfo, name string) (metricInfo, bool) {
	if m, ok := known[name]; ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if m, ok := known[base]; ok {
				if suffix == "_bucket" {
					m.labels = append(slices.Clone(m.labels), "le")
				}
				return m, true
			}
		}
	}
	return metricInfo{}, false
}

// selector is a metric named in a PromQL expression with its label matchers.
type selector struct {
	metric string
	labels []string
}

var (
	stringLit  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	rangeSel   = regexp.MustCompile(`\[[^\]]*\]`)
	matchers   = regexp.MustCompile(`\{[^}]*\}`)
	identifier = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	labelName  = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)`)
	number     = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b`)
	duration   = regexp.MustCompile(`\b\d+(?:ms|s|m|h|d|w|y)\b`)
)

// keywords are PromQL words that are not metric names.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
	"Inf": true, "NaN": true, "atan2": true,
}

// selectors finds the metrics a PromQL expression reads, without a PromQL
// parser (no new module): string literals and grouping clauses are dropped,
// label matchers are read off the braces that follow a name, and every
// remaining identifier that is not a function call or a keyword is a metric.
func selectors(expr string) ([]selector, error) {
	// Strings first: they may hold anything, braces included. Keep their
	// places so that matchers can still be told apart.
	e := stringLit.ReplaceAllString(expr, `""`)
	e = grouping.ReplaceAllString(e, " ")
	e = rangeSel.ReplaceAllString(e, " ")
	e = strings.ReplaceAll(e, "$__rate_interval", "")
	var out []selector
	for {
		loc := matchers.FindStringIndex(e)
		if loc == nil {
			break
		}
		before := strings.TrimRight(e[:loc[0]], " \t\n")
		ids := identifier.FindAllStringIndex(before, -1)
		var labels []string
		for _, m := range labelName.FindAllStringSubmatch(e[loc[0]:loc[1]], -1) {
			labels = append(labels, m[1])
		}
		if len(ids) == 0 || ids[len(ids)-1][1] != len(before) {
			return nil, fmt.Errorf("matchers without a metric name (%s) in %q", e[loc[0]:loc[1]], expr)
		}
		last := ids[len(ids)-1]
		out = append(out, selector{metric: before[last[0]:last[1]], labels: labels})
		e = before[:last[0]] + " " + e[loc[1]:]
	}
	e = duration.ReplaceAllString(e, " ")
	e = number.ReplaceAllString(e, " ")
	for _, loc := range identifier.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if keywords[id] || strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(") {
			continue // a keyword or a function call
		}
		if loc[0] > 0 && e[loc[0]-1] == '$' {
			continue // a Grafana variable outside a string
		}
		out = append(out, selector{metric: id})
	}
	return out, nil
}

// checkExpr fails the test for every metric or label in expr the code does
// not export; where says which file and rule or panel it is in.
func checkExpr(t *testing.T, known map[string]metricInfo, where, expr string) int {
	t.Helper()
	sels, err := selectors(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return 0
	}
	if len(sels) == 0 {
		t.Errorf("%s: no metric found in %q", where, expr)
	}
	for _, s := range sels {
		m, ok := lookup(known, s.metric)
		if !ok {
			t.Errorf("%s: metric %s is not exported by the code nor in the exporters' known list (expression %q)", where, s.metric, expr)
			continue
		}
		for _, l := range s.labels {
			if !slices.Contains(m.labels, l) && !slices.Contains(targetLabels, l) {
				t.Errorf("%s: metric %s has no label %q (it has %v, the scrape adds %v)", where, s.metric, l, m.labels, targetLabels)
			}
		}
	}
	return len(sels)
}

// ruleFile is the PrometheusRule and the rule groups inside it.
type ruleFile struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.UnmarshalStrict(read(t, rulesFile), &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if rf.APIVersion != "monitoring.coreos.com/v1" || rf.Kind != "PrometheusRule" || rf.Metadata.Name != "flashsale-operator" {
		t.Fatalf("%s: want a monitoring.coreos.com/v1 PrometheusRule named flashsale-operator, got %s %s %q",
			rulesFile, rf.APIVersion, rf.Kind, rf.Metadata.Name)
	}
	return rf
}

func TestRuleMetricsExist(t *testing.T) {
	known := exported(t)
	n := 0
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			n += checkExpr(t, known, fmt.Sprintf("%s: group %s, rule %s%s", rulesFile, g.Name, r.Alert, r.Record), r.Expr)
		}
	}
	if n == 0 {
		t.Fatalf("%s: no metric found in any rule", rulesFile)
	}
}

func TestDashboardMetricsExist(t *testing.T) {
	known := exported(t)
	d := testutil.LoadDashboard(t)
	if d.SchemaVersion < 36 {
		t.Errorf("%s: schemaVersion %d, want a current one (>= 36)", dashboardFile, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if q, ok := v.Query.(map[string]any); ok {
			if s, ok := q["query"].(string); ok {
				checkVariableQuery(t, known, v.Name, s)
			}
		} else if s, ok := v.Query.(string); ok && v.Type == "query" {
			checkVariableQuery(t, known, v.Name, s)
		}
	}
	for name, typ := range map[string]string{"datasource": "datasource", "namespace": "query", "sale": "query"} {
		if vars[name] != typ {
			t.Errorf("%s: want a %s variable %q, have %v", dashboardFile, typ, name, vars)
		}
	}
	n := 0
	d.WalkPanels(func(p testutil.DashboardPanel) {
		for _, tg := range p.Targets {
			n += checkExpr(t, known, fmt.Sprintf("%s: panel %q", dashboardFile, p.Title), tg.Expr)
		}
	})
	if n == 0 {
		t.Fatalf("%s: no metric found in any panel", dashboardFile)
	}
}

func checkVariableQuery(t *testing.T, known map[string]metricInfo, name, q string) {
	t.Helper()
	m := testutil.LabelValues.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return
	}
	where := fmt.Sprintf("%s: variable %s", dashboardFile, name)
	checkExpr(t, known, where, m[1])
	sels, _ := selectors(m[1])
	for _, s := range sels {
		if mi, ok := lookup(known, s.metric); ok && !slices.Contains(mi.labels, m[2]) && !slices.Contains(targetLabels, m[2]) {
			t.Errorf("%s: metric %s has no label %q", where, s.metric, m[2])
		}
	}
}

// anchors are the GitHub anchors of the Markdown headings in doc (and of
// explicit <a id="..."> tags).
func anchors(doc string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	inFence := false
	for line := range strings.SplitSeq(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range regexp.MustCompile(`<a (?:id|name)="([^"]+)"`).FindAllStringSubmatch(line, -1) {
			out[m[1]] = true
		}
		h, ok := strings.CutPrefix(line, "#")
		if !ok {
			continue
		}
		h = strings.TrimSpace(strings.TrimLeft(h, "#"))
		slug := githubSlug(h)
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

// githubSlug is how GitHub turns a heading into an anchor: lower case,
// punctuation dropped, spaces to hyphens.
func githubSlug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// dependencyGroup holds the alerts on the standard exporters' series: those
// describe a Redis, MySQL or Kafka server, which may serve several sales.
const dependencyGroup = "flashsale-dependencies"

// checkNamesSubject: an alert's summary and description name the sale it is
// about ({{ $labels.namespace }}/{{ $labels.name }}); an alert of
// dependencyGroup may name the server instead ({{ $labels.instance }}).
func checkNamesSubject(t *testing.T, where, group string, annotations map[string]string) {
	t.Helper()
	sale := []string{"{{ $labels.namespace }}", "{{ $labels.name }}"}
	server := []string{"{{ $labels.instance }}"}
	for _, a := range []string{"summary", "description"} {
		has := func(want []string) bool {
			return !slices.ContainsFunc(want, func(l string) bool { return !strings.Contains(annotations[a], l) })
		}
		switch {
		case has(sale):
		case group == dependencyGroup && has(server):
		case group == dependencyGroup:
			t.Errorf("%s: the %s names neither the sale (%v) nor the server (%v)", where, a, sale, server)
		default:
			t.Errorf("%s: the %s does not name the sale (%v)", where, a, sale)
		}
	}
}

func TestAlertsHaveSeverityAndRunbook(t *testing.T) {
	runbook := anchors(string(read(t, runbookFile)))
	names := map[string]bool{}
	n := 0
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			where := fmt.Sprintf("%s: alert %s", rulesFile, r.Alert)
			if names[r.Alert] {
				t.Errorf("%s: defined twice", where)
			}
			names[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity label %q, want critical, warning or info", where, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			checkNamesSubject(t, where, g.Name, r.Annotations)
			u := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(u, runbookURL)
			if !ok {
				t.Errorf("%s: runbook_url %q does not point into %s (want %s<anchor>)", where, u, runbookFile, runbookURL)
				continue
			}
			if !runbook[anchor] {
				t.Errorf("%s: runbook_url anchor #%s has no heading in %s", where, anchor, runbookFile)
			}
		}
	}
	want := []string{"FlashSaleStockNotConserved", "FlashSaleStuckInWarming", "FlashSalePurchaseSuccessRateLow",
		"FlashSaleRedisLatencyHigh", "FlashSaleRedisOpsHigh", "FlashSaleQueueBacklogHigh", "FlashSaleMySQLSlow",
		"FlashSaleDeadLetters", "FlashSaleReconcileErrors"}
	for _, a := range want {
		if !names[a] {
			t.Errorf("%s: no alert %s", rulesFile, a)
		}
	}
	if n == 0 {
		t.Fatalf("%s: no alerts", rulesFile)
	}
}

// promtool builds (once, cached) and returns the pinned promtool.
func promtool(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(root(t), "hack", "tools.sh"), "promtool")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/tools.sh promtool (builds promtool from the Go module proxy): %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestRulesPromtool runs `promtool check rules` on the groups of the
// PrometheusRule and `promtool test rules` on config/prometheus/rules_test.yaml.
// promtool reads plain rule files, so the spec is extracted into a temporary
// directory, where the unit tests find it under the name they load.
func TestRulesPromtool(t *testing.T) {
	rf := loadRules(t)
	bin := promtool(t)
	var raw struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(read(t, rulesFile), &raw); err != nil {
		t.Fatal(err)
	}
	groups, err := yaml.JSONToYAML(raw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), groups, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), read(t, rulesTestFile), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run("check", "rules", "rules.yaml")
	alerts := 0
	for _, g := range rf.Spec.Groups {
		alerts += len(g.Rules)
	}
	if !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", alerts)) {
		t.Errorf("promtool check rules: want %d rules found, got:\n%s", alerts, out)
	}
	run("test", "rules", "rules_test.yaml")

	// The unit tests must cover the alerts that matter most.
	tested := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*alertname:\s*(\S+)`).FindAllStringSubmatch(string(read(t, rulesTestFile)), -1) {
		tested[m[1]] = true
	}
	for _, a := range []string{"FlashSaleStockNotConserved", "FlashSaleStuckInWarming", "FlashSalePurchaseSuccessRateLow"} {
		if !tested[a] {
			t.Errorf("%s: no unit test of %s", rulesTestFile, a)
		}
	}
}

// TestSelectors keeps the PromQL scanner honest on the shapes the kit uses.
func TestSelectors(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`sum by (namespace, flashsale_dev_sale) (rate(a_total{endpoint="purchase", outcome=~"ok|x{1}"}[2m])) > 0.95`, []string{"a_total{endpoint,outcome}"}},
		{`histogram_quantile(0.99, sum by (le) (rate(b_bucket{x!="y"}[$__rate_interval])))`, []string{"b_bucket{x}"}},
		{`(time() - max by (namespace, name) (c)) > 60 and on (namespace, name) d{phase="Warming"} == 1`, []string{"d{phase}", "c"}},
		{`label_replace(e, "name", "$1", "sale", "([^/]+)/.*") or f offset 5m`, []string{"e", "f"}},
		{`sum(increase(g[$__range])) / 1e3`, []string{"g"}},
	} {
		sels, err := selectors(c.expr)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		var got []string
		for _, s := range sels {
			if len(s.labels) > 0 {
				got = append(got, s.metric+"{"+strings.Join(s.labels, ",")+"}")
			} else {
				got = append(got, s.metric)
			}
		}
		sort.Strings(got)
		want := slices.Clone(c.want)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%q: got %v, want %v", c.expr, got, want)
		}
	}
}
