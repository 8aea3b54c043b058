package lag_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/lag"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func TestStream(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		testStream(t, testutil.Redis(t))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		testStream(t, testutil.RedisCluster(t).Client(t))
	})
}

// testStream builds SKU streams in every state the pipeline leaves them in
// and checks the exact backlog:
//
//	a: 10 entries, 4 delivered to pod-1, 1 of them acknowledged (not
//	   deleted): Redis reports the lag (6); 3 pending.
//	b: 2505 entries, 3 delivered to pod-2 and pod-1, the last two of them
//	   done (XACK + XDEL, as relay and streamsink do): the lag is nil and
//	   the 2502 undelivered entries are counted, over several pages; 1 pending.
//	c: no stream at all: nothing.
//	d: 4 entries and no group yet: all 4 undelivered.
//	e: 2 entries, both delivered to pod-1 and done: nothing.
func testStream(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	ns := testutil.UniqueName(t)
	testutil.CleanupKeys(t, rdb, "*"+ns+"/*")
	saleKey := ns + "/sale"
	stream := func(sku string) string { return keys.ForSKU(saleKey, sku).Stream }

	add := func(sku string, n int) {
		t.Helper()
		pipe := rdb.Pipeline()
		for i := range n {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream(sku), Values: []any{"order", i}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("xadd %d to %s: %v", n, sku, err)
		}
	}
	group := func(sku string) {
		t.Helper()
		if err := streamgroup.EnsureGroup(ctx, rdb, stream(sku), keys.RelayGroup); err != nil {
			t.Fatal(err)
		}
	}
	read := func(sku, consumer string, n int64) []string {
		t.Helper()
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: keys.RelayGroup, Consumer: consumer, Streams: []string{stream(sku), ">"}, Count: n, Block: -1,
		}).Result()
		if err != nil || len(res) != 1 || int64(len(res[0].Messages)) != n {
			t.Fatalf("xreadgroup %d from %s: %v %v", n, sku, res, err)
		}
		var ids []string
		for _, m := range res[0].Messages {
			ids = append(ids, m.ID)
		}
		return ids
	}
	done := func(sku string, ids ...string) {
		t.Helper()
		k := keys.ForSKU(saleKey, sku)
		if err := streamgroup.Done(ctx, rdb, k.Stream, keys.RelayGroup, k.DeadLetters, ids, nil); err != nil {
			t.Fatal(err)
		}
	}
	rawGroup := func(sku string) redis.XInfoGroup {
		t.Helper()
		gs, err := rdb.XInfoGroups(ctx, stream(sku)).Result()
		if err != nil || len(gs) != 1 {
			t.Fatalf("xinfo groups %s: %v %v", sku, gs, err)
		}
		return gs[0]
	}

	add("a", 10)
	group("a")
	ids := read("a", "pod-1", 4)
	if err := rdb.XAck(ctx, stream("a"), keys.RelayGroup, ids[0]).Err(); err != nil {
		t.Fatal(err)
	}
	if g := rawGroup("a"); g.Lag != 6 {
		t.Fatalf("a: redis reports lag %d, want 6 (this case is meant to use Redis' own lag)", g.Lag)
	}

	add("b", 2505)
	group("b")
	ids = read("b", "pod-2", 1)
	ids = append(ids, read("b", "pod-1", 2)...)
	done("b", ids[1:]...)
	if g := rawGroup("b"); g.Lag != -1 {
		t.Fatalf("b: redis reports lag %d, want nil (this case is meant to count)", g.Lag)
	}

	add("d", 4)

	add("e", 2)
	group("e")
	done("e", read("e", "pod-1", 2)...)

	got, err := lag.Stream(ctx, rdb, saleKey, []string{"a", "b", "c", "d", "e"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := lag.StreamLag{Total: 4 + 2512, Pending: 3 + 1, Undelivered: 6 + 2502 + 4, Consumers: 2}
	if got != want {
		t.Fatalf("Stream = %+v, want %+v", got, want)
	}

	// One SKU alone, and a sale with nothing.
	if got, err := lag.Stream(ctx, rdb, saleKey, []string{"e"}, nil); err != nil || got != (lag.StreamLag{Consumers: 1}) {
		t.Fatalf("Stream(e) = %+v, %v; want only one consumer", got, err)
	}
	if got, err := lag.Stream(ctx, rdb, ns+"/other", []string{"a"}, nil); err != nil || got != (lag.StreamLag{}) {
		t.Fatalf("Stream(other sale) = %+v, %v; want zero", got, err)
	}

	// A SKU split into three buckets (on three shards of the cluster): the
	// backlog of every bucket's stream counts. Bucket 0 is empty, bucket 1
	// has 3 entries and no group, bucket 2 has 2 entries, one pending.
	bk := orderstate.Buckets{"s": 3}
	sb := bk.Keys(saleKey, "s")
	pipe := rdb.Pipeline()
	for b, n := range []int{0, 3, 2} {
		for i := range n {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: sb[b].Stream, Values: []any{"order", i}})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := streamgroup.EnsureGroup(ctx, rdb, sb[2].Stream, keys.RelayGroup); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.RelayGroup, Consumer: "pod-3",
		Streams: []string{sb[2].Stream, ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := lag.Stream(ctx, rdb, saleKey, []string{"s"}, bk); err != nil ||
		got != (lag.StreamLag{Total: 5, Pending: 1, Undelivered: 4, Consumers: 1}) {
		t.Fatalf("Stream(split s) = %+v, %v; want 5 = 1 pending + 4 undelivered over its buckets", got, err)
	}
}

// kafka is an in-process Kafka of three brokers (so the partitions of the
// topic have different leaders) with the sale's topic, and a client and
// admin on it.
type kafka struct {
	brokers []string
	client  sarama.Client
	admin   sarama.ClusterAdmin
	topic   string
	group   string
}

const partitions = 3

func newKafka(t *testing.T) *kafka {
	t.Helper()
	saleKey := testutil.UniqueName(t) + "/sale"
	k := &kafka{topic: keys.Topic(saleKey), group: keys.ConsumerGroup(saleKey)}
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(partitions, k.topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k.brokers = c.ListenAddrs()
	k.client, err = sarama.NewClient(k.brokers, k.options("flashsale-lag-test").Config())
	if err != nil {
		t.Fatal(err)
	}
	k.admin, err = sarama.NewClusterAdminFromClient(k.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.admin.Close() }) // closes the client too
	return k
}

func (k *kafka) options(id string) kafkautil.Options {
	return kafkautil.Options{Brokers: k.brokers, ClientID: id}
}

// produce writes n[p] messages to partition p.
func (k *kafka) produce(t *testing.T, n map[int32]int) {
	t.Helper()
	cfg := k.options("flashsale-lag-test-producer").Config()
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer(k.brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prod.Close() }()
	for p, count := range n {
		for i := range count {
			msg := &sarama.ProducerMessage{Topic: k.topic, Partition: p, Value: sarama.StringEncoder(fmt.Sprint(i))}
			if _, _, err := prod.SendMessage(msg); err != nil {
				t.Fatalf("produce to %s/%d: %v", k.topic, p, err)
			}
		}
	}
}

// consume runs a real sarama consumer group member of the sale's group,
// configured like runtime/pipeline/consumer (no auto-commit: mark, then commit), that
// consumes the first upTo[p] messages of each partition p, commits them and
// leaves the group.
func (k *kafka) consume(t *testing.T, upTo map[int32]int64) {
	t.Helper()
	cfg := k.options("flashsale-lag-test-committer").Config()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup(k.brokers, k.group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cg.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newPartConsumer(upTo)
	// One member gets every partition; the session ends when every claim
	// has consumed its part and the marks are committed.
	if err := cg.Consume(ctx, []string{k.topic}, h); err != nil {
		t.Fatalf("consume: %v", err)
	}
	select {
	case <-h.finished:
	default:
		t.Fatalf("consume: session with %d claims ended by %v before every part was consumed", h.claims.Load(), ctx.Err())
	}
	if h.claims.Load() != partitions {
		t.Fatalf("consume: session with %d claims ended by %v", h.claims.Load(), ctx.Err())
	}
}

// partConsumer marks the messages of partition p below upTo[p]; when every
// claim has its part, the last one commits and all of them end. A claim must
// not end earlier: sarama ends the whole session when the first claim returns,
// and with auto-commit off the other claims' marks would never be committed.
type partConsumer struct {
	upTo     map[int32]int64
	claims   atomic.Int32
	left     atomic.Int32 // claims that have not consumed their part yet
	finished chan struct{}
}

func newPartConsumer(upTo map[int32]int64) *partConsumer {
	h := &partConsumer{upTo: upTo, finished: make(chan struct{})}
	h.left.Store(partitions)
	return h
}

func (*partConsumer) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (*partConsumer) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *partConsumer) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	h.claims.Add(1)
	for limit := h.upTo[c.Partition()]; limit > 0; {
		select {
		case <-s.Context().Done():
			return s.Context().Err()
		case m, ok := <-c.Messages():
			if !ok {
				return nil
			}
			s.MarkMessage(m, "")
			if m.Offset+1 >= limit {
				limit = 0
			}
		}
	}
	if h.left.Add(-1) == 0 {
		s.Commit()
		close(h.finished)
	}
	select {
	case <-h.finished:
	case <-s.Context().Done():
	}
	return nil
}

func TestKafkaLag(t *testing.T) {
	t.Parallel()
	k := newKafka(t)

	// Nothing produced, nothing committed, nobody joined.
	got, err := lag.Kafka(k.client, k.admin, k.topic, k.group)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != 0 || got.Partitions != partitions || got.Members != 0 || got.AssignedPartitions != 0 {
		t.Fatalf("empty topic: %+v", got)
	}

	k.produce(t, map[int32]int{0: 5, 1: 4, 2: 2})
	// Nothing committed: every message counts.
	if got, err = lag.Kafka(k.client, k.admin, k.topic, k.group); err != nil || got.Total != 11 {
		t.Fatalf("before any commit: %+v, %v; want Total 11", got, err)
	}

	// Partition 0 consumed up to 3, partition 1 entirely, partition 2 not at all.
	k.consume(t, map[int32]int64{0: 3, 1: 4})
	if got, err = lag.Kafka(k.client, k.admin, k.topic, k.group); err != nil || got.Total != 2+0+2 {
		t.Fatalf("after commits: %+v, %v; want Total 4", got, err)
	}

	// Retention (here DeleteRecords) moves partition 2's oldest offset to 1:
	// the uncommitted partition counts from there, not from 0.
	if err := k.admin.DeleteRecords(k.topic, map[int32]int64{2: 1}); err != nil {
		t.Fatal(err)
	}
	if got, err = lag.Kafka(k.client, k.admin, k.topic, k.group); err != nil || got.Total != 2+0+1 {
		t.Fatalf("after deleting a record: %+v, %v; want Total 3", got, err)
	}
}

// TestKafkaMembers runs a real sarama consumer group session that holds its
// partitions without marking anything: the group shows its member and every
// partition assigned, the lag does not move, and after the member leaves the
// group shows nobody.
func TestKafkaMembers(t *testing.T) {
	t.Parallel()
	k := newKafka(t)
	k.produce(t, map[int32]int{0: 2, 1: 3})
	k.consume(t, map[int32]int64{0: 1})

	cfg := k.options("flashsale-lag-test-consumer").Config()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Return.Errors = true
	cg, err := sarama.NewConsumerGroup(k.brokers, k.group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() {
		cancel()
		_ = cg.Close()
		wg.Wait()
	}
	defer stop()
	wg.Go(func() {
		for err := range cg.Errors() {
			t.Logf("consumer group: %v", err)
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{k.topic}, holder{}); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})

	var got lag.KafkaLag
	waitFor(t, "the member to hold every partition", func() bool {
		got, err = lag.Kafka(k.client, k.admin, k.topic, k.group)
		return err == nil && got.Members >= 1 && got.AssignedPartitions == partitions
	}, func() string { return fmt.Sprintf("last: %+v, %v", got, err) })
	want := lag.KafkaLag{Total: 1 + 3, Partitions: partitions, Members: 1, AssignedPartitions: partitions, State: "Stable"}
	if got != want {
		t.Fatalf("with a member: %+v, want %+v", got, want)
	}

	stop()
	waitFor(t, "the member to leave", func() bool {
		got, err = lag.Kafka(k.client, k.admin, k.topic, k.group)
		return err == nil && got.Members == 0
	}, func() string { return fmt.Sprintf("last: %+v, %v", got, err) })
	if got.AssignedPartitions != 0 || got.Total != 4 {
		t.Fatalf("after the member left: %+v", got)
	}
}

// holder claims its partitions and holds them, marking nothing, until the
// session ends.
type holder struct{}

func (holder) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (holder) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (holder) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for {
		select {
		case <-s.Context().Done():
			return nil
		case _, ok := <-c.Messages():
			if !ok {
				return nil
			}
		}
	}
}

func TestKafkaNoTopic(t *testing.T) {
	t.Parallel()
	k := newKafka(t)
	other := testutil.UniqueName(t) + "/sale"
	_, err := lag.Kafka(k.client, k.admin, keys.Topic(other), keys.ConsumerGroup(other))
	if !errors.Is(err, lag.ErrNoTopic) {
		t.Fatalf("Kafka(missing topic) error = %v, want ErrNoTopic", err)
	}
	// Asking did not create it.
	if _, err := lag.Kafka(k.client, k.admin, keys.Topic(other), k.group); !errors.Is(err, lag.ErrNoTopic) {
		t.Fatalf("second ask: %v, want ErrNoTopic", err)
	}
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool, last func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; %s", what, last())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
