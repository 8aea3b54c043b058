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
