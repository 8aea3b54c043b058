package worker_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/internal/pipelinetest"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var skus = []string{"1001", "1002"}

// newSale is a sale of the test's own with two SKUs, the first split into
// three buckets; partitions > 0 gives it spec.kafka.
func newSale(t *testing.T, rdb redis.UniversalClient, partitions int32) *v1alpha1.FlashSale {
	t.Helper()
	ns, name, _ := strings.Cut(pipelinetest.SaleKey(t, rdb), "/")
	sale := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for i, id := range skus {
		sale.Spec.SKUs = append(sale.Spec.SKUs, v1alpha1.SKU{ID: id, Stock: 1000, Price: "19.90", PerUserLimit: 1, Buckets: int32(3 - 2*i)})
	}
	if partitions > 0 {
		sale.Spec.Kafka = &v1alpha1.Kafka{Partitions: partitions}
	}
	return sale
}

// admit admits n orders, half of each SKU, each in its buyer's home bucket.
func admit(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, n int) []order.Order {
	t.Helper()
	bk := orderstate.BucketsOf(sale)
	orders := make([]order.Order, n)
	for i := range orders {
		sku := skus[i%2]
		orders[i] = pipelinetest.OrderIn(sale.SaleKey(), sku, fmt.Sprintf("u%d", i), "19.90", bk.Of(sku))
	}
	pipelinetest.AdmitIn(t, rdb, bk, orders...)
	return orders
}

func config(sale *v1alpha1.FlashSale, rdb redis.UniversalClient, db *sql.DB, brokers []string) worker.Config {
	return worker.Config{
		Sale: sale, Redis: rdb, DB: db, Brokers: brokers, PodID: "pod-a", BatchSize: 50,
		ClaimMinIdle: time.Second, SessionTimeout: time.Second,
		Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
}

func startKafka(t *testing.T, port int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNewChecksTheModeAgainstTheSale refuses brokers for a Redis-only sale
// and a Kafka sale without brokers, with a message that says what to do.
func TestNewChecksTheModeAgainstTheSale(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{})
	db := &sql.DB{}
	kafkaSale := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "k"},
		Spec: v1alpha1.FlashSaleSpec{SKUs: []v1alpha1.SKU{{ID: "1"}}, Kafka: &v1alpha1.Kafka{Partitions: 1}}}
	redisSale := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r"},
		Spec: v1alpha1.FlashSaleSpec{SKUs: []v1alpha1.SKU{{ID: "1"}}}}
	for _, tc := range []struct {
		name string
		cfg  worker.Config
		want string
	}{
		{"kafka sale without brokers", config(kafkaSale, rdb, db, nil), "give the brokers with --kafka-brokers"},
		{"redis-only sale with brokers", config(redisSale, rdb, db, []string{"b:9092"}), "runs Redis-only"},
		{"no sale", config(nil, rdb, db, nil), "sale, redis and MySQL are required"},
		{"no pod id", func() worker.Config { c := config(redisSale, rdb, db, nil); c.PodID = ""; return c }(), "pod id"},
	} {
		if _, err := worker.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	for _, cfg := range []worker.Config{config(kafkaSale, rdb, db, []string{"b:9092"}), config(redisSale, rdb, db, nil)} {
		if _, err := worker.New(cfg); err != nil {
			t.Errorf("sale %s: %v", cfg.Sale.SaleKey(), err)
		}
	}
}

// TestRunRefusesAnUnmigratedDatabase starts a worker on a database without
// the order schema: Run says to migrate first and the worker is never ready.
func TestRunRefusesAnUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	db, _ := testutil.MySQL(t)
	w, err := worker.New(config(newSale(t, rdb, 0), rdb, db, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "flashsale migrate") {
		t.Fatalf("Run: %v, want an error that says to run flashsale migrate", err)
	}
	if w.Ready() {
		t.Fatal("ready without a schema")
	}
}

