//go:build e2e

package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// checkPlugin runs `kubectl flashsale` against the live sale ns/name while it
// is Active, as an SRE would: `status --watch` in a terminal (tmux), whose
// screen must show the phase and the SKU rows and refresh (the countdown
// moves), then pause and resume through kubectl's own plugin discovery (the
// binary linked as kubectl-flashsale on PATH). It waits until url admits
// buyers again, so the load that follows meets an open sale.
func (c *cluster) checkPlugin(ns, name, url string) {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	plugin := filepath.Join(dir, "kubectl-flashsale")
	if err := os.Symlink(c.flashbin, plugin); err != nil {
		t.Fatal(err)
	}

	session := fmt.Sprintf("flashsale-e2e-%d", os.Getpid())
	shell := fmt.Sprintf("KUBECONFIG=%s %s status %s -n %s --watch; echo EXITED $?; sleep 600",
		c.env["KUBECONFIG"], plugin, name, ns)
	c.run("tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", shell)
	defer func() { _, _ = c.output("tmux", "kill-session", "-t", session) }()
	capture := func() string {
		out, err := exec.Command("tmux", "capture-pane", "-p", "-t", session).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux capture-pane: %v\n%s", err, out)
		}
		return string(out)
	}
	countdown := regexp.MustCompile(`ends in [0-9hms]+`)
	var first string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if first = capture(); strings.Contains(first, "phase Active") && countdown.MatchString(first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl flashsale status --watch never showed the Active sale:\n%s", first)
		}
	}
	for _, want := range []string{"SKU    STOCK  REMAINING", "phone  2000", "case   8000", "CONDITIONS", "Ready", "EVENTS"} {
		if !strings.Contains(first, want) {
			t.Fatalf("status screen lacks %q:\n%s", want, first)
		}
	}
	time.Sleep(2500 * time.Millisecond)
	second := capture()
	if countdown.FindString(first) == countdown.FindString(second) || strings.Contains(second, "EXITED") {
		t.Fatalf("status --watch did not refresh the countdown (or exited):\n%s\n---\n%s", first, second)
	}
	t.Logf("kubectl flashsale status --watch (tmux):\n%s", second)

	// pause and resume through kubectl when it is installed: it finds the
	// plugin on PATH by its name.
	argv := []string{plugin}
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		argv = []string{kubectl, "flashsale"}
	}
	flashsale := func(args ...string) string {
		cmd := exec.Command(argv[0], append(argv[1:], append(args, "-n", ns)...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.env["KUBECONFIG"], "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
		return string(out)
	}
	if out := flashsale("pause", name); !strings.Contains(out, "flashsale.dev/"+name+" paused (spec.paused: false → true)") {
		t.Fatalf("kubectl flashsale pause: %s", out)
	}
	if fs, err := c.get(ns, name); err != nil || !fs.Spec.Paused {
		t.Fatalf("after kubectl flashsale pause: spec.paused not true (%v)", err)
	}
	c.waitAnswer(url, ns, name, http.StatusServiceUnavailable, "PAUSED", 10*time.Second)
	if out := flashsale("resume", name); !strings.Contains(out, "resumed (spec.paused: true → false)") {
		t.Fatalf("kubectl flashsale resume: %s", out)
	}
	c.waitAnswer(url, ns, name, http.StatusOK, "", 10*time.Second)
	t.Logf("kubectl flashsale (%s) pause and resume honoured through the Service", strings.Join(argv, " "))
}
