// Package keys is the one place that names the Redis keys of a sale.
//
// Every key carries the sale's "namespace/name" (its saleKey, as
// v1alpha1.FlashSale.SaleKey returns it), so two sales never collide.
// Every key of one SKU shares one Redis Cluster hash tag ({namespace/name/sku}),
// so the purchase script, which touches all of them, runs on one shard; the
// sale-wide keys (switches, pod registry) use the tag {namespace/name}.
//
// A SKU split into buckets (spec.skus[].buckets > 1) has one such set of keys
// per bucket, each with its own hash tag ({namespace/name/sku#b} for bucket
// b ≥ 1; bucket 0 keeps the SKU's tag), so a Redis Cluster spreads a hot SKU
// over several shards. A bucket is a SKU in small: its own stock, holders,
// stream, expiry set, order records and token records. A buyer always buys from their home
// bucket (Home), so their per-user limit is counted in one place.
package keys

import (
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
)

// SKU holds the keys of one bucket of one SKU of one sale (bucket 0 of a SKU
// that is not split).
type SKU struct {
	// Sale, ID and Bucket say whose keys these are.
	Sale   string
	ID     string
	Bucket int
	// Stock is a string counter: units left.
	Stock string
	// Initial is the stock the SKU was warmed with plus every raise: the left
	// side of the conservation law, kept next to the counter it explains.
	Initial string
	// Debt is a string counter: units a lowering of the stock could not take
	// back because buyers held them. A returned unit pays it off (and leaves
	// the sale: initial goes down with it) before any goes back on sale; the
	// declared stock is initial − debt. Absent means zero.
	Debt string
	// Holders is a hash user -> units held now (the per-user limit counts these).
	Holders string
	// Seq is a hash user -> purchases ever made; it only grows, so the n-th
	// purchase number stays unique even after a rollback frees a slot.
	Seq string
	// Stream is the Redis Stream of admitted orders, read by the relay.
	Stream string
	// DeadLetters is a Redis Stream of the entries of Stream that can never
	// be stored (a corrupt entry, a row MySQL refuses), each with its reason.
	DeadLetters string
	// Expiry is a sorted set orderNo -> payment deadline (unix ms).
	Expiry string
	// Orders is a hash orderNo -> order record, for result polling.
	Orders string
	// Outbox is a hash transferID -> the units this bucket gave to another
	// bucket of its SKU (package buckets owns its format). Until the receiver
	// has taken them in, the units are in neither bucket's stock nor initial:
	// they are in flight. A closed transfer's record stays, emptied, so that
	// a give retried under the same id gives nothing.
	Outbox string
	// Inbox is a hash transferID -> units: the transfers this bucket has
	// taken in, so that completing a transfer twice adds its units once.
	Inbox string
	// Declared is the SKU's declared stock as the last warm-up or stock
	// change applied it. Only bucket 0 of a SKU split into buckets has it:
	// a split SKU's initial is spread over its buckets and moves between
	// them, so no single bucket's initial − debt is the SKU's stock.
	Declared string
	// Count is the number of buckets the SKU was warmed with (bucket 0 of a
	// split SKU only, written with Declared): a bucket's hash tag depends on
	// the count, so warming the SKU again with another count would create a
	// second set of buckets with fresh stock. Warm refuses that.
	Count string
	// Hold exists while a lowering of a split SKU's stock is being applied
	// or still owed (package buckets owns it): units then flow only toward
	// bucket 0, which owes the whole debt. A bucket with a Hold gives units
	// to no bucket but bucket 0 (bucket 0 gives none), and a unit returned
	// to a bucket ≥ 1 is forwarded to bucket 0 instead of going on sale.
	Hold string
	// Tokens is a hash token nonce -> the order number that token made, so
	// that a retried request answers with the same order and never makes a
	// second one (package purchase owns it). A field has no expiry: it lives
	// until teardown, longer than any pod may believe its token valid. One
	// field per admitted purchase of the bucket.
	Tokens string
}

// All lists the bucket's keys.
func (k SKU) All() []string {
	return []string{k.Stock, k.Initial, k.Debt, k.Holders, k.Seq, k.Stream, k.DeadLetters, k.Expiry, k.Orders,
		k.Outbox, k.Inbox, k.Declared, k.Count, k.Hold, k.Tokens}
}

// ForSKU returns the keys of SKU sku of sale saleKey ("namespace/name"): of
// its bucket 0, which is the whole SKU when it is not split.
func ForSKU(saleKey, sku string) SKU { return ForBucket(saleKey, sku, 0, 1) }

// ForBucket returns the keys of bucket b of SKU sku of sale saleKey, one of
// n buckets (bucket 0 is the same whatever n). A SKU id never contains '#'
// (the API allows [A-Za-z0-9_.-]), so no bucket's hash tag is another SKU's.
func ForBucket(saleKey, sku string, b, n int) SKU {
	p := "fs:{" + bucketTag(saleKey+"/"+sku, b, n) + "}:"
	return SKU{
		Sale:        saleKey,
		ID:          sku,
		Bucket:      b,
		Stock:       p + "stock",
		Initial:     p + "initial",
		Debt:        p + "debt",
		Holders:     p + "holders",
		Seq:         p + "seq",
		Stream:      p + "orders:stream",
		DeadLetters: p + "orders:stream:dlq",
		Expiry:      p + "expiry",
		Orders:      p + "orders",
		Outbox:      p + "xfer:out",
		Inbox:       p + "xfer:in",
		Declared:    p + "declared",
		Count:       p + "buckets",
		Hold:        p + "hold",
		Tokens:      p + "tokens",
	}
}

