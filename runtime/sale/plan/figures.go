package plan

import "time"

// PerShardBudget is the purchases per second one Redis shard admits for one
// SKU bucket, with room to spare: suggestedBuckets is
// ceil(spec.rateLimit.requestsPerSecond / PerShardBudget), capped by the
// primaries. It is the "per-shard budget" of the README's Sizing section:
// 21–46 µs of Redis CPU per admitted purchase were measured there (one
// core: some 20,000–45,000 purchases/s of one bucket), and half a core is the
// budget, the other half left for the relay, rollbacks, replication and
// spikes (docs/operator.md, "Buckets").
const PerShardBudget = 10000

// PipelineRate is the orders per second the order pipeline stores in MySQL,
// measured with `go run ./hack/pipelinebench -n 20000 -single 5000` on the
// project's 2-core development machine (Redis, MariaDB and the bench on the
// same two cores, under other load), 2026-11-30: Redis Stream → kfake Kafka
// → MySQL 10,624 orders/s, Redis Stream → MySQL (no Kafka) 16,753 orders/s,
// single-row INSERTs 868/s. The figure is the slower, Kafka path, rounded
// down: MySQL's commits were the bottleneck (mariadbd busy 0.65 core).
const PipelineRate = 10000

// PodStartup is how long a sale's pods take from creation to ready. The
// local demo's Events show 3 s (README, "kubectl describe": Warming at
// 2m7s, WorkloadsReady at 2m4s), but there the image was cached on the one
// node; a real cluster may pull the image on fresh nodes and wait for a
// cluster autoscaler, so the plan assumes a conservative 60 s.
const PodStartup = 60 * time.Second

// Figures are the budgets a plan measures the sale against.
type Figures struct {
	// ShardBudget is the purchases per second one Redis shard admits.
	ShardBudget int64 `json:"shardBudget"`
	// PipelineRate is the orders per second the pipeline stores in MySQL.
	PipelineRate int64 `json:"pipelineRate"`
	// PodStartup is how long the pods take to become ready.
	PodStartup time.Duration `json:"podStartup"`
}

// DefaultFigures are the measured figures above; `flashsale plan`'s flags
// --shard-budget, --pipeline-rate and --pod-startup override them.
func DefaultFigures() Figures {
	return Figures{ShardBudget: PerShardBudget, PipelineRate: PipelineRate, PodStartup: PodStartup}
}

// String is the line `make bench` prints next to what it measured.
func (f Figures) String() string {
	return "plan figures: per-shard budget " + group(f.ShardBudget) + " purchases/s, pipeline " +
		group(f.PipelineRate) + " orders/s, pod start-up " + shortDuration(f.PodStartup)
}
