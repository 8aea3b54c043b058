package teardown_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func warmSale(t *testing.T, rdb redis.UniversalClient, ns, name string) *v1alpha1.FlashSale {
	t.Helper()
	fs := saleSpec(t, rdb, ns, name)
	warmSpec(t, rdb, fs)
	return fs
}

// saleSpec is a sale of 3 SKUs whose keys are deleted at cleanup.
func saleSpec(t *testing.T, rdb redis.UniversalClient, ns, name string) *v1alpha1.FlashSale {
	t.Helper()
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(time.Now()), EndTime: metav1.NewTime(time.Now().Add(time.Hour)),
			SKUs: []v1alpha1.SKU{{ID: "a", Stock: 3, Price: "1"}, {ID: "b", Stock: 3, Price: "1"}, {ID: "c", Stock: 3, Price: "1"}},
		},
	}
	fs.SetDefaults()
	for _, p := range keys.Patterns(fs.SaleKey()) {
		testutil.CleanupKeys(t, rdb, p)
	}
	return fs
}

func warmSpec(t *testing.T, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) {
	t.Helper()
	if _, err := warm.Warm(context.Background(), rdb, fs); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteKeys removes every key of one sale, on standalone Redis and on
// every master of a cluster, and nothing of a sale whose name it prefixes.
func TestDeleteKeys(t *testing.T) {
	for name, rdb := range map[string]redis.UniversalClient{
		"standalone": testutil.Redis(t),
		"cluster":    testutil.RedisCluster(t).Client(t),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ns := testutil.UniqueName(t)
			gone := warmSale(t, rdb, ns, "sale")
			kept := warmSale(t, rdb, ns, "sale2")
			if err := switches.SetPaused(ctx, rdb, gone.SaleKey(), true); err != nil {
				t.Fatal(err)
			}
			n, err := teardown.DeleteKeys(ctx, rdb, gone.SaleKey())
			if err != nil {
				t.Fatal(err)
			}
			// Per SKU: stock, initial, stream; plus the control hash.
			if n != 3*3+1 {
				t.Errorf("deleted %d keys, want 10", n)
			}
			for _, sku := range []string{"a", "b", "c"} {
				k := keys.ForSKU(gone.SaleKey(), sku)
				if c, _ := rdb.Exists(ctx, k.All()...).Result(); c != 0 {
					t.Errorf("SKU %s: %d keys left", sku, c)
				}
				if c, _ := rdb.Exists(ctx, keys.ForSKU(kept.SaleKey(), sku).Stock).Result(); c != 1 {
					t.Errorf("the other sale's SKU %s lost its stock", sku)
				}
			}
			if n, err := teardown.DeleteKeys(ctx, rdb, gone.SaleKey()); err != nil || n != 0 {
				t.Fatalf("second teardown: %d %v", n, err)
			}
		})
	}
}

func TestDeleteTopics(t *testing.T) {
	port := testutil.FreePort(t)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin([]string{fmt.Sprintf("127.0.0.1:%d", port)}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	sale, other := "shop/sale", "shop/other"
	for _, topic := range []string{keys.Topic(sale), keys.DeadLetterTopic(sale), keys.Topic(other)} {
		if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := teardown.DeleteTopics(admin, sale); err != nil {
		t.Fatal(err)
	}
	topics, err := admin.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range topics {
		names = append(names, name)
	}
	if slices.Contains(names, keys.Topic(sale)) || slices.Contains(names, keys.DeadLetterTopic(sale)) || !slices.Contains(names, keys.Topic(other)) {
		t.Fatalf("topics after teardown: %v", names)
	}
	if err := teardown.DeleteTopics(admin, sale); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

// TestSwitchesGoLast: a seckill pod still serving while the keys go reads a
// missing switches hash as open, so the closed switch must outlive every
// stock counter. The deletions are watched through keyspace notifications
// on a private server.
func TestSwitchesGoLast(t *testing.T) {
	srv := testutil.StartRedisServer(t, "--notify-keyspace-events", "Eg")
	rdb := srv.Client(t)
	ctx := context.Background()
	fs := warmSale(t, rdb, "shop", "last")
	if err := switches.SetClosed(ctx, rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	sub := rdb.PSubscribe(ctx, "__keyevent@0__:unlink", "__keyevent@0__:del")
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := teardown.DeleteKeys(ctx, rdb, fs.SaleKey())
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	ch := sub.Channel()
	for len(order) < int(n) {
		select {
		case m := <-ch:
			order = append(order, m.Payload)
		case <-time.After(5 * time.Second):
			t.Fatalf("saw %d of %d deletions: %v", len(order), n, order)
		}
	}
	control := slices.Index(order, keys.ForSale(fs.SaleKey()).Control)
	if control < 0 {
		t.Fatalf("the switches hash %s was not deleted: %v", keys.ForSale(fs.SaleKey()).Control, order)
	}
	for i, k := range order {
		if k == keys.ForSKU(fs.SaleKey(), "a").Stock || k == keys.ForSKU(fs.SaleKey(), "b").Stock || k == keys.ForSKU(fs.SaleKey(), "c").Stock {
			if i > control {
				t.Errorf("stock counter %s deleted after the switches hash: %v", k, order)
			}
		}
	}
}
