// Package keys is the one place that names the Redis keys of a sale.
//
// Every key carries the sale's "namespace/name" (its saleKey, as
// v1alpha1.FlashSale.SaleKey returns it), so two sales never collide.
// Every key of one SKU shares one Redis Cluster hash tag ({namespace/name/sku}),
// so the purchase script, which touches all of them, runs on one shard; the
// sale-wide keys (switches, pod registry) use the tag {namespace/name}.
package keys

import "strings"

// SKU holds the keys of one SKU of one sale.
type SKU struct {
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
	// tokenPrefix + nonce is a short-lived key remembering which order a token
	// produced, so a retried request answers with the same order.
	tokenPrefix string
}

// Token is the key that remembers the order made with the token nonce.
func (k SKU) Token(nonce string) string { return k.tokenPrefix + nonce }

// TokenPrefix is the prefix of Token keys (for benchmarks that template it).
func (k SKU) TokenPrefix() string { return k.tokenPrefix }

// All lists the SKU's keys except the short-lived token keys.
func (k SKU) All() []string {
	return []string{k.Stock, k.Initial, k.Debt, k.Holders, k.Seq, k.Stream, k.DeadLetters, k.Expiry, k.Orders}
}

// ForSKU returns the keys of SKU sku of sale saleKey ("namespace/name").
func ForSKU(saleKey, sku string) SKU {
	p := "fs:{" + saleKey + "/" + sku + "}:"
	return SKU{
		Stock:       p + "stock",
		Initial:     p + "initial",
		Debt:        p + "debt",
		Holders:     p + "holders",
		Seq:         p + "seq",
		Stream:      p + "orders:stream",
		DeadLetters: p + "orders:stream:dlq",
		Expiry:      p + "expiry",
		Orders:      p + "orders",
		tokenPrefix: p + "tok:",
	}
}

// Sale holds the sale-wide keys.
type Sale struct {
	// Control is the hash of switches every seckill pod polls (package
	// switches owns its fields).
	Control string
	// Pods is a sorted set podID -> last heartbeat (unix ms): the live pods
	// among which rate limits are shared.
	Pods string
}

// ForSale returns the sale-wide keys of sale saleKey ("namespace/name").
func ForSale(saleKey string) Sale {
	p := "fs:{" + saleKey + "}:"
	return Sale{Control: p + "control", Pods: p + "pods"}
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
