package alerts_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// kafkaExporterQueries is how many dashboard queries read kafka_exporter's
// series (the "Kafka (broker)" row). No kafka_exporter can be built here (see
// hack/tools.sh: the Go module proxy serves none), so they are the one
// documented exception to "every query returns data"; the count is asserted,
// so a new query of that row, or any other query without data, fails.
const kafkaExporterQueries = 2

// dashQuery is one query of the dashboard and where it is.
type dashQuery struct{ where, expr string }

// dashboardQueries are the exprs of every panel (rows' nested panels
// included) and the queries of the template variables.
func dashboardQueries(t *testing.T) (panels, variables []dashQuery) {
	t.Helper()
	d := testutil.LoadDashboard(t)
	d.WalkPanels(func(p testutil.DashboardPanel) {
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) != "" {
				panels = append(panels, dashQuery{where: fmt.Sprintf("panel %q", p.Title), expr: tg.Expr})
			}
		}
	})
	for _, v := range d.Templating.List {
		if q := v.QueryText(); v.Type == "query" && q != "" {
			variables = append(variables, dashQuery{where: "variable " + v.Name, expr: q})
		}
	}
	return panels, variables
}

// substitute replaces the template variables, $x and ${x}, longest name
// first (so that $__rate_interval is not read as $__range...).
func substitute(expr string, vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		expr = strings.ReplaceAll(expr, "${"+n+"}", vars[n])
		expr = strings.ReplaceAll(expr, "$"+n, vars[n])
	}
	return expr
}

// checkDashboard evaluates every query of the dashboard against p over the
// test's run, as Grafana would with the test's sale selected: each must
// return at least one value that is a number (not NaN), except the
// kafka_exporter row's. The variables must offer the test's values.
func checkDashboard(t *testing.T, p *prom, w *world, began time.Time) {
	t.Helper()
	end := time.Now()
	const step = 2 * time.Second
	vars := map[string]string{
		"namespace": w.ns, "sale": saleName,
		"redis": w.job("redis").Addr, "mysql": w.job("mysql").Addr,
		// Grafana's $__rate_interval is max($__interval + scrape
		// interval, 4 × scrape interval): 4 s at a 1 s scrape.
		"__rate_interval": "4s", "__interval": step.String(),
		"__range": fmt.Sprintf("%ds", int(end.Sub(began).Seconds())),
	}
	panels, variables := dashboardQueries(t)
	if len(panels) < 50 {
		t.Fatalf("%s: only %d panel queries found; has the dashboard's layout changed?", dashboardFile, len(panels))
	}
	for _, v := range variables {
		m := testutil.LabelValues.FindStringSubmatch(strings.TrimSpace(v.expr))
		if m == nil {
			t.Errorf("%s: %s is no label_values(...) query this test can evaluate", dashboardFile, v.where)
			continue
		}
		name := strings.TrimPrefix(v.where, "variable ")
		want := vars[name]
		got := p.labelValues(t, substitute(m[1], vars), m[2])
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+want+" ") {
			t.Errorf("%s: %s = %s offers %v, not the test's %q", dashboardFile, v.where, v.expr, got, want)
		}
	}
	var kafka []string
	for _, q := range panels {
		expr := substitute(q.expr, vars)
		ok, err := p.hasData(expr, promv1.Range{Start: began, End: end, Step: step})
		switch {
		case err != nil:
			t.Errorf("%s: %s: %s does not evaluate: %v", dashboardFile, q.where, expr, err)
		case ok:
		case strings.Contains(expr, "kafka_consumergroup_lag"):
			kafka = append(kafka, q.where+": "+expr)
		default:
			t.Errorf("%s: %s: %s returns no data", dashboardFile, q.where, expr)
		}
	}
	for _, k := range kafka {
		t.Logf("no data, as expected without a kafka_exporter (none can be built here): %s", k)
	}
	if len(kafka) != kafkaExporterQueries {
		t.Errorf("%d kafka_exporter queries without data, want %d (the Kafka (broker) row): %v", len(kafka), kafkaExporterQueries, kafka)
	}
	t.Logf("%d dashboard queries and %d variables evaluated over %s", len(panels), len(variables), vars["__range"])
}

// hasData says whether expr, over r, has at least one value that is a number.
func (p *prom) hasData(expr string, r promv1.Range) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, _, _, err := p.api.QueryRange(ctx, expr, r)
	if err != nil {
		return false, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return false, fmt.Errorf("a %s, not a matrix", v.Type())
	}
	for _, s := range m {
		for _, sample := range s.Values {
			if !math.IsNaN(float64(sample.Value)) {
				return true, nil
			}
		}
	}
	return false, nil
}

// labelValues are the values of label on the series of selector, as
// Grafana's label_values(selector, label) lists them.
func (p *prom) labelValues(t *testing.T, selector, label string) []string {
	t.Helper()
	v, err := p.query(t, fmt.Sprintf("count by (%s) (%s)", label, selector))
	if err != nil {
		t.Errorf("label_values(%s, %s): %v", selector, label, err)
		return nil
	}
	var out []string
	for _, s := range v {
		out = append(out, string(s.Metric[model.LabelName(label)]))
	}
	sort.Strings(out)
	return out
}

// job is the scrape job named name.
func (w *world) job(name string) scrapeJob {
	for _, j := range w.jobs {
		if j.Name == name {
			return j
		}
	}
	w.t.Fatalf("no scrape job %s", name)
	return scrapeJob{}
}
