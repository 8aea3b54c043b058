package keys_test

import (
	"context"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestBucketsOnDistinctPrimaries: on a real 3-master cluster (made by
// redis-cli --cluster create), keys.Slot agrees with CLUSTER KEYSLOT, and
// the 3 buckets of every SKU land on 3 different primaries (CLUSTER SHARDS).
// (That teardown's patterns reach every bucket is tested in teardown.)
func TestBucketsOnDistinctPrimaries(t *testing.T) {
	rdb := testutil.RedisCluster(t).Client(t)
	ctx := context.Background()
	shards, err := rdb.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	primary := func(slot int64) string {
		for _, sh := range shards {
			for _, r := range sh.Slots {
				for _, n := range sh.Nodes {
					if r.Start <= slot && slot <= r.End && n.Role == "master" {
						return n.ID
					}
				}
			}
		}
		t.Fatalf("no primary serves slot %d", slot)
		return ""
	}
	for _, sku := range skus {
		seen := map[string]int{}
		for _, k := range keys.Buckets("shop/sale", sku, 3) {
			got, err := rdb.ClusterKeySlot(ctx, k.Stock).Result()
			if err != nil || int(got) != keys.Slot(k.Stock) {
				t.Fatalf("%s: CLUSTER KEYSLOT %d (%v), keys.Slot %d", k.Stock, got, err, keys.Slot(k.Stock))
			}
			seen[primary(got)]++
		}
		if len(seen) != 3 {
			t.Errorf("SKU %s: 3 buckets on %d primaries %v", sku, len(seen), seen)
		}
	}
}
