// Package ratelimit enforces a flash sale's request limits in the seckill
// API: a global requestsPerSecond for the whole sale, perUserPerSecond and
// perIPPerSecond.
//
// # Fair share per pod
//
// Every seckill pod enforces its fair share of every limit locally: for N
// live seckill pods of the sale, a pod allows rate/N. The global bucket's
// burst is divided too (max(1, burst/N)); per-user and per-IP buckets keep
// the whole burst on every pod, because a buyer's token request and purchase
// arrive within milliseconds and may land on the same pod: dividing that
// burst would refuse an honest buyer. Their sustained rate is still exactly
// the configured one across the pods; only a burst can reach N x burst. N is learned from a heartbeat registry in Redis
// ([Registry]) and applied with [Limiter.SetShare].
//
// Why not one token bucket in Redis: it would add a Redis round trip and a
// write to one hot key per request exactly when Redis is the bottleneck of
// the sale, and a single key lives on one Redis Cluster shard. The fair
// share is exact when the load balancer spreads requests evenly over the
// pods (round robin, least-request), and it adapts within one heartbeat
// (1 s) when pods come and go. When the spread is uneven the sale admits a
// little less than the configured rate, never more than rate x (largest
// share of traffic x N).
//
// # Buckets
//
// Buckets are GCRA (generic cell rate algorithm) token buckets: the whole
// state of a bucket is one "theoretical arrival time" (TAT) in nanoseconds,
// while rate and burst live in the Limiter, shared by all buckets of a
// dimension. Consequences:
//
//   - [Limiter.SetShare] and [Limiter.SetRates] apply to every existing
//     bucket at once, with no per-bucket work.
//   - The global bucket is one atomic int64 updated with compare-and-swap:
//     no mutex on the hot path (see BenchmarkGlobal* for the comparison with
//     golang.org/x/time/rate.Limiter).
//   - Per-user and per-IP buckets live in a sharded map (64 shards, one mutex
//     each) from a seeded 64-bit hash of the key to the TAT: 16 bytes per
//     entry, whatever the length of the key. Two keys colliding on 64 bits
//     (probability ~n²/2⁶⁵, about 3e-8 for a million keys) would share a
//     bucket; the seed is random per process so collisions cannot be aimed.
//
// # Eviction and memory bound
//
// A bucket whose TAT is in the past has refilled completely and is
// indistinguishable from a fresh one, so dropping it loses nothing. When a
// new key is inserted into a shard, the shard is swept of such entries if it
// was not swept in the last second (lazy eviction, no goroutine). Each
// dimension holds at most MaxKeys entries (default 1,000,000, spread evenly
// over the shards). When a shard is full even after a sweep (a botnet of
// random IPs, all of them still in debt), an arbitrary entry of that shard is
// evicted to make room: that key starts again from a full bucket. Memory
// stays bounded, new clients are still tracked, and the global limit keeps
// holding whatever happens to the per-key buckets.
//
// # Order of checks and charging
//
// [Limiter.Allow] checks the user bucket, then the IP bucket, then the
// global bucket, and stops at the first refusal. A token taken from an
// earlier bucket is given back when a later one refuses, so a refused
// request never charges any bucket (in particular the global bucket is never
// charged for a request the user or IP limit refused, since it comes last).
//
// # Per-IP keys
//
// [Limiter.AllowAddr] counts an IPv4 client by its address (an IPv4-mapped
// IPv6 address counts as the IPv4 one) and an IPv6 client by its /64
// ([IPKey]): a host picks any address of its /64 at will, so counting /128s
// would give one client as many buckets as it cares to use.
//
// Time comes from an injected [k8s.io/utils/clock.PassiveClock], so tests
// are deterministic with the fake clock of k8s.io/utils/clock/testing.
package ratelimit
