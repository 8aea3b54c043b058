package relay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/internal/pipelinetest"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/relay"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var skus = []string{"1001", "1002"}

func startKafka(t *testing.T, port int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs a relay until the test ends or the returned stop is called.
func start(t *testing.T, cfg relay.Config) (stop func() (time.Duration, error)) {
	t.Helper()
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pipelinetest.Start(t, r.Run)
}

func config(saleKey string, rdb redis.UniversalClient, brokers []string, reg prometheus.Registerer) relay.Config {
	return relay.Config{
		SaleKey: saleKey, SKUs: skus, Redis: rdb, Kafka: kafkautil.Options{Brokers: brokers}, Partitions: 4,
		Consumer: "pod-a", Count: 50, Block: 100 * time.Millisecond,
		Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}, Metrics: relay.NewMetrics(reg),
	}
}

func orders(saleKey string, n int) []order.Order {
	out := make([]order.Order, n)
	for i := range out {
		out[i] = pipelinetest.Order(saleKey, skus[i%2], fmt.Sprintf("u%d", i), "19.90")
	}
	return out
}

// consume reads the topic's partitions from the start until n messages
// arrived (or 20s passed) and returns them.
func consume(t *testing.T, brokers []string, topic string, n int) []*sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer(brokers, kafkautil.Options{}.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *sarama.ConsumerMessage)
	done := make(chan struct{})
	var pcs []sarama.PartitionConsumer
	defer func() {
		close(done)
		for _, pc := range pcs {
			_ = pc.Close()
		}
	}()
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
		go func() {
			for m := range pc.Messages() {
				select {
				case msgs <- m:
				case <-done:
					return
				}
			}
		}()
	}
	var out []*sarama.ConsumerMessage
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case m := <-msgs:
			out = append(out, m)
		case <-timeout:
			t.Fatalf("%d of %d messages on %s within 20s", len(out), n, topic)
		}
	}
	return out
}

// TestRelayProducesEveryOrderKeyedByUser relays two SKU streams, with a
// corrupt entry and an order of another sale among the orders: each order
// is on the sale's topic once, keyed by its user (so a user's orders stay
// in one partition, in order); the streams are empty; the two strays are in
// the dead-letter stream.
func TestRelayProducesEveryOrderKeyedByUser(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	kc := startKafka(t, 0)
	t.Cleanup(kc.Close)
	saleKey := pipelinetest.SaleKey(t, rdb)
	all := orders(saleKey, 200)
	pipelinetest.Admit(t, rdb, all[:100]...)
	k := keys.ForSKU(saleKey, "1002")
	other := pipelinetest.Order("other/sale", "1002", "mallory", "1.00")
	for _, v := range [][]any{{"order", "garbage"}, pipelinetest.Entry(other)} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: k.Stream, Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	start(t, config(saleKey, rdb, kc.ListenAddrs(), reg))
	pipelinetest.Admit(t, rdb, all[100:]...)

	msgs := consume(t, kc.ListenAddrs(), keys.Topic(saleKey), 200)
	byNo := map[string]order.Order{}
	for _, o := range all {
		byNo[o.OrderNo] = o
	}
	for _, m := range msgs {
		o, err := order.Unmarshal(m.Value)
		if err != nil {
			t.Fatalf("message at %d/%d: %v", m.Partition, m.Offset, err)
		}
		want, ok := byNo[o.OrderNo]
		if !ok {
			t.Fatalf("order %s produced twice or unknown", o.OrderNo)
		}
		delete(byNo, o.OrderNo)
		if string(m.Key) != want.User || o.User != want.User || o.Amount != want.Amount {
			t.Fatalf("message key %q, order %+v; want key %q and %+v", m.Key, o, want.User, want)
		}
	}
	testutil.Eventually(t, 10*time.Second, "streams drained", func() bool {
		n, p := pipelinetest.Left(t, rdb, saleKey, skus...)
		return n == 0 && p == 0
	})
	dl, err := rdb.XRange(context.Background(), k.DeadLetters, "-", "+").Result()
	if err != nil || len(dl) != 2 {
		t.Fatalf("dead letters %v (%v), want 2", dl, err)
	}
	for i, reason := range []string{"stream entry", `belongs to sale "other/sale"`} {
		if r, _ := dl[i].Values["error"].(string); !strings.Contains(r, reason) {
			t.Errorf("dead letter %d: %v, want a reason with %q", i, dl[i].Values, reason)
		}
	}
	if pipelinetest.Counter(t, reg, "flashsale_worker_orders_relayed_total", "") != 200 || pipelinetest.Counter(t, reg, "flashsale_worker_relay_dead_letters_total", "") != 2 {
		t.Fatalf("relayed %v, dead letters %v; want 200 and 2",
			pipelinetest.Counter(t, reg, "flashsale_worker_orders_relayed_total", ""), pipelinetest.Counter(t, reg, "flashsale_worker_relay_dead_letters_total", ""))
	}
}

