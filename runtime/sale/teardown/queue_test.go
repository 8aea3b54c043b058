package teardown_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestDeleteKeysRemovesTheQueue: teardown removes the waiting room (places,
// meta, admissions, join times) of the sale, and nothing of the queue of a
// sale whose name it prefixes; the queue is then NOT_WARMED.
func TestDeleteKeysRemovesTheQueue(t *testing.T) {
	for name, rdb := range map[string]redis.UniversalClient{
		"standalone": testutil.Redis(t),
		"cluster":    testutil.RedisCluster(t).Client(t),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ns := testutil.UniqueName(t)
			gone, goneQ := queuedSale(t, rdb, ns, "sale")
			kept, keptQ := queuedSale(t, rdb, ns, "sale2")
			if _, err := teardown.DeleteKeys(ctx, rdb, gone.SaleKey()); err != nil {
				t.Fatal(err)
			}
			for _, k := range queueKeys(gone.SaleKey()) {
				if n, _ := rdb.Exists(ctx, k).Result(); n != 0 {
					t.Errorf("%s left after teardown", k)
				}
			}
			for _, k := range queueKeys(kept.SaleKey()) {
				if n, _ := rdb.Exists(ctx, k).Result(); n != 1 {
					t.Errorf("the other sale lost %s", k)
				}
			}
			if _, ok, err := queue.Read(ctx, rdb, gone.SaleKey()); ok || err != nil {
				t.Fatalf("queue still readable after teardown (%v, %v)", ok, err)
			}
			if _, err := goneQ.Join(ctx, "another", time.Now()); !errors.Is(err, queue.ErrNotWarmed) {
				t.Fatalf("join after teardown: %v, want ErrNotWarmed", err)
			}
			if _, err := keptQ.Join(ctx, "another", time.Now()); err != nil {
				t.Fatalf("join the other sale: %v", err)
			}
		})
	}
}

// queuedSale warms a sale with spec.queue, queues three buyers and admits
// two, so that every key of the queue exists.
func queuedSale(t *testing.T, rdb redis.UniversalClient, ns, name string) (*v1alpha1.FlashSale, *queue.Queue) {
	t.Helper()
	ctx := context.Background()
	fs := saleSpec(t, rdb, ns, name)
	fs.Spec.Queue = &v1alpha1.Queue{AdmitPerSecond: 100}
	fs.SetDefaults()
	warmSpec(t, rdb, fs)
	cfg, _ := queue.ConfigOf(fs)
	q := queue.New(rdb, fs.SaleKey(), cfg)
	for _, u := range []string{"a", "b", "c"} {
		if _, err := q.Join(ctx, u, cfg.Start.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := q.Admit(ctx, cfg.Start.Add(20*time.Millisecond), 10); err != nil || s.New != 2 {
		t.Fatalf("admit: %+v %v", s, err)
	}
	return fs, q
}

func queueKeys(sale string) []string {
	k := keys.ForSale(sale)
	return []string{k.Queue, k.QueueMeta, k.Admissions, k.Joined}
}
