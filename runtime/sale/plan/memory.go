package plan

import (
	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Per-record costs in Redis memory (used_memory, so the allocator's overhead
// included), measured on redis-server 7.0.15 by TestPlanMemoryMatchesRedis
// (`FLASHSALE_PLAN_CALIBRATE=1 go test ./runtime/sale/plan/ -run Memory -v`
// prints them), 2026-11-30: on a private server where another sale was
// warmed first (the scripts and the keyspace's own tables are there once
// per Redis, not per sale), a queued sale of 3 buckets warmed by warm.Warm,
// 12,000 buyers (ids like "u100000042") joining the queue through
// queue.Join, admitted through queue.Admit, then each buying one unit with
// a fresh 22-character token nonce through purchase.Script; each step's
// used_memory delta divided by the records it made: 2,296 B for the 3
// buckets, 208 B per queued buyer, 120 B per admission, 600 B per order.
const (
	// bytesPerOrder is one admitted purchase of a new buyer: the holders and
	// seq hash fields, the order stream entry, the expiry sorted-set member,
	// the order record and the token record.
	bytesPerOrder = 600
	// bytesPerQueued is one buyer in the waiting room: the queue sorted-set
	// member and the joined hash field.
	bytesPerQueued = 210
	// bytesPerAdmission is one outstanding admission (a sorted-set member).
	bytesPerAdmission = 120
	// bytesPerBucket is a warmed bucket with no order yet: its counters and
	// its order stream with the relay's consumer group.
	bytesPerBucket = 750
)

// Bucket is one bucket of one SKU in Redis: its keys and their memory at
// the expected buyers.
type Bucket struct {
	SKU    string `json:"sku"`
	Bucket int    `json:"bucket"`
	// Prefix is what every key of the bucket starts with (its hash tag).
	Prefix string `json:"prefix"`
	// Keys are the keys warm-up and the purchases create (the others of
	// the bucket appear only on transfers between buckets, lowerings or
	// dead letters).
	Keys []string `json:"keys"`
	// Orders are the purchases expected in this bucket.
	Orders int64 `json:"orders"`
	// Bytes is its estimated memory.
	Bytes int64 `json:"bytes"`
}

// Memory is the Redis section of a plan.
type Memory struct {
	Buckets []Bucket `json:"buckets"`
	// SaleKeys are the sale-wide keys (switches, pods, the waiting room).
	SaleKeys []string `json:"saleKeys"`
	// Queued and Admissions are the waiting room's records at the peak.
	Queued     int64 `json:"queued,omitempty"`
	Admissions int64 `json:"admissions,omitempty"`
	// Orders is the purchases expected: the expected buyers (one unit
	// each), at most the stock; the whole stock without an expected count.
	Orders int64 `json:"orders"`
	// Bytes is the sale's estimated memory in Redis, all keys.
	Bytes int64 `json:"bytes"`
}

// estimateMemory names the keys of sale and estimates their memory when
// the expected buyers have bought (buyers 0: the whole stock sold).
func estimateMemory(sale *v1alpha1.FlashSale) Memory {
	total := sale.TotalStock()
	orders := total
	var buyers int64
	if e := sale.Spec.Expected; e != nil && e.Buyers > 0 {
		buyers = e.Buyers
		orders = min(orders, buyers)
	}
	m := Memory{Orders: orders}
	for _, sku := range sale.Spec.SKUs {
		n := sku.BucketCount()
		skuOrders := share(orders, sku.Stock, total)
		for b, k := range keys.Buckets(sale.SaleKey(), sku.ID, n) {
			bo := share(skuOrders, 1, int64(n))
			if b == 0 {
				bo += skuOrders % int64(n)
			}
			names := []string{k.Stock, k.Initial, k.Stream, k.Holders, k.Seq, k.Expiry, k.Orders, k.Tokens}
			if n > 1 && b == 0 {
				names = append(names, k.Declared, k.Count)
			}
			bk := Bucket{SKU: sku.ID, Bucket: b, Prefix: prefixOf(k.Stock), Keys: names, Orders: bo,
				Bytes: bytesPerBucket + bo*bytesPerOrder}
			m.Buckets = append(m.Buckets, bk)
			m.Bytes += bk.Bytes
		}
	}
	sk := keys.ForSale(sale.SaleKey())
	m.SaleKeys = []string{sk.Control, sk.Pods}
	if sale.Spec.Queue != nil {
		m.SaleKeys = append(m.SaleKeys, sk.Queue, sk.QueueMeta, sk.Admissions, sk.Joined)
		// Everyone who comes joins; outstanding admissions stay under the
		// stock times the overbook.
		m.Queued = max(buyers, orders)
		m.Admissions = min(m.Queued, int64(float64(total)*max(sale.Overbook(), 1)))
		m.Bytes += m.Queued*bytesPerQueued + m.Admissions*bytesPerAdmission
	}
	return m
}

// share is part/whole of n, rounded down (0 when whole is 0).
func share(n, part, whole int64) int64 {
	if whole <= 0 {
		return 0
	}
	return n * part / whole
}

// prefixOf is key up to and including its hash tag's "}:".
func prefixOf(key string) string {
	for i := len(key) - 1; i > 0; i-- {
		if key[i] == '}' {
			return key[:i+1] + ":"
		}
	}
	return key
}
