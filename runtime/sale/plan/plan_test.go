package plan_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
)

// sale is a defaulted sale of two SKUs with a 10-minute warm-up lead.
func sale() *v1alpha1.FlashSale {
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "s"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime:  metav1.NewTime(time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)),
			EndTime:    metav1.NewTime(time.Date(2026, 11, 11, 12, 30, 0, 0, time.UTC)),
			WarmupLead: &metav1.Duration{Duration: 10 * time.Minute},
			SKUs: []v1alpha1.SKU{
				{ID: "1001", Stock: 5000, Price: "1.00"},
				{ID: "1002", Stock: 5000, Price: "1.00"},
			},
			RateLimit: v1alpha1.RateLimit{RequestsPerSecond: 8000},
			Kafka:     &v1alpha1.Kafka{Partitions: 12},
			Worker:    v1alpha1.Worker{Replicas: 2},
		},
	}
	fs.SetDefaults()
	return fs
}

func compute(fs *v1alpha1.FlashSale, primaries int) *plan.Plan {
	return plan.Compute(fs, plan.Topology{Primaries: primaries, Source: "flag"}, plan.DefaultFigures(), nil)
}

func TestPlanFits(t *testing.T) {
	p := compute(sale(), 1)
	if !p.Fits() {
		t.Fatalf("a sale within every budget has warnings: %q", p.Warnings)
	}
	if !strings.Contains(p.Text(), "Fits: every figure is within its budget.") {
		t.Fatalf("text does not say it fits:\n%s", p.Text())
	}
}

// TestPlanHotSKUOnOneShard is the example: a hot SKU in one bucket
// on a 3-primary cluster puts its whole peak on one shard.
func TestPlanHotSKUOnOneShard(t *testing.T) {
	fs := sale()
	fs.Spec.Expected = &v1alpha1.Expected{PurchasesPerSecond: 90000, SKUs: []v1alpha1.ExpectedSKU{{ID: "1001", PurchasesPerSecond: 80000}}}
	p := compute(fs, 3)
	want := "3 primaries, 1 bucket: 80,000 purchases/s on one shard (1001#0), budget 10,000"
	if p.Fits() || p.Warnings[0] != want {
		t.Fatalf("warnings %q, want first %q", p.Warnings, want)
	}
	if got := p.Shards.SKUs[1].Peak; got != 10000 {
		t.Errorf("the rest of the peak on the unlisted SKU: %d, want 10000", got)
	}
	if !strings.Contains(strings.Join(p.Warnings, "\n"), "SKU 1001: 80,000 purchases/s in 1 bucket: split it (spec.skus[].buckets: 3") {
		t.Errorf("no advice to split: %q", p.Warnings)
	}

	// Split over the three primaries: the SKU's peak spreads, but 26,667
	// a shard is still more than the budget, and the cluster is too small.
	fs.Spec.SKUs[0].Buckets = 3
	p = compute(fs, 3)
	text := strings.Join(p.Warnings, "\n")
	if !strings.Contains(text, "26,666 purchases/s on one shard") || !strings.Contains(text, "needs 8 primaries at 10,000 each, Redis has 3") {
		t.Fatalf("split sale's warnings: %q", p.Warnings)
	}
	if strings.Contains(text, "split it") {
		t.Errorf("advises a split already made: %q", p.Warnings)
	}
}

// TestPlanBucketsShareOnePrimary: on a standalone Redis every bucket of
// every SKU is on the one primary, and their loads add up.
func TestPlanBucketsShareOnePrimary(t *testing.T) {
	fs := sale()
	fs.Spec.RateLimit.RequestsPerSecond = 16000
	p := compute(fs, 1)
	if len(p.Shards.Load) != 1 || p.Shards.Load[0].Load != 16000 {
		t.Fatalf("load %+v, want one shard with 16000", p.Shards.Load)
	}
	if p.Fits() || !strings.HasPrefix(p.Warnings[0], "1 primary, 2 buckets: 16,000 purchases/s on one shard (1001#0, 1002#0)") {
		t.Fatalf("warnings %q", p.Warnings)
	}
	// The same on two primaries: 8,000 each, fits.
	if p := compute(fs, 2); !p.Fits() {
		t.Fatalf("two primaries: %q", p.Warnings)
	}
}

func TestPlanWorkersPipelineWarmup(t *testing.T) {
	fs := sale()
	fs.Spec.Worker.Replicas = 16
	fs.Spec.SKUs[0].Stock = 2_000_000
	fs.Spec.WarmupLead = &metav1.Duration{Duration: time.Minute}
	p := compute(fs, 1)
	text := strings.Join(p.Warnings, "\n")
	for _, want := range []string{
		"16 workers, 12 Kafka partitions: 4 workers would get no partition",
		"MySQL: storing all 2,005,000 orders takes 3m20.5s at the pipeline's 10,000 orders/s, more than 1m",
		"warm-up lead 1m, pods start in about 1m: less than twice that",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("warnings lack %q:\n%s", want, text)
		}
	}
	if p.Pipeline.OrdersPerSecond != 8000 {
		t.Errorf("orders/s at the peak %d, want the peak 8000 (less than the stock)", p.Pipeline.OrdersPerSecond)
	}
	c := p.Compact()
	if !strings.HasPrefix(c, p.Warnings[0]) || len(c) > plan.MaxCompact {
		t.Errorf("compact: warnings first and under %d bytes: %q", plan.MaxCompact, c)
	}
}

// TestPlanWithoutPeak: a sale that says nothing of its load is not
// "does not fit": the plan says what it could not size.
func TestPlanWithoutPeak(t *testing.T) {
	fs := sale()
	fs.Spec.RateLimit.RequestsPerSecond = 0
	p := compute(fs, 1)
	if !p.Fits() || len(p.Notes) != 1 || !strings.Contains(p.Text(), "Note: no expected peak: set spec.expected.purchasesPerSecond") {
		t.Fatalf("warnings %q notes %q", p.Warnings, p.Notes)
	}
}

func TestPlanMemoryKeysAndJSON(t *testing.T) {
	fs := sale()
	fs.Spec.SKUs[0].Buckets = 2
	fs.Spec.Expected = &v1alpha1.Expected{Buyers: 1000}
	p := compute(fs, 2)
	if p.Memory.Orders != 1000 {
		t.Fatalf("orders at 1000 buyers: %d", p.Memory.Orders)
	}
	if len(p.Memory.Buckets) != 3 {
		t.Fatalf("buckets %+v", p.Memory.Buckets)
	}
	b1 := p.Memory.Buckets[1]
	if b1.Prefix != "fs:{shop/s/1001#1:2}:" && !strings.HasPrefix(b1.Keys[0], b1.Prefix) {
		t.Errorf("bucket 1 keys %q under prefix %q", b1.Keys, b1.Prefix)
	}
	var back map[string]any
	raw, err := p.JSON()
	if err != nil || json.Unmarshal(raw, &back) != nil || back["redis"] == nil || back["warnings"] == nil {
		t.Fatalf("json: %v %s", err, raw)
	}
	if w := back["warmup"].(map[string]any); w["lead"] != "10m" || w["podStartup"] != "1m" {
		t.Errorf("warm-up in JSON: %v, want durations as strings", w)
	}
	if f := back["figures"].(map[string]any); f["podStartup"] != "1m" || f["shardBudget"] != float64(10000) {
		t.Errorf("figures in JSON: %v", f)
	}
}
