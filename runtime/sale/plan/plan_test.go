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
	fs.Spec.RateLimit.RequestsPerSecond = 100000
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
	fs.Spec.RateLimit.RequestsPerSecond = 60000
	fs.Spec.Expected = &v1alpha1.Expected{PurchasesPerSecond: 60000}
	p := compute(fs, 6)
	text := strings.Join(p.Warnings, "\n")
	// 2,005,000 orders arrive over 33.4s and are stored over 200.5s.
	for _, want := range []string{
		"16 workers, 12 Kafka partitions: 4 workers would get no partition",
		"the last order waits 2m47.1s for MySQL: 2,005,000 orders arrive at 60,000/s, the pipeline stores 10,000 orders/s; more than 1m",
		"warm-up lead 1m, pods start in about 1m: less than twice that",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("warnings lack %q:\n%s", want, text)
		}
	}
	if p.Pipeline.OrdersPerSecond != 60000 {
		t.Errorf("orders/s at the peak %d, want the peak 60000 (less than the stock)", p.Pipeline.OrdersPerSecond)
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

// TestPlanMySQLBacklog: MySQL keeps buyers waiting only when orders arrive
// faster than it stores them, and only the expected buyers' orders count.
func TestPlanMySQLBacklog(t *testing.T) {
	fs := sale()
	fs.Spec.SKUs = fs.Spec.SKUs[:1]
	fs.Spec.SKUs[0].Stock = 1_000_000
	fs.Spec.RateLimit.RequestsPerSecond = 1000
	fs.Spec.Expected = &v1alpha1.Expected{Buyers: 1_000_000, PurchasesPerSecond: 1000}
	p := compute(fs, 1)
	if !p.Fits() || p.Pipeline.LastWait != 0 {
		t.Fatalf("1,000 orders/s arriving, 10,000/s stored: warnings %q, last wait %s; want none", p.Warnings, p.Pipeline.LastWait)
	}
	if !strings.Contains(p.Text(), "all 1,000,000 orders stored in 1m40s at 10,000 orders/s; no backlog") {
		t.Errorf("pipeline text:\n%s", p.Text())
	}

	// 50,000/s arriving: 1,000,000 orders stored over 100s, arrived in 20s.
	fs.Spec.RateLimit.RequestsPerSecond = 50000
	fs.Spec.Expected.PurchasesPerSecond = 50000
	fs.Spec.SKUs[0].Buckets = 5
	p = compute(fs, 5)
	if p.Pipeline.LastWait != 80*time.Second || len(p.Warnings) != 1 || !strings.HasPrefix(p.Warnings[0], "the last order waits 1m20s for MySQL") {
		t.Fatalf("last wait %s, warnings %q", p.Pipeline.LastWait, p.Warnings)
	}
	// Only 100,000 buyers: 100,000 orders, stored in 10s, 8s behind the last.
	fs.Spec.Expected.Buyers = 100_000
	if p = compute(fs, 5); !p.Fits() || p.Pipeline.Orders != 100_000 || p.Pipeline.LastWait != 8*time.Second {
		t.Fatalf("100,000 buyers: orders %d, last wait %s, warnings %q", p.Pipeline.Orders, p.Pipeline.LastWait, p.Warnings)
	}
	// A few orders are stored in under a second, not "0s".
	fs.Spec.Expected.Buyers = 20
	if text := compute(fs, 5).Text(); !strings.Contains(text, "all 20 orders stored in <1s") {
		t.Errorf("pipeline text for 20 orders:\n%s", text)
	}
}

// TestPlanRateLimitCapsRedis: the seckill pods' sale-wide rate limit
// refuses what is above it, so Redis sees at most the limit.
func TestPlanRateLimitCapsRedis(t *testing.T) {
	fs := sale() // rate limit 8,000
	fs.Spec.Expected = &v1alpha1.Expected{PurchasesPerSecond: 90000, SKUs: []v1alpha1.ExpectedSKU{{ID: "1001", PurchasesPerSecond: 80000}}}
	p := compute(fs, 1)
	if !p.Fits() || p.Shards.Demand != 90000 || p.Shards.Peak != 8000 || p.Shards.SKUs[0].Peak != 7111 {
		t.Fatalf("demand %d, peak %d, SKUs %+v, warnings %q; want 90,000 capped to 8,000 (1001: 8/9 of it)",
			p.Shards.Demand, p.Shards.Peak, p.Shards.SKUs, p.Warnings)
	}
	if !strings.Contains(p.Text(), "90,000 expected, capped by spec.rateLimit.requestsPerSecond: 8,000 reach Redis") {
		t.Errorf("text does not say the cap:\n%s", p.Text())
	}
}

// TestPlanWaitingRoom: with a waiting room purchases reach Redis at about
// the admission rate, and every join lands on the sale-wide hash slot,
// which one shard serves whatever the primaries.
func TestPlanWaitingRoom(t *testing.T) {
	fs := sale()
	fs.Spec.RateLimit.RequestsPerSecond = 50000
	fs.Spec.Queue = &v1alpha1.Queue{AdmitPerSecond: 5000}
	fs.Spec.Expected = &v1alpha1.Expected{PurchasesPerSecond: 50000}
	p := compute(fs, 3)
	if p.Shards.Peak != 5000 || p.Shards.CappedBy != "spec.queue.admitPerSecond" {
		t.Fatalf("peak %d capped by %q, want 5,000 by spec.queue.admitPerSecond", p.Shards.Peak, p.Shards.CappedBy)
	}
	if q := p.Shards.Queue; q == nil || q.Joins != 50000 || q.Slot != "{shop/s}" {
		t.Fatalf("queue %+v, want 50,000 joins/s on {shop/s}", q)
	}
	// Buckets on shards 1 and 2, the queue on the idle third.
	if l := p.Shards.Load[0]; l.Joins != 50000 || l.Load != 0 {
		t.Fatalf("busiest shard %+v, want the queue's alone", l)
	}
	text := strings.Join(p.Warnings, "\n")
	if !strings.Contains(text, "waiting room: 50,000 joins/s at the peak (the expected purchases/s) on its one hash slot {shop/s}, as much as 25,000 purchases/s, budget 10,000") {
		t.Fatalf("warnings %q", p.Warnings)
	}
	if !strings.Contains(p.Text(), "queue {shop/s}  50,000 joins") {
		t.Errorf("no queue row:\n%s", p.Text())
	}
	// On one primary the joins add to the buckets'.
	p = compute(fs, 1)
	if !strings.HasPrefix(p.Warnings[0], "1 primary, 2 buckets: 5,000 purchases/s and 50,000 waiting-room joins/s (slot {shop/s}; a join costs about half a purchase) on one shard (1001#0, 1002#0), budget 10,000") {
		t.Fatalf("warnings %q", p.Warnings)
	}
	// 5,000 purchases/s and 10,000 joins/s weigh 10,000 purchases/s: fits.
	fs.Spec.Queue.AdmitPerSecond = 5000
	fs.Spec.Expected.PurchasesPerSecond = 10000
	if p = compute(fs, 1); !p.Fits() {
		t.Fatalf("5,000 purchases/s and 10,000 joins/s on one primary: %q", p.Warnings)
	}
	fs.Spec.Expected.PurchasesPerSecond = 10002
	if p = compute(fs, 1); p.Fits() {
		t.Fatal("5,000 purchases/s and 10,002 joins/s on one primary fit")
	}
}

// TestPlanListedSKUsOverTotal: SKUs expected to add up to more than the
// sale-wide figure make their sum the peak, and the plan says so.
func TestPlanListedSKUsOverTotal(t *testing.T) {
	fs := sale()
	fs.Spec.RateLimit.RequestsPerSecond = 0
	fs.Spec.Expected = &v1alpha1.Expected{PurchasesPerSecond: 10000, SKUs: []v1alpha1.ExpectedSKU{{ID: "1001", PurchasesPerSecond: 30000}}}
	p := compute(fs, 4)
	if p.Shards.Peak != 30000 || p.Shards.SKUs[1].Peak != 0 {
		t.Fatalf("peak %d, SKUs %+v; want the listed 30,000, none left for 1002", p.Shards.Peak, p.Shards.SKUs)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "the peak is taken as their sum, 30,000") {
		t.Fatalf("notes %q", p.Notes)
	}
}
