package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// writeSale writes a sale manifest in a fresh namespace and returns its path.
func writeSale(t *testing.T) (path, ns string) {
	t.Helper()
	rdb := testutil.Redis(t)
	ns = testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/cli") {
		testutil.CleanupKeys(t, rdb, p)
	}
	path = filepath.Join(t.TempDir(), "sale.yaml")
	y := fmt.Sprintf(`apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: cli, namespace: %s}
spec:
  startTime: "2020-01-01T00:00:00Z"
  endTime: "2099-01-01T00:00:00Z"
  skus: [{id: "1001", stock: 5, price: "9.99"}]
`, ns)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ns
}

func run(ctx context.Context, args ...string) (string, error) {
	root := cli.NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestWarmCommandIdempotent(t *testing.T) {
	path, _ := writeSale(t)
	out, err := run(context.Background(), "warm", "--file", path)
	if err != nil || !strings.Contains(out, "created") {
		t.Fatalf("first warm: %v\n%s", err, out)
	}
	out, err = run(context.Background(), "warm", "--file", path)
	if err != nil || !strings.Contains(out, "unchanged") {
		t.Fatalf("second warm: %v\n%s", err, out)
	}
}

func TestCommandErrorsAreClear(t *testing.T) {
	path, _ := writeSale(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"warm"}, `required flag(s) "file" not set`},
		{[]string{"warm", "--file", "/nonexistent.yaml"}, "no such file"},
		{[]string{"warm", "--file", path, "--redis-addr", "127.0.0.1:1"}, "connect to redis 127.0.0.1:1"},
		{[]string{"seckill", "--file", path, "--listen", "256.0.0.1:x"}, "listen on 256.0.0.1:x"},
	}
	for _, tc := range cases {
		out, err := run(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%v: err %v out %q, want %q", tc.args, err, out, tc.want)
		}
	}
}

// TestSeckillCommandServes starts the real command with a key from the
// environment and buys through it, then stops it with its context.
func TestSeckillCommandServes(t *testing.T) {
	path, ns := writeSale(t)
	if _, err := run(context.Background(), "warm", "--file", path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLASHSALE_TOKEN_KEYS", "hex:"+strings.Repeat("ab", 32))
	port, metricsPort := testutil.FreePort(t), testutil.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, "seckill", "--file", path, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort))
		done <- err
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	metrics := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("seckill never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The probes and metrics answer on --metrics-addr only, never on the
	// buyers' --listen.
	for _, at := range []struct {
		base string
		want int
	}{{metrics, http.StatusOK}, {base, http.StatusNotFound}} {
		resp, err := http.Get(at.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != at.want {
			t.Errorf("GET %s/metrics: %d, want %d", at.base, resp.StatusCode, at.want)
		}
	}
	post := func(path, body string) map[string]string {
		req, _ := http.NewRequest("POST", base+"/api/v1/sales/"+ns+"/cli"+path, strings.NewReader(body))
		req.Header.Set("X-User-ID", "zoe")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&v)
		v["status_code"] = fmt.Sprint(resp.StatusCode)
		return v
	}
	tok := post("/token", `{"sku":"1001"}`)
	p := post("/purchase", `{"sku":"1001","token":"`+tok["token"]+`"}`)
	if p["status_code"] != "202" || p["orderNo"] == "" {
		t.Fatalf("purchase through the command: %v (token %v)", p, tok)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("seckill exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("seckill did not stop")
	}
}
