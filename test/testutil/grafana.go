package testutil

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// DashboardFile is the project's Grafana dashboard, relative to the repository root.
const DashboardFile = "config/grafana/flashsale-dashboard.json"

// Dashboard is the part of a Grafana dashboard the tests read: the ops kit
// checks its metrics exist, test/alerts evaluates its queries.
type Dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []DashboardVariable `json:"list"`
	} `json:"templating"`
	Panels []DashboardPanel `json:"panels"`
}

// DashboardVariable is one template variable.
type DashboardVariable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query any    `json:"query"`
}

// DashboardPanel is one panel; a row holds its panels in Panels.
type DashboardPanel struct {
	Title   string           `json:"title"`
	Type    string           `json:"type"`
	Panels  []DashboardPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// LabelValues matches a variable's label_values(selector, label) query.
var LabelValues = regexp.MustCompile(`^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// LoadDashboard reads the project's dashboard (DashboardFile).
func LoadDashboard(t testing.TB) Dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), DashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d Dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", DashboardFile, err)
	}
	return d
}

// QueryText is the variable's query: a string, or the query field of an
// object (newer Grafana versions).
func (v DashboardVariable) QueryText() string {
	if m, ok := v.Query.(map[string]any); ok {
		s, _ := m["query"].(string)
		return s
	}
	s, _ := v.Query.(string)
	return s
}

// WalkPanels calls f on every panel, those inside rows included (a row's
// panels before the row).
func (d Dashboard) WalkPanels(f func(DashboardPanel)) { walkPanels(d.Panels, f) }

func walkPanels(ps []DashboardPanel, f func(DashboardPanel)) {
	for _, p := range ps {
		walkPanels(p.Panels, f)
		f(p)
	}
}
