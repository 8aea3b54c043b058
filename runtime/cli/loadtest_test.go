package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// startSeckill runs the seckill command for the sale at path until the test
// ends and returns its base URL.
func startSeckill(t *testing.T, path string, args ...string) string {
	t.Helper()
	if _, err := run(context.Background(), "warm", "--file", path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLASHSALE_TOKEN_KEYS", "hex:"+strings.Repeat("cd", 32))
	port, metricsPort := testutil.FreePort(t), testutil.FreePort(t)
	background(t, append([]string{"seckill", "--file", path, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort)}, args...)...)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("seckill never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// background runs a command until the test ends.
func background(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, args...)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v", args[0], err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s did not stop", args[0])
		}
	})
}

// runSplit runs the root command with stdout and stderr apart.
func runSplit(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	root := cli.NewRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

// TestLoadtestCommand runs the loadtest command against the seckill and
// worker commands: a spike sells the stock out, half the buyers pay, and the
// checks hold (MySQL's too); told a smaller stock, the command fails naming
// the broken invariant.
func TestLoadtestCommand(t *testing.T) {
	path, ns := writeSale(t)
	_, dsn := testutil.OrderDB(t)
	t.Setenv("FLASHSALE_PAYMENT_SECRET", "cli-loadtest-secret")
	base := startSeckill(t, path, "--mysql-dsn", dsn)
	background(t, "worker", "--file", path, "--mysql-dsn", dsn)
	args := []string{"loadtest", "--file", path, "--url", base, "--users", "40", "--bot-share", "0.25", "--pay-share", "0.5",
		"--spike-window", "200ms", "--concurrency", "16", "--seed", "7", "--repeat-delay", "10ms", "--poll-interval", "20ms",
		"--mysql-dsn", dsn, "--fs", ns + "/cli", "--kubeconfig", "/nonexistent/kubeconfig"}
	stdout, stderr, err := runSplit(context.Background(), append(args, "--json")...)
	if err != nil {
		t.Fatalf("loadtest: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "req/s") {
		t.Errorf("no progress on stderr: %q", stderr)
	}
	var rep struct {
		OK     bool `json:"ok"`
		Seed   uint64
		Orders struct{ Admitted, Paid int64 }
		Checks []struct{ Name, Status, Detail string }
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	if !rep.OK || rep.Orders.Admitted != 5 || rep.Orders.Paid == 0 || rep.Seed != 7 {
		t.Fatalf("report: %+v", rep)
	}
	for _, c := range rep.Checks {
		if c.Name == "status matches MySQL" && (c.Status != "skip" || !strings.Contains(c.Detail, "no kubeconfig")) {
			t.Errorf("FlashSale check without a kubeconfig: %+v", c)
		}
		if c.Name == "no lost order" && (c.Status != "pass" || !strings.Contains(c.Detail, "all 5 admitted orders in MySQL")) {
			t.Errorf("MySQL check: %+v", c)
		}
	}

	// A checker told a smaller stock than the sale has (--skus 1001:3) sees
	// an oversell, and the command fails naming the broken invariant.
	path2, _ := writeSale(t)
	base2 := startSeckill(t, path2)
	stdout, _, err = runSplit(context.Background(), "loadtest", "--file", path2, "--url", base2, "--users", "30", "--pay-share", "0",
		"--skus", "1001:3", "--quiet", "--spike-window", "100ms", "--seed", "7", "--poll-timeout", "200ms")
	if !errors.Is(err, cli.ErrInvariantsBroken) || !strings.Contains(err.Error(), "no oversell") {
		t.Fatalf("want the oversell to be caught, got %v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "INVARIANTS BROKEN: no oversell") || !strings.Contains(stdout, "5 orders admitted, stock 3") {
		t.Errorf("text report:\n%s", stdout)
	}
}

func TestLoadtestCommandErrors(t *testing.T) {
	path, _ := writeSale(t)
	t.Setenv("FLASHSALE_PAYMENT_SECRET", "")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"loadtest"}, "no sale: give --file sale.yaml or --fs NAMESPACE/NAME"},
		{[]string{"loadtest", "--fs", "shop"}, `--fs "shop": want NAMESPACE/NAME`},
		{[]string{"loadtest", "--file", path, "--fs", "other/sale"}, "name different sales"},
		{[]string{"loadtest", "--fs", "shop/sale", "--kubeconfig", "/nonexistent"}, "no SKUs"},
		{[]string{"loadtest", "--file", path, "--skus", "nope"}, `has no SKU "nope"`},
		{[]string{"loadtest", "--file", path, "--skus", "1001:x"}, "stock of 1001 must be a whole number"},
		{[]string{"loadtest", "--file", path}, "buyers are to pay (--pay-share 0.7) but there is no payment secret"},
		{[]string{"loadtest", "--file", path, "--pay-share", "0", "--profile", "steady"}, `unknown profile "steady"`},
		{[]string{"loadtest", "--file", path, "--pay-share", "0", "--url", "http://127.0.0.1:1"}, "preflight GET http://127.0.0.1:1/api/v1/sales/"},
	}
	for _, tc := range cases {
		out, err := run(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%v: err %v out %q, want %q", tc.args, err, out, tc.want)
		}
	}
}
