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
	p.Pipeline = planPipeline(sale, p.Shards.Peak, figs.PipelineRate)
	p.Warmup = Warmup{Lead: sale.WarmupLead(), PodStartup: figs.PodStartup}
	p.Warnings = append(p.Warnings, p.Shards.warnings(topo.Primaries, figs.ShardBudget)...)
	p.Warnings = append(p.Warnings, p.Pipeline.warnings(sale)...)
	p.Warnings = append(p.Warnings, p.Warmup.warnings()...)
	if _, _, over := demand(sale); over {
		p.Notes = append(p.Notes, fmt.Sprintf("spec.expected.skus add up to more than spec.expected.purchasesPerSecond: the peak is taken as their sum, %s", group(p.Shards.Demand)))
	}
	if p.Shards.Peak <= 0 {
		p.Notes = append(p.Notes, "no expected peak: set spec.expected.purchasesPerSecond (or spec.rateLimit.requestsPerSecond) to size the Redis shards and MySQL")
	}
	return p
}

// Shards is the Redis load section of a plan.
type Shards struct {
	// Demand is the sale-wide purchase attempts per second expected at the
	// peak: spec.expected.purchasesPerSecond (at least the sum of
	// spec.expected.skus), else spec.rateLimit.requestsPerSecond.
	Demand int64 `json:"demand"`
	// Peak is the purchases per second that reach Redis at the peak: the
	// demand, at most the seckill pods' sale-wide rate limit and, with a
	// waiting room, its admissions per second (a purchase per admitted
	// buyer).
	Peak int64 `json:"peak"`
	// CappedBy names the spec field that caps Peak below Demand.
	CappedBy string `json:"cappedBy,omitempty"`
	// SKUs are each SKU's peak and buckets.
	SKUs []SKULoad `json:"skus"`
	// Queue is the waiting room's load, nil without one.
	Queue *QueueLoad `json:"queue,omitempty"`
	// Load is the purchases per second on each primary, busiest first.
	Load []ShardLoad `json:"load"`
}

// joinsPerPurchase is how many waiting-room joins cost Redis what one
// purchase does: TestPlanMemoryMatchesRedis's calibration measured 23–27 µs
// of Redis CPU per join against 54–70 µs per purchase (redis-server 7.0.15,
// the shared 2-core machine, 2026-11-30), so a join counts as half a
// purchase, rounded up to be safe. An admission (about 10 µs, at most
// spec.queue.admitPerSecond) is left out.
const joinsPerPurchase = 2

// QueueLoad is the waiting room's load: its keys share the sale-wide hash
// slot, so one shard takes every join whatever the primaries.
type QueueLoad struct {
	// Slot is the hash tag of the waiting room's keys.
	Slot string `json:"slot"`
	// Joins per second at the peak: every expected buyer arrives and joins,
	// taken as the demand (no sale-wide limit applies to joins).
	Joins int64 `json:"joins"`
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
	// Joins per second of the waiting room, when its slot is on this shard;
	// they weigh on it as Joins/joinsPerPurchase purchases.
	Joins int64 `json:"joins,omitempty"`
	// Buckets on it, as "sku#bucket".
	Buckets []string `json:"buckets"`
}

// demand is the sale-wide peak the sale expects and each SKU's share of
// it: the listed SKUs' own, the rest spread evenly over the others. When
// the listed SKUs add up to more than the sale-wide figure, their sum is
// the peak (over says so).
func demand(sale *v1alpha1.FlashSale) (peak int64, peaks map[string]int64, over bool) {
	peak = sale.Spec.RateLimit.RequestsPerSecond
	listed := map[string]int64{}
	var sum int64
	if e := sale.Spec.Expected; e != nil {
		if e.PurchasesPerSecond > 0 {
			peak = e.PurchasesPerSecond
		}
		for _, s := range e.SKUs {
			listed[s.ID] = s.PurchasesPerSecond
			sum += s.PurchasesPerSecond
		}
	}
	if sum > peak {
		peak, over = sum, true
	}
	rest, unlisted := peak-sum, 0
	for _, sku := range sale.Spec.SKUs {
		if _, ok := listed[sku.ID]; !ok {
			unlisted++
		}
	}
	peaks = map[string]int64{}
	for _, sku := range sale.Spec.SKUs {
		if v, ok := listed[sku.ID]; ok {
			peaks[sku.ID] = v
		} else {
			peaks[sku.ID] = rest / int64(unlisted)
		}
	}
	return peak, peaks, over
}

// redisPeak is the purchases per second that reach Redis out of demand:
// the seckill pods' sale-wide limiter refuses the rest with a 429, and a
// waiting room lets buyers through at its admission rate.
func redisPeak(sale *v1alpha1.FlashSale, demand int64) (int64, string) {
	peak, by := demand, ""
	if rl := sale.Spec.RateLimit.RequestsPerSecond; rl > 0 && rl < peak {
		peak, by = rl, "spec.rateLimit.requestsPerSecond"
	}
	if q := sale.Spec.Queue; q != nil && q.AdmitPerSecond > 0 && int64(q.AdmitPerSecond) < peak {
		peak, by = int64(q.AdmitPerSecond), "spec.queue.admitPerSecond"
	}
	return peak, by
}

