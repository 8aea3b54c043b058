package browser_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const depsHint = "run `make browser-deps` (hack/browser.sh: apt-get install chromium nodejs npm, npm ci in test/browser); `make test` does it first"

// browserTools are the programs the test drives.
type browserTools struct {
	node, chromium string
}

// requireBrowser fails the test, never skips it, when Chromium, Node.js or
// the pinned playwright-core are missing: a CI without them must go red.
func requireBrowser(t *testing.T) browserTools {
	t.Helper()
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil { //nolint:gosec // G703: the developer names the browser to run
		t.Fatalf("Chromium is not installed at %s (%v): %s", chromium, err, depsHint)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %s", depsHint)
	}
	installed, err := os.ReadFile(filepath.Join("node_modules", "playwright-core", "package.json"))
	if err != nil {
		t.Fatalf("test/browser/node_modules lacks playwright-core (%v): %s", err, depsHint)
	}
	lock, err := os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	if want, got := lockedVersion(t, lock), installedVersion(t, installed); want != got {
		t.Fatalf("node_modules has playwright-core %s, package-lock.json pins %s: %s", got, want, depsHint)
	}
	return browserTools{node: node, chromium: chromium}
}

func lockedVersion(t *testing.T, lock []byte) string {
	t.Helper()
	var l struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	if err := json.Unmarshal(lock, &l); err != nil {
		t.Fatalf("package-lock.json: %v", err)
	}
	return l.Packages["node_modules/playwright-core"].Version
}

func installedVersion(t *testing.T, pkg []byte) string {
	t.Helper()
	var p struct{ Version string }
	if err := json.Unmarshal(pkg, &p); err != nil {
		t.Fatalf("node_modules/playwright-core/package.json: %v", err)
	}
	return p.Version
}

// result is what drive.js reports of one scenario.
type result struct {
	Event       string            `json:"event"`
	Name        string            `json:"name"`
	OK          bool              `json:"ok"`
	Error       string            `json:"error"`
	Shown       map[string]string `json:"shown"`
	Orders      []shownOrder      `json:"orders"`
	Screenshots []string          `json:"screenshots"`
	Version     string            `json:"version"`
}

type shownOrder struct {
	OrderNo string `json:"orderNo"`
	Status  string `json:"status"`
}

// driver is the running drive.js, its browser up.
type driver struct {
	cmd    *exec.Cmd
	stdin  *json.Encoder
	lines  *bufio.Scanner
	stderr *testutil.SyncBuffer
}

// startDriver starts drive.js and waits until its browser is up with the
// pages of count scenarios open.
func startDriver(t *testing.T, tools browserTools, count int) *driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, tools.node, "drive.js")
	cmd.Env = append(os.Environ(), "CHROMIUM="+tools.chromium)
	d := &driver{cmd: cmd, stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = d.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node drive.js: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	d.stdin = json.NewEncoder(in)
	d.lines = bufio.NewScanner(out)
	d.lines.Buffer(make([]byte, 1<<20), 1<<20)
	if err := d.stdin.Encode(map[string]int{"count": count}); err != nil {
		t.Fatalf("drive.js: %v; stderr:\n%s", err, d.stderr)
	}
	ready, ok := d.next()
	if !ok || ready.Event != "ready" {
		t.Fatalf("drive.js did not start the browser: %+v; stderr:\n%s", ready, d.stderr)
	}
	t.Logf("Chromium %s driven by playwright-core", ready.Version)
	return d
}

func (d *driver) next() (result, bool) {
	if !d.lines.Scan() {
		return result{}, false
	}
	var r result
	if err := json.Unmarshal(d.lines.Bytes(), &r); err != nil {
		return result{Event: "garbage", Error: fmt.Sprintf("%v: %s", err, d.lines.Bytes())}, true
	}
	return r, true
}

// play sends the scenarios and collects one result for each.
func (d *driver) play(t *testing.T, out string, scs []scenario) map[string]result {
	t.Helper()
	if err := d.stdin.Encode(map[string]any{"out": out, "scenarios": scs}); err != nil {
		t.Fatalf("send the scenarios to drive.js: %v; stderr:\n%s", err, d.stderr)
	}
	got := map[string]result{}
	for len(got) < len(scs) {
		r, ok := d.next()
		if !ok {
			t.Fatalf("drive.js ended after %d of %d results; stderr:\n%s", len(got), len(scs), d.stderr)
		}
		if r.Event != "result" {
			t.Fatalf("drive.js: %+v; stderr:\n%s", r, d.stderr)
		}
		got[r.Name] = r
	}
	return got
}
