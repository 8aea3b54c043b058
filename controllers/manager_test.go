package controllers_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestManagerCommand runs `flashsale manager` itself, as the operator's pod
// does: it elects itself leader, watches FlashSales, answers its probes and
// stops cleanly.
func TestManagerCommand(t *testing.T) {
	e := newEnv(t, envOpts{})
	cfg, _ := testutil.Kube(t, cli.Scheme())
	kubeconfig := testutil.Kubeconfig(t, cfg)
	t.Setenv("KUBECONFIG", kubeconfig)

	probe := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := cli.NewRoot()
	cmd.SetArgs([]string{"manager", "--image", "flashsale:test", "--metrics-bind-address", "0",
		"--health-probe-bind-address", probe, "--leader-elect", "--leader-election-namespace", e.ns,
		"--log-format", "text"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	// A sale whose warm-up is hours away: the manager must show it Pending.
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.StartTime.Time = time.Now().Add(3 * time.Hour)
		fs.Spec.EndTime.Time = time.Now().Add(4 * time.Hour)
	})
	deadline := time.Now().Add(30 * time.Second)
	for e.get().Status.Phase != v1alpha1.PhasePending {
		if time.Now().After(deadline) {
			t.Fatalf("the manager did not reconcile the sale: status %+v", e.get().Status)
		}
		select {
		case err := <-done:
			t.Fatalf("manager exited early: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + probe + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s answered %d", path, resp.StatusCode)
		}
	}
	var lease coordinationv1.Lease
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: "flashsale-operator.flashsale.dev"}, &lease); err != nil {
		t.Fatalf("no leader election lease: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not stop")
	}
	if _, err := net.DialTimeout("tcp", probe, 200*time.Millisecond); err == nil {
		t.Fatal("probe endpoint still listening after stop")
	}
}