// Buckets returns the keys of every bucket of a SKU split into n buckets
// (n < 1 counts as 1), bucket 0 first.
func Buckets(saleKey, sku string, n int) []SKU {
	n = max(n, 1)
	out := make([]SKU, n)
	for b := range out {
		out[b] = ForBucket(saleKey, sku, b, n)
	}
	return out
}

// Home is the bucket user buys from, of a SKU split into n buckets: a hash of
// the user, so every pod sends a buyer to the same bucket and their limit and
// their retried tokens are checked in one place.
func Home(user string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(user))
	return int(h.Sum32() % uint32(n))
}

// bucketMark separates an order number from the bucket that holds its
// records. Order numbers of bucket 0 (and of SKUs not split) carry no mark.
// '~' is in neither a SKU id nor the hex digest, so the mark is unambiguous,
// and it is safe in a URL path.
const bucketMark = '~'

// OrderSuffix is what an order number of bucket b ends with.
func OrderSuffix(b int) string {
	if b <= 0 {
		return ""
	}
	return string(bucketMark) + strconv.Itoa(b)
}

// BucketOf returns the bucket whose keys hold the records of orderNo, and
// the order number without its bucket mark.
func BucketOf(orderNo string) (bucket int, base string) {
	i := strings.LastIndexByte(orderNo, bucketMark)
	if i < 0 {
		return 0, orderNo
	}
	b, err := strconv.Atoi(orderNo[i+1:])
	if err != nil || b <= 0 || strconv.Itoa(b) != orderNo[i+1:] {
		return 0, orderNo
	}
	return b, orderNo[:i]
}

// ForOrder returns the keys of the bucket that holds order orderNo of SKU
// sku, split into n buckets.
func ForOrder(saleKey, sku, orderNo string, n int) SKU {
	b, _ := BucketOf(orderNo)
	return ForBucket(saleKey, sku, b, n)
}

// slots is the number of hash slots of a Redis Cluster.
const slots = 16384

// tags caches bucketTag: finding a tag takes some 16,000 CRC16s.
var tags sync.Map // tagKey -> string

type tagKey struct {
	base string
	b, n int
}

// bucketTag is the hash tag of bucket b of n of the SKU whose own tag is
// base. Bucket 0 keeps base. Bucket b is "base#b.<salt>", with the least
// salt that puts it in slot slot(base) + b·16384/n (mod 16384): the buckets
// sit evenly around the slot ring, so a cluster whose primaries own equal
// contiguous slot ranges (what redis-cli --cluster create makes) holds n of
// them on n different primaries when it has n primaries or more. The
// operator still checks where they landed (a resharded cluster may differ).
func bucketTag(base string, b, n int) string {
	if b <= 0 || n <= 1 {
		return base
	}
	k := tagKey{base, b, n}
	if t, ok := tags.Load(k); ok {
		return t.(string)
	}
	want := (Slot(base) + b*slots/n) % slots
	prefix := base + "#" + strconv.Itoa(b) + "."
	var tag string
	for salt := 0; ; salt++ {
		tag = prefix + strconv.Itoa(salt)
		if Slot(tag) == want {
			break
		}
	}
	tags.Store(k, tag)
	return tag
}

// Slot is the Redis Cluster hash slot of key: CRC16-XMODEM of its hash tag
// (or of the whole key without one) modulo 16384, as the cluster
// specification defines it.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % slots
}

// Sale holds the sale-wide keys.
type Sale struct {
	// Control is the hash of switches every seckill pod polls (package
	// switches owns its fields).
	Control string
	// Pods is a sorted set podID -> last heartbeat (unix ms): the live pods
	// among which rate limits are shared.
	Pods string
	// The waiting room of a sale with spec.queue (package queue owns them).
	// Queue is a sorted set user -> place score: a random score for who
	// joined before the start, 2^52 + arrival number after it, so ranks are
	// places.
	Queue string
	// QueueMeta is the queue's hash: how many are admitted (the first that
	// many ranks), the admission rate's token bucket, the arrival counter.
	QueueMeta string
	// Admissions is a sorted set user -> admission time (unix ms): the
	// outstanding admissions, counted against remaining stock × overbook.
	Admissions string
	// Joined is a hash user -> join time (unix ms), for the time from join
	// to admission.
	Joined string
}

// ForSale returns the sale-wide keys of sale saleKey ("namespace/name").
func ForSale(saleKey string) Sale {
	p := "fs:{" + saleKey + "}:"
	return Sale{Control: p + "control", Pods: p + "pods",
		Queue: p + "queue", QueueMeta: p + "queue:meta", Admissions: p + "queue:admissions", Joined: p + "queue:joined"}
}

// Patterns match every key of the sale and no key of another sale (for
// teardown and tests): the sale-wide keys, then the keys of each SKU
// (teardown relies on this order).
func Patterns(saleKey string) []string {
	return []string{"fs:{" + saleKey + "}:*", "fs:{" + saleKey + "/*"}
}

// RelayGroup is the consumer group of the order streams, created at warm-up so
// that the relay sees every order admitted from the first second.
const RelayGroup = "relay"

// Topic is the Kafka topic of a sale's orders. Kafka topic names allow
// [a-zA-Z0-9._-], so the '/' of "namespace/name" becomes '.'; namespaces and
// names are DNS labels, so the mapping cannot collide.
func Topic(saleKey string) string {
	return "flashsale." + strings.Replace(saleKey, "/", ".", 1) + ".orders"
}

// DeadLetterTopic receives the order messages that can never be stored.
func DeadLetterTopic(saleKey string) string { return Topic(saleKey) + ".dlq" }

// ConsumerGroup is the Kafka consumer group of a sale's workers.
func ConsumerGroup(saleKey string) string {
	return "flashsale." + strings.Replace(saleKey, "/", ".", 1) + ".workers"
}
