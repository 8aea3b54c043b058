package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestWarmCommandShowsBuckets: `flashsale warm` shows a split SKU's sums
// and one line per bucket with its share; a SKU not split keeps its one line.
func TestWarmCommandShowsBuckets(t *testing.T) {
	rdb := testutil.Redis(t)
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/cli") {
		testutil.CleanupKeys(t, rdb, p)
	}
	path := filepath.Join(t.TempDir(), "sale.yaml")
	y := fmt.Sprintf(`apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: cli, namespace: %s}
spec:
  startTime: "2020-01-01T00:00:00Z"
  endTime: "2099-01-01T00:00:00Z"
  skus: [{id: "hot", stock: 100, price: "1", buckets: 3}, {id: "cold", stock: 5, price: "1"}]
`, ns)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(context.Background(), "warm", "--file", path)
	if err != nil {
		t.Fatalf("warm: %v\n%s", err, out)
	}
	want := []string{
		"  SKU hot          created   remaining=100 stock=100 debt=0 (moved +100)\n" +
			"    bucket 0        created   remaining=34 initial=34 debt=0\n" +
			"    bucket 1        created   remaining=33 initial=33 debt=0\n" +
			"    bucket 2        created   remaining=33 initial=33 debt=0\n" +
			"  SKU cold         created   remaining=5 stock=5 debt=0 (moved +5)\n",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("warm output:\n%s\nwant it to contain:\n%s", out, w)
		}
	}
}

// TestWarmCommandRefusesAnotherBucketCount: `flashsale warm --file` with a
// bucket count other than the one a SKU was warmed with fails, naming the
// SKU and both counts, and leaves the stock as it was; a lowering below
// what buyers hold shows the SKU held.
func TestWarmCommandRefusesAnotherBucketCount(t *testing.T) {
	rdb := testutil.Redis(t)
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/cli") {
		testutil.CleanupKeys(t, rdb, p)
	}
	path := filepath.Join(t.TempDir(), "sale.yaml")
	warmWith := func(stock, buckets int) (string, error) {
		y := fmt.Sprintf(`apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: cli, namespace: %s}
spec:
  startTime: "2020-01-01T00:00:00Z"
  endTime: "2099-01-01T00:00:00Z"
  skus: [{id: "hot", stock: %d, price: "1", buckets: %d}]
`, ns, stock, buckets)
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return run(context.Background(), "warm", "--file", path)
	}
	if out, err := warmWith(100, 2); err != nil {
		t.Fatalf("warm: %v\n%s", err, out)
	}
	out, err := warmWith(100, 3)
	if err == nil || !strings.Contains(err.Error(), "SKU hot was warmed split into 2 bucket(s) and the spec asks for 3") {
		t.Fatalf("warm with 3 buckets after 2: %v\n%s", err, out)
	}
	ks := keys.Buckets(ns+"/cli", "hot", 2)
	rdb.Set(context.Background(), ks[0].Stock, 0, 0) // 50 units sold in bucket 0 (the counters only)
	out, err = warmWith(10, 2)
	if err != nil || !strings.Contains(out, "SKU hot          lowered   remaining=0 stock=10 debt=40 (moved -50) held (") {
		t.Fatalf("lowering below what buyers hold: %v\n%s", err, out)
	}
}
