package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const (
	rulesFile     = "config/prometheus/rules.yaml"
	dashboardFile = testutil.DashboardFile
	// shortFor replaces every `for:` of the rules: the test cannot wait the
	// minutes the rules wait in production, and what it proves is the
	// expressions, not the durations.
	shortFor = "2s"
)

// prometheusBin is the pinned Prometheus: PROMETHEUS (make test sets it and
// builds it first), else TOOLS_BIN/prometheus as hack/tools.sh installs it.
// A missing binary skips the test on a developer's machine, with the target
// that builds it (a cold build takes 20-40 minutes, too long to start from a
// test), and fails it under `make test` and in CI (CI=true).
func prometheusBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMETHEUS"); p != "" {
		//nolint:gosec // G703: the path is the developer's own PROMETHEUS
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			t.Fatalf("PROMETHEUS=%s is not a prometheus binary (%v): make prometheus builds it", p, err)
		}
		return p
	}
	dir := os.Getenv("TOOLS_BIN")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(home, ".cache", "flashsale-operator", "bin")
	}
	p := filepath.Join(dir, "prometheus")
	if _, err := os.Stat(p); err == nil { //nolint:gosec // G703: the developer's own TOOLS_BIN or HOME
		return p
	}
	msg := fmt.Sprintf("no prometheus at %s: `make prometheus` builds the pinned one (hack/tools.sh prometheus; "+
		"a cold build takes 20-40 min), or set PROMETHEUS", p)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// pinnedTool returns a pinned tool of hack/tools.sh, building it once