// planShards spreads each SKU's peak over its buckets and the buckets over
// the primaries. Hash slots are assumed spread evenly: the buckets go round
// the primaries, busiest SKU first, so those of one SKU land on distinct
// primaries while there are enough; the waiting room's slot goes on the
// least busy.
func planShards(sale *v1alpha1.FlashSale, primaries int, budget int64) Shards {
	d, peaks, _ := demand(sale)
	sh := Shards{Demand: d, Load: make([]ShardLoad, primaries)}
	sh.Peak, sh.CappedBy = redisPeak(sale, d)
	for i := range sh.Load {
		sh.Load[i].Shard = i + 1
	}
	for _, sku := range sale.Spec.SKUs {
		n, peak := sku.BucketCount(), share(peaks[sku.ID], sh.Peak, d)
		sh.SKUs = append(sh.SKUs, SKULoad{ID: sku.ID, Peak: peak, Buckets: n,
			PerShard:  ceilDiv(peak, int64(min(n, primaries))),
			Suggested: int(max(min(ceilDiv(peak, max(budget, 1)), int64(primaries), 32), 1))})
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
	if sale.Spec.Queue != nil {
		sh.Queue = &QueueLoad{Slot: "{" + sale.SaleKey() + "}", Joins: d}
		least := &sh.Load[0]
		for i := range sh.Load {
			if sh.Load[i].Load < least.Load {
				least = &sh.Load[i]
			}
		}
		least.Joins = d
	}
	sort.SliceStable(sh.Load, func(i, j int) bool {
		return sh.Load[i].weight() > sh.Load[j].weight()
	})
	return sh
}

// weight is the shard's load in purchases per second, joins included.
func (l ShardLoad) weight() int64 { return l.Load + ceilDiv(l.Joins, joinsPerPurchase) }

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
		if l.weight() <= budget {
			continue
		}
		what := fmt.Sprintf("%s purchases/s on one shard (%s)", group(l.Load), joinList(l.Buckets))
		if l.Joins > 0 {
			what = fmt.Sprintf("%s purchases/s and %s waiting-room joins/s (slot %s; a join costs about half a purchase) on one shard (%s)",
				group(l.Load), group(l.Joins), sh.Queue.Slot, orDash(joinList(l.Buckets)))
		}
		out = append(out, fmt.Sprintf("%s, %s: %s, budget %s",
			Plural(primaries, "primary", "primaries"), bucketsOf(l.Buckets), what, group(budget)))
	}
	if q := sh.Queue; q != nil && ceilDiv(q.Joins, joinsPerPurchase) > budget {
		out = append(out, fmt.Sprintf("waiting room: %s joins/s at the peak (the expected purchases/s) on its one hash slot %s, as much as %s purchases/s, budget %s: more primaries do not spread it; expect slow joins, and slower purchases on that shard",
			group(q.Joins), q.Slot, group(ceilDiv(q.Joins, joinsPerPurchase)), group(budget)))
	}
	for _, s := range sh.SKUs {
		if s.PerShard > budget && s.Buckets < s.Suggested {
			out = append(out, fmt.Sprintf("SKU %s: %s purchases/s in %s: split it (spec.skus[].buckets: %d, one per primary)",
				s.ID, group(s.Peak), Plural(s.Buckets, "bucket", "buckets"), s.Suggested))
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
	// OrdersPerSecond is the orders per second arriving from Redis at the
	// peak (the purchases that reach Redis), at most Orders.
	OrdersPerSecond int64 `json:"ordersPerSecond"`
	// Orders is what MySQL stores in all: the stock, at most the expected
	// buyers.
	Orders int64 `json:"orders"`
	// Rate is the pipeline's measured orders per second.
	Rate int64 `json:"rate"`
	// StoreAll is how long storing all Orders takes at Rate.
	StoreAll time.Duration `json:"storeAll"`
	// LastWait is how long the last order waits for MySQL: the backlog left
	// when orders arrive faster than Rate (0 when they do not).
	LastWait time.Duration `json:"lastWait"`
}

func planPipeline(sale *v1alpha1.FlashSale, arrival, rate int64) Pipeline {
	orders := sale.TotalStock()
	if e := sale.Spec.Expected; e != nil && e.Buyers > 0 {
		orders = min(orders, e.Buyers)
	}
	p := Pipeline{Workers: sale.Spec.Worker.Replicas, OrdersPerSecond: min(arrival, orders), Orders: orders, Rate: rate}
	if k := sale.Spec.Kafka; k != nil {
		p.Kafka, p.Partitions = true, k.Partitions
	}
	if rate <= 0 {
		return p
	}
	p.StoreAll = seconds(float64(orders) / float64(rate))
	// The orders arrive over orders/arrival seconds and are stored over
	// orders/rate: the last waits the difference. No known arrival rate:
	// they all arrive at once.
	arriveAll := 0.0
	if arrival > 0 {
		arriveAll = float64(orders) / float64(arrival)
	}
	p.LastWait = seconds(max(float64(orders)/float64(rate)-arriveAll, 0))
	return p
}

// seconds is s seconds, to a tenth.
func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(100 * time.Millisecond)
}

func (p Pipeline) warnings(sale *v1alpha1.FlashSale) []string {
	var out []string
	if p.Kafka && p.Workers > p.Partitions {
		out = append(out, fmt.Sprintf("%d workers, %d Kafka partitions: %d workers would get no partition; raise spec.kafka.partitions or lower spec.worker.replicas",
			p.Workers, p.Partitions, p.Workers-p.Partitions))
	}
	limit := min(sale.PaymentTimeout(), time.Minute)
	if p.Rate > 0 && p.LastWait > limit {
		out = append(out, fmt.Sprintf("the last order waits %s for MySQL: %s orders arrive at %s/s, the pipeline stores %s orders/s; more than %s, buyers wait that long for their order to be payable",
			shortDuration(p.LastWait), group(p.Orders), group(p.OrdersPerSecond), group(p.Rate), shortDuration(limit)))
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