// TestRunMovesOrders runs the pipeline in both modes, on one Redis and on a
// Redis Cluster, with a SKU split into three buckets (on three shards of the
// cluster) beside one that is not: the worker is ready while it runs, every
// admitted order of every bucket becomes a row and shows created in its
// bucket, every bucket's stream is drained, and the worker is not ready once
// stopped.
func TestRunMovesOrders(t *testing.T) {
	t.Parallel()
	cluster := testutil.RedisCluster(t)
	for _, mode := range []string{"kafka", "redis-only", "kafka/cluster", "redis-only/cluster"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var rdb redis.UniversalClient = testutil.Redis(t)
			if strings.HasSuffix(mode, "/cluster") {
				rdb = cluster.Client(t)
			}
			db, _ := testutil.OrderDB(t)
			var brokers []string
			var partitions int32
			if strings.HasPrefix(mode, "kafka") {
				kc := startKafka(t, 0)
				t.Cleanup(kc.Close)
				brokers, partitions = kc.ListenAddrs(), 4
			}
			sale := newSale(t, rdb, partitions)
			orders := admit(t, rdb, sale, 200)
			w, err := worker.New(config(sale, rdb, db, brokers))
			if err != nil {
				t.Fatal(err)
			}
			stop := pipelinetest.Start(t, w.Run)
			testutil.Eventually(t, 5*time.Second, "ready", w.Ready)
			testutil.Eventually(t, 30*time.Second, "200 rows", func() bool { return pipelinetest.Rows(t, db, sale.SaleKey()) == 200 })
			if _, err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if w.Ready() {
				t.Fatal("still ready after Run returned")
			}
			checkCreated(t, rdb, sale, orders)
		})
	}
}

// checkCreated checks that every order shows created in the bucket that
// admitted it, that orders went to every bucket, and that every bucket's
// stream is empty.
func checkCreated(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, orders []order.Order) {
	t.Helper()
	bk := orderstate.BucketsOf(sale)
	perBucket := map[int]int{}
	for _, o := range orders {
		rec, ok, err := orderstate.Lookup(context.Background(), rdb, o.Sale, o.SKU, bk.Of(o.SKU), o.OrderNo)
		if err != nil || !ok || rec.Status != order.Created {
			t.Fatalf("order %s: record %+v, known %v, %v; want created", o.OrderNo, rec, ok, err)
		}
		if o.SKU == skus[0] {
			b, _ := keys.BucketOf(o.OrderNo)
			perBucket[b]++
		}
	}
	if len(perBucket) != 3 {
		t.Fatalf("orders of SKU %s by bucket: %v, want all three buckets", skus[0], perBucket)
	}
	if length, pending := pipelinetest.LeftIn(t, rdb, bk, sale.SaleKey(), skus...); length != 0 || pending != 0 {
		t.Fatalf("streams hold %d entries (%d pending) after the run", length, pending)
	}
}

// TestShutdownGraceReachesEveryPart stops a worker whose batch cannot be
// handed on, in each part that may hold one: the stream sink (MySQL down),
// the relay (Kafka down), the consumer (MySQL down). With ShutdownGrace
// 300ms, Run returns within a few seconds instead of the default 15s.
func TestShutdownGraceReachesEveryPart(t *testing.T) {
	t.Parallel()
	for _, part := range []string{"streamsink", "relay", "consumer"} {
		t.Run(part, func(t *testing.T) {
			t.Parallel()
			rdb := testutil.Redis(t)
			db, dsn := testutil.OrderDB(t)
			var brokers []string
			var partitions int32
			if part != "streamsink" {
				port := testutil.FreePort(t)
				kc := startKafka(t, port)
				brokers, partitions = kc.ListenAddrs(), 4
				if part == "relay" {
					kc.Close()
				} else {
					t.Cleanup(kc.Close)
				}
			}
			sale := newSale(t, rdb, partitions)
			cfg := config(sale, rdb, db, brokers)
			cfg.ShutdownGrace = 300 * time.Millisecond
			reg := prometheus.NewRegistry()
			cfg.Registry = reg
			var proxy *testutil.Proxy
			if part != "relay" {
				proxy, cfg.DB = testutil.ProxiedOrderDB(t, dsn, 2*time.Second)
			}
			w, err := worker.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			stop := pipelinetest.Start(t, w.Run)
			testutil.Eventually(t, 5*time.Second, "ready", w.Ready)
			if proxy != nil {
				proxy.Cut()
			}
			admit(t, rdb, sale, 100)
			// Wait until the part holds a batch it keeps failing to hand on.
			metric, label := "flashsale_worker_retries_total", "transient"
			if part == "relay" {
				metric, label = "flashsale_worker_relay_errors_total", "kafka"
			}
			testutil.Eventually(t, 20*time.Second, part+" retrying its batch", func() bool {
				return pipelinetest.Counter(t, reg, metric, label) >= 2
			})
			took, err := stop()
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if took > 5*time.Second {
				t.Fatalf("Run returned %v after its context ended, want about ShutdownGrace (300ms)", took)
			}
			if n := pipelinetest.Rows(t, db, sale.SaleKey()); n != 0 {
				t.Fatalf("%d rows stored while the batch could not be handed on", n)
			}
		})
	}
}