// (cached) as test/opskit does for the exporters; the environment variable
// env (REDIS_EXPORTER, MYSQLD_EXPORTER) names another binary instead.
func pinnedTool(t *testing.T, name, env string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	cmd := exec.Command("bash", filepath.Join(testutil.RepoRoot(), "hack", "tools.sh"), name)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/tools.sh %s (make exporters builds it): %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func readRepo(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var forLine = regexp.MustCompile(`(?m)^(\s+for: )\S+$`)

// shortRules is config/prometheus/rules.yaml with only its `for:` durations
// set to shortFor, as the plain rule file Prometheus loads (the groups of the
// PrometheusRule's spec). It fails unless the copy differs from the file on
// `for:` lines only: every expression is the project's own, byte for byte.
func shortRules(t *testing.T) []byte {
	t.Helper()
	orig := string(readRepo(t, rulesFile))
	short := forLine.ReplaceAllString(orig, "${1}"+shortFor)
	a, b := strings.Split(orig, "\n"), strings.Split(short, "\n")
	if len(a) != len(b) {
		t.Fatalf("the shortened copy of %s has %d lines, the file %d", rulesFile, len(b), len(a))
	}
	changed := 0
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		if !forLine.MatchString(a[i]) || !forLine.MatchString(b[i]) {
			t.Fatalf("the shortened copy of %s differs on line %d, which is no `for:` line:\n%s\n%s", rulesFile, i+1, a[i], b[i])
		}
		changed++
	}
	if changed == 0 {
		t.Fatalf("no `for:` line in %s: the pattern no longer matches the file", rulesFile)
	}
	var raw struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(short), &raw); err != nil {
		t.Fatal(err)
	}
	groups, err := yaml.JSONToYAML(raw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return groups
}

// scrapeJob is one job of the generated prometheus.yml: a static target with
// the labels a PodMonitor or ServiceMonitor would add.
type scrapeJob struct {
	Name   string
	Addr   string
	Labels map[string]string
}

// prom is a running Prometheus and a client of its HTTP API.
type prom struct {
	api promv1.API
	url string
}

// startPrometheus runs the pinned Prometheus on a free port with jobs,
// scraping and evaluating every second, with shortRules loaded; it is
// stopped (and its TSDB removed) at cleanup.
func startPrometheus(t *testing.T, bin string, jobs []scrapeJob) *prom {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), shortRules(t), 0o600); err != nil {
		t.Fatal(err)
	}
	type static struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels,omitempty"`
	}
	type scrape struct {
		JobName       string   `json:"job_name"`
		HonorLabels   bool     `json:"honor_labels"`
		StaticConfigs []static `json:"static_configs"`
	}
	cfg := map[string]any{
		// Every second, so that the shortened rules can fire and resolve
		// within the test.
		"global":     map[string]string{"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
		"rule_files": []string{filepath.Join(dir, "rules.yaml")},
	}
	var scrapes []scrape
	for _, j := range jobs {
		// honor_labels as the chart's monitors set it: the operator's
		// namespace and the seckill's endpoint label stay as exported.
		scrapes = append(scrapes, scrape{JobName: j.Name, HonorLabels: true,
			StaticConfigs: []static{{Targets: []string{j.Addr}, Labels: j.Labels}}})
	}
	cfg["scrape_configs"] = scrapes
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	startProcess(t, "prometheus", bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+addr)
	c, err := api.NewClient(api.Config{Address: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	p := &prom{api: promv1.NewAPI(c), url: "http://" + addr}
	testutil.Eventually(t, time.Minute, "Prometheus loads its rules and answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := p.api.Rules(ctx, nil)
		return err == nil && len(r.Groups) > 0
	})
	return p
}

// alerts are the alerts Prometheus holds now (pending and firing).
func (p *prom) alerts(t *testing.T) []promv1.Alert {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := p.api.Alerts(ctx)
	if err != nil {
		t.Fatalf("GET /api/v1/alerts: %v", err)
	}
	return r.Alerts
}

// alertState is the state of the alert name whose labels include match:
// "firing", "pending", or "" when it is not active.
func (p *prom) alertState(t *testing.T, name string, match map[string]string) string {
	t.Helper()
	state := ""
next:
	for _, a := range p.alerts(t) {
		if string(a.Labels["alertname"]) != name {
			continue
		}
		for k, v := range match {
			if string(a.Labels[model.LabelName(k)]) != v {
				continue next
			}
		}
		if a.State == promv1.AlertStateFiring {
			return string(a.State)
		}
		state = string(a.State)
	}
	return state
}

// waitFiring waits until the alert fires, and fails with what Prometheus
// holds if it does not within d.
func (p *prom) waitFiring(t *testing.T, name string, match map[string]string, d time.Duration) {
	t.Helper()
	p.waitState(t, name, match, d, "firing")
}

// waitResolved waits until the alert is neither pending nor firing.
func (p *prom) waitResolved(t *testing.T, name string, match map[string]string, d time.Duration) {
	t.Helper()
	p.waitState(t, name, match, d, "")
}

func (p *prom) waitState(t *testing.T, name string, match map[string]string, d time.Duration, want string) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for {
		if p.alertState(t, name, match) == want {
			t.Logf("%s %v: %s after %s", name, match, orResolved(want), time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			var held []string
			for _, a := range p.alerts(t) {
				held = append(held, fmt.Sprintf("%s %s %v", a.Labels["alertname"], a.State, a.Labels))
			}
			t.Fatalf("%s %v is not %s within %s; Prometheus holds:\n  %s", name, match, orResolved(want), d,
				strings.Join(held, "\n  "))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func orResolved(s string) string {
	if s == "" {
		return "resolved"
	}
	return s
}

// query evaluates expr as an instant query now.
func (p *prom) query(t *testing.T, expr string) (model.Vector, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, err
	}
	switch r := v.(type) {
	case model.Vector:
		return r, nil
	case *model.Scalar:
		return model.Vector{{Value: r.Value, Timestamp: r.Timestamp}}, nil
	default:
		return nil, fmt.Errorf("%s: a %s, not a vector", expr, v.Type())
	}
}

// value is the single value expr has now; ok is false when it has none.
func (p *prom) value(t *testing.T, expr string) (float64, bool) {
	t.Helper()
	v, err := p.query(t, expr)
	if err != nil || len(v) == 0 {
		return 0, false
	}
	return float64(v[0].Value), true
}

// waitTargetsUp waits until every job's target was scraped successfully.
func (p *prom) waitTargetsUp(t *testing.T, jobs []scrapeJob) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := p.query(t, "up")
		up := map[string]bool{}
		for _, s := range v {
			up[string(s.Metric["job"])] = s.Value == 1
		}
		var down []string
		for _, j := range jobs {
			if !up[j.Name] {
				down = append(down, j.Name+" ("+j.Addr+")")
			}
		}
		if err == nil && len(down) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("targets not up in Prometheus within a minute: %v (query: %v)", down, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// startProcess runs bin until the test ends (SIGKILL, then waited for); its
// output is logged when the test fails.
func startProcess(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	startProcessEnv(t, name, nil, bin, args...)
}

// startProcessEnv is startProcess with env added to the test's environment.
// A process that ends before the test does fails it, with its output.
func startProcessEnv(t *testing.T, name string, env []string, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := cmd.Wait()
		if !stopping.Load() {
			t.Errorf("%s exited while the test ran: %v\n%s", name, err, tail(out.String(), 2048))
		}
	}()
	t.Cleanup(func() {
		stopping.Store(true)
		cancel()
		<-done
		if t.Failed() {
			t.Logf("%s output (last 4 KiB):\n%s", name, tail(out.String(), 4096))
		}
	})
}
