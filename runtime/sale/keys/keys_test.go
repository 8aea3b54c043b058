package keys_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestSlot pins keys.Slot to the examples of the Redis documentation and
// to what a Redis Cluster answered, so the bucket tags and the tests below
// check what one does.
func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789": 0x31c3, "somekey": 11058, "foo{hash_tag}": 2515, "bar{hash_tag}": 2515, "foo{}{bar}": 8363,
		// CLUSTER KEYSLOT of a cluster-enabled redis-server 7.
		"fs:{shop/sale/1001}:stock": 5413,
	} {
		if got := keys.Slot(key); got != want {
			t.Errorf("keys.Slot(%q) = %d, want %d", key, got, want)
		}
	}
}

// sales are sale keys that look alike: a prefix of another, a '-' where
// another has '/', the longest namespace and name the API accepts.
var sales = []string{
	"shop/sale", "shop/sale2", "shop/sale-2", "shop-sale/x", "shop/sale-x",
	"sho/psale", "p/shop", strings.Repeat("n", 63) + "/" + strings.Repeat("s", 50),
}

var skus = []string{"1001", "1001-a", "a.b", "A_b", "1"}

// TestSKUKeysShareOneSlot: the purchase script touches every key of a SKU
// in one call, so in a Redis Cluster they must all live on one shard.
func TestSKUKeysShareOneSlot(t *testing.T) {
	for _, saleKey := range sales {
		for _, sku := range skus {
			k := keys.ForSKU(saleKey, sku)
			all := k.All()
			want := keys.Slot("{" + saleKey + "/" + sku + "}")
			for _, key := range all {
				if got := keys.Slot(key); got != want {
					t.Errorf("sale %s SKU %s: key %s is in slot %d, its SKU's other keys in %d", saleKey, sku, key, got, want)
				}
			}
			if len(slices.Compact(slices.Sorted(slices.Values(all)))) != len(all) {
				t.Errorf("sale %s SKU %s: two keys share a name: %v", saleKey, sku, all)
			}
		}
	}
}

// TestSaleWideKeys: the switches and the pod registry share their own slot,
// tagged by the sale alone, not the slot of any of its SKUs.
func TestSaleWideKeys(t *testing.T) {
	for _, saleKey := range sales {
		s := keys.ForSale(saleKey)
		if s.Control == s.Pods || keys.Slot(s.Control) != keys.Slot(s.Pods) || keys.Slot(s.Control) != keys.Slot("{"+saleKey+"}") {
			t.Errorf("sale %s: control %s and pods %s are not two keys of the sale's own slot", saleKey, s.Control, s.Pods)
		}
		for _, sku := range skus {
			if tag := hashTag(keys.ForSKU(saleKey, sku).Stock); tag == hashTag(s.Control) {
				t.Errorf("sale %s: SKU %s shares the sale-wide hash tag %s", saleKey, sku, tag)
			}
		}
	}
}

func hashTag(key string) string {
	_, rest, _ := strings.Cut(key, "{")
	tag, _, _ := strings.Cut(rest, "}")
	return tag
}

// TestSalesNeverCollide: no key of one sale is a key of another.
func TestSalesNeverCollide(t *testing.T) {
	owner := map[string]string{}
	for _, saleKey := range sales {
		var all []string
		for _, sku := range skus {
			k := keys.ForSKU(saleKey, sku)
			all = append(all, k.All()...)
		}
		s := keys.ForSale(saleKey)
		all = append(all, s.Control, s.Pods)
		for _, key := range all {
			if o, taken := owner[key]; taken && o != saleKey {
				t.Errorf("key %s belongs to sale %s and to sale %s", key, o, saleKey)
			}
			owner[key] = saleKey
		}
	}
}

// TestPatterns: the teardown patterns, as Redis matches them (SCAN MATCH on
// a real server), find every key of the sale and no key of a look-alike sale.
func TestPatterns(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	ns := "ns-" + testutil.UniqueName(t)
	lookAlike := []string{ns + "/sale", ns + "/sale2", ns + "/sale-2", ns + "-sale/x", ns + "/s"}
	written := map[string]string{} // key → sale
	for _, saleKey := range lookAlike {
		for _, p := range keys.Patterns(saleKey) {
			testutil.CleanupKeys(t, rdb, p)
		}
		s := keys.ForSale(saleKey)
		all := []string{s.Control, s.Pods}
		for _, sku := range skus {
			k := keys.ForSKU(saleKey, sku)
			all = append(all, k.All()...)
		}
		for _, key := range all {
			if err := rdb.Set(ctx, key, "1", 0).Err(); err != nil {
				t.Fatal(err)
			}
			written[key] = saleKey
		}
	}
	for _, saleKey := range lookAlike {
		found := map[string]bool{}
		for _, p := range keys.Patterns(saleKey) {
			iter := rdb.Scan(ctx, 0, p, 1000).Iterator()
			for iter.Next(ctx) {
				found[iter.Val()] = true
			}
			if err := iter.Err(); err != nil {
				t.Fatal(err)
			}
		}
		for key, owner := range written {
			if found[key] != (owner == saleKey) {
				t.Errorf("patterns of sale %s: matched %t for key %s of sale %s", saleKey, found[key], key, owner)
			}
		}
		for key := range found {
			if _, ours := written[key]; !ours {
				t.Errorf("patterns of sale %s match key %s of another test", saleKey, key)
			}
		}
	}
}

// TestTopics: Kafka names are legal ([a-zA-Z0-9._-], at most 249 bytes) for
// the longest sale, follow the documented scheme, and differ between sales.
func TestTopics(t *testing.T) {
	if got := keys.Topic("shop/singles-day"); got != "flashsale.shop.singles-day.orders" {
		t.Errorf("Topic = %s", got)
	}
	if got := keys.DeadLetterTopic("shop/singles-day"); got != "flashsale.shop.singles-day.orders.dlq" {
		t.Errorf("DeadLetterTopic = %s", got)
	}
	if got := keys.ConsumerGroup("shop/singles-day"); got != "flashsale.shop.singles-day.workers" {
		t.Errorf("ConsumerGroup = %s", got)
	}
	legal := regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	seen := map[string]string{}
	for _, saleKey := range sales {
		names := []string{keys.Topic(saleKey), keys.DeadLetterTopic(saleKey), keys.ConsumerGroup(saleKey)}
		for _, n := range names {
			if !legal.MatchString(n) {
				t.Errorf("sale %s: %q is not a legal Kafka name", saleKey, n)
			}
			if o, taken := seen[n]; taken {
				t.Errorf("%s is the name of sale %s and of sale %s", n, o, saleKey)
			}
			seen[n] = saleKey
		}
	}
}
