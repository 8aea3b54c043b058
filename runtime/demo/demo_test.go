package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/demo"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestDemoSale runs the laptop demo small: every refusal shows up and the
// invariants hold; its keys are gone afterwards.
func TestDemoSale(t *testing.T) {
	rdb := testutil.Redis(t)
	var out bytes.Buffer
	rep, err := demo.Run(context.Background(), rdb, demo.Options{
		Buyers: 600, Repeats: 300, Bots: 30, PhoneStock: 20, CaseStock: 60, StickerStock: 1000, Concurrency: 64,
	}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rep.Admitted["phone"] != 20 || rep.Admitted["case"] != 60 || rep.Remaining["phone"] != 0 {
		t.Fatalf("admitted %v remaining %v", rep.Admitted, rep.Remaining)
	}
	for _, code := range []string{"purchase 202", "ALREADY_PURCHASED", "SOLD_OUT", "BAD_TOKEN", "RATE_LIMITED", "Invariants hold"} {
		if !strings.Contains(out.String(), code) {
			t.Errorf("report lacks %q:\n%s", code, out.String())
		}
	}
	if n, _ := rdb.Keys(context.Background(), "fs:{"+rep.Sale+"*").Result(); len(n) != 0 {
		t.Fatalf("demo left %d keys behind", len(n))
	}
}