// TestRelayKeepsOrdersWhileKafkaIsDown relays with the broker stopped:
// nothing is acknowledged, so every order stays in Redis and the failures
// are counted; stopping gives up after ShutdownGrace and leaves the orders
// pending; once the broker is back a relay (of another pod) delivers them
// all.
func TestRelayKeepsOrdersWhileKafkaIsDown(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	port := testutil.FreePort(t)
	kc := startKafka(t, port)
	brokers := kc.ListenAddrs()
	kc.Close() // the broker is down
	saleKey := pipelinetest.SaleKey(t, rdb)
	all := orders(saleKey, 60)
	pipelinetest.Admit(t, rdb, all...)
	reg := prometheus.NewRegistry()
	cfg := config(saleKey, rdb, brokers, reg)
	cfg.ShutdownGrace = 300 * time.Millisecond
	stop := start(t, cfg)
	testutil.Eventually(t, 10*time.Second, "failed produce", func() bool {
		return pipelinetest.Counter(t, reg, "flashsale_worker_relay_errors_total", "kafka") >= 2
	})
	if n, p := pipelinetest.Left(t, rdb, saleKey, skus...); n != 60 || p != 60 {
		t.Fatalf("while Kafka is down: %d orders, %d pending; want all 60 pending", n, p)
	}
	if took, _ := stop(); took < 250*time.Millisecond || took > 5*time.Second {
		t.Fatalf("Run returned %v after its context ended, want about its grace (300ms)", took)
	}
	if n, p := pipelinetest.Left(t, rdb, saleKey, skus...); n != 60 || p != 60 {
		t.Fatalf("after the stop: %d orders, %d pending; want all 60 pending", n, p)
	}

	kc2 := startKafka(t, port)
	t.Cleanup(kc2.Close)
	next := config(saleKey, rdb, brokers, nil)
	next.Consumer = "pod-b"
	next.MinIdle = 100 * time.Millisecond
	start(t, next)
	consume(t, brokers, keys.Topic(saleKey), 60)
	testutil.Eventually(t, 10*time.Second, "streams drained", func() bool {
		n, p := pipelinetest.Left(t, rdb, saleKey, skus...)
		return n == 0 && p == 0
	})
}

// TestNewRefusesAnIncompleteConfig checks that a relay without a sale,
// SKUs, Redis, brokers or a consumer name is refused up front.
func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	t.Parallel()
	good := relay.Config{SaleKey: "ns/sale", SKUs: skus, Redis: redis.NewClient(&redis.Options{}), Kafka: kafkautil.Options{Brokers: []string{"b:9092"}}, Consumer: "pod"}
	for name, mod := range map[string]func(*relay.Config){
		"sale": func(c *relay.Config) { c.SaleKey = "" }, "skus": func(c *relay.Config) { c.SKUs = nil },
		"redis": func(c *relay.Config) { c.Redis = nil }, "brokers": func(c *relay.Config) { c.Kafka.Brokers = nil },
		"consumer": func(c *relay.Config) { c.Consumer = "" },
	} {
		cfg := good
		mod(&cfg)
		if _, err := relay.New(cfg); err == nil || !strings.HasPrefix(err.Error(), "relay: ") {
			t.Errorf("without %s: %v, want a relay: error", name, err)
		}
	}
	if _, err := relay.New(good); err != nil {
		t.Fatalf("complete config: %v", err)
	}
}
