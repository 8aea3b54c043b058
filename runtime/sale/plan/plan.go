// Package plan sizes a sale before it runs: the objects the operator will
// create, the Redis keys and their memory at the expected buyers, purchases
// per second per Redis shard against the per-shard budget, workers against
// Kafka partitions, the MySQL insert rate against the pipeline's measured
// rate, and the warm-up lead against the pods' start-up. It warns in plain
// words where a figure does not fit.
//
// It is pure: no I/O. The caller passes the defaulted sale, the Redis
// topology (from a flag, or read from Redis) and the objects (from the
// operator's own builder, so the list cannot drift from what it applies).
// `flashsale plan` prints a Plan; the operator puts it in the Planned
// condition.
package plan

import (
	"fmt"
	"sort"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// Topology is what the plan knows of the sale's Redis.
type Topology struct {
	// Primaries is the number of Redis primaries (1: a standalone server);
	// 0 counts as 1.
	Primaries int `json:"primaries"`
	// Source says where Primaries comes from ("flag", "redis", "operator").
	Source string `json:"source,omitempty"`
}

// Object is one object the operator creates for the sale.
type Object struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Replicas of a Deployment (its floor when autoscaled).
	Replicas *int32 `json:"replicas,omitempty"`
	// MaxReplicas of an autoscaler.
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`
	// Image of a Deployment's pods.
	Image string `json:"image,omitempty"`
}

// Plan is a sale's plan.
type Plan struct {
	Sale     string   `json:"sale"`
	Topology Topology `json:"topology"`
	Figures  Figures  `json:"figures"`
	Objects  []Object `json:"objects"`
	Memory   Memory   `json:"redis"`
	Shards   Shards   `json:"shards"`
	Pipeline Pipeline `json:"pipeline"`
	Warmup   Warmup   `json:"warmup"`
	// Warnings say, in plain words, which figure does not fit and what to
	// do about it; none when the sale fits.
	Warnings []string `json:"warnings"`
	// Notes say what could not be sized for want of an input: not a
	// warning (the sale may well fit), but the plan is the weaker for it.
	Notes []string `json:"notes,omitempty"`
}

// Fits says whether every figure fits its budget.
func (p *Plan) Fits() bool { return len(p.Warnings) == 0 }

// Compute plans sale (defaulted, as the API server or manifest.Load leaves
// it) on topo against figs; objs are the objects the operator creates.
func Compute(sale *v1alpha1.FlashSale, topo Topology, figs Figures, objs []Object) *Plan {
	topo.Primaries = max(topo.Primaries, 1)
	p := &Plan{Sale: sale.SaleKey(), Topology: topo, Figures: figs, Objects: objs, Warnings: []string{}}
	p.Memory = estimateMemory(sale)
	p.Shards = planShards(sale, topo.Primaries, figs.ShardBudget)
	p.Pipeline = planPipeline(sale, figs.PipelineRate)
	p.Warmup = Warmup{Lead: sale.WarmupLead(), PodStartup: figs.PodStartup}
	p.Warnings = append(p.Warnings, p.Shards.warnings(topo.Primaries, figs.ShardBudget)...)
	p.Warnings = append(p.Warnings, p.Pipeline.warnings(sale)...)
	p.Warnings = append(p.Warnings, p.Warmup.warnings()...)
	if p.Shards.Peak <= 0 {
		p.Notes = append(p.Notes, "no expected peak: set spec.expected.purchasesPerSecond (or spec.rateLimit.requestsPerSecond) to size the Redis shards and MySQL")
	}
	return p
}

// Shards is the Redis load section of a plan.
type Shards struct {
	// Peak is the sale-wide purchase attempts per second at the peak
	// (spec.expected.purchasesPerSecond, else spec.rateLimit.requestsPerSecond).
	Peak int64 `json:"peak"`
	// SKUs are each SKU's peak and buckets.
	SKUs []SKULoad `json:"skus"`
	// Load is the purchases per second on each primary, busiest first.
	Load []ShardLoad `json:"load"`
}

// SKULoad is one SKU's peak.
type SKULoad struct {
	ID      string `json:"id"`
	Peak    int64  `json:"peak"`
	Buckets int    `json:"buckets"`
	// PerShard is the SKU's peak on each shard its buckets run on.
	PerShard int64 `json:"perShard"`
	// Suggested buckets: ceil(peak / budget), at most the primaries.
	Suggested int `json:"suggestedBuckets"`
}

// ShardLoad is one primary's share of the peak.
type ShardLoad struct {
	Shard int   `json:"shard"`
	Load  int64 `json:"load"`
	// Buckets on it, as "sku#bucket".
	Buckets []string `json:"buckets"`
}

// skuPeaks is each SKU's peak: the listed SKUs' own, the rest of the
// sale-wide peak spread evenly over the others.
func skuPeaks(sale *v1alpha1.FlashSale) (int64, map[string]int64) {
	peak := sale.Spec.RateLimit.RequestsPerSecond
	listed := map[string]int64{}
	if e := sale.Spec.Expected; e != nil {
		if e.PurchasesPerSecond > 0 {
			peak = e.PurchasesPerSecond
		}
		for _, s := range e.SKUs {
			listed[s.ID] = s.PurchasesPerSecond
		}
	}
	rest := peak
	unlisted := 0
	for _, sku := range sale.Spec.SKUs {
		if v, ok := listed[sku.ID]; ok {
			rest -= v
		} else {
			unlisted++
		}
	}
	out := map[string]int64{}
	for _, sku := range sale.Spec.SKUs {
		if v, ok := listed[sku.ID]; ok {
			out[sku.ID] = v
		} else {
			out[sku.ID] = max(rest, 0) / int64(unlisted)
		}
	}
	return peak, out
}

// planShards spreads each SKU's peak over its buckets and the buckets over
// the primaries. Hash slots are assumed spread evenly: the buckets go round
// the primaries, busiest SKU first, so those of one SKU land on distinct
// primaries while there are enough.
func planShards(sale *v1alpha1.FlashSale, primaries int, budget int64) Shards {
	peak, peaks := skuPeaks(sale)
	sh := Shards{Peak: peak, Load: make([]ShardLoad, primaries)}
	for i := range sh.Load {
		sh.Load[i].Shard = i + 1
	}
	for _, sku := range sale.Spec.SKUs {
		n := sku.BucketCount()
		sh.SKUs = append(sh.SKUs, SKULoad{ID: sku.ID, Peak: peaks[sku.ID], Buckets: n,
			PerShard:  ceilDiv(peaks[sku.ID], int64(min(n, primaries))),
			Suggested: int(max(min(ceilDiv(peaks[sku.ID], max(budget, 1)), int64(primaries), 32), 1))})
	}
	order := append([]SKULoad(nil), sh.SKUs...)
	sort.SliceStable(order, func(i, j int) bool { return order[i].Peak > order[j].Peak })
	next := 0
	for _, s := range order {
		for b := range s.Buckets {
			l := &sh.Load[next%primaries]
			l.Load += s.Peak / int64(s.Buckets)
			l.Buckets = append(l.Buckets, fmt.Sprintf("%s#%d", s.ID, b))
			next++
		}
	}
	sort.SliceStable(sh.Load, func(i, j int) bool { return sh.Load[i].Load > sh.Load[j].Load })
	return sh
}

func ceilDiv(a, b int64) int64 {
	if b <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// warnings say which shard takes more than the budget and why.
func (sh Shards) warnings(primaries int, budget int64) []string {
	var out []string
	for _, l := range sh.Load {
		if l.Load <= budget {
			continue
		}
		out = append(out, fmt.Sprintf("%s, %s: %s purchases/s on one shard (%s), budget %s",
			plural(primaries, "primary", "primaries"), bucketsOf(l.Buckets), group(l.Load), joinList(l.Buckets), group(budget)))
	}
	for _, s := range sh.SKUs {
		if s.PerShard > budget && s.Buckets < s.Suggested {
			out = append(out, fmt.Sprintf("SKU %s: %s purchases/s in %s: split it (spec.skus[].buckets: %d, one per primary)",
				s.ID, group(s.Peak), plural(s.Buckets, "bucket", "buckets"), s.Suggested))
		}
		if need := ceilDiv(s.Peak, max(budget, 1)); need > int64(primaries) {
			out = append(out, fmt.Sprintf("SKU %s: %s purchases/s needs %d primaries at %s each, Redis has %d: add primaries (Redis Cluster) or lower the expected rate",
				s.ID, group(s.Peak), need, group(budget), primaries))
		}
	}
	return out
}

// Pipeline is the order pipeline section of a plan.
type Pipeline struct {
	// Kafka is false for a sale without Kafka (Redis Stream → MySQL).
	Kafka      bool  `json:"kafka"`
	Workers    int32 `json:"workers"`
	Partitions int32 `json:"partitions,omitempty"`
	// OrdersPerSecond is what MySQL must store at the peak: the peak
	// purchases per second, at most the stock (it sells out within a second).
	OrdersPerSecond int64 `json:"ordersPerSecond"`
	// Stock is the units to store in all.
	Stock int64 `json:"stock"`
	// Rate is the pipeline's measured orders per second.
	Rate int64 `json:"rate"`
	// StoreAll is how long storing every unit's order takes at Rate.
	StoreAll time.Duration `json:"storeAll"`
}

func planPipeline(sale *v1alpha1.FlashSale, rate int64) Pipeline {
	peak, _ := skuPeaks(sale)
	stock := sale.TotalStock()
	p := Pipeline{Workers: sale.Spec.Worker.Replicas, OrdersPerSecond: min(peak, stock), Stock: stock, Rate: rate}
	if k := sale.Spec.Kafka; k != nil {
		p.Kafka, p.Partitions = true, k.Partitions
	}
	if rate > 0 {
		p.StoreAll = time.Duration(float64(stock) / float64(rate) * float64(time.Second)).Round(100 * time.Millisecond)
	}
	return p
}

func (p Pipeline) warnings(sale *v1alpha1.FlashSale) []string {
	var out []string
	if p.Kafka && p.Workers > p.Partitions {
		out = append(out, fmt.Sprintf("%d workers, %d Kafka partitions: %d workers would get no partition; raise spec.kafka.partitions or lower spec.worker.replicas",
			p.Workers, p.Partitions, p.Workers-p.Partitions))
	}
	limit := min(sale.PaymentTimeout(), time.Minute)
	if p.Rate > 0 && p.StoreAll > limit {
		out = append(out, fmt.Sprintf("MySQL: storing all %s orders takes %s at the pipeline's %s orders/s, more than %s: buyers wait that long for their order to be payable",
			group(p.Stock), p.StoreAll, group(p.Rate), shortDuration(limit)))
	}
	return out
}

// Warmup is the warm-up section of a plan.
type Warmup struct {
	Lead       time.Duration `json:"lead"`
	PodStartup time.Duration `json:"podStartup"`
}

func (w Warmup) warnings() []string {
	if w.Lead >= 2*w.PodStartup {
		return nil
	}
	return []string{fmt.Sprintf("warm-up lead %s, pods start in about %s: less than twice that, a slow image pull or node scale-up can leave the sale without pods at its start; raise spec.warmupLead to %s",
		shortDuration(w.Lead), shortDuration(w.PodStartup), shortDuration(2*w.PodStartup))}
}
