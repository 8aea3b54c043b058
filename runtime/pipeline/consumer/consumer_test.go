package consumer_test

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/consumer"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/internal/pipelinetest"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const partitions = 4

var fast = backoff.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

func startKafka(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// produce sends values keyed by key to the sale's topic, creating it.
func produce(t *testing.T, brokers []string, saleKey string, msgs ...*sarama.ProducerMessage) {
	t.Helper()
	topic := keys.Topic(saleKey)
	p := kafkautil.NewProducer(kafkautil.Options{Brokers: brokers}, map[string]int32{topic: partitions})
	defer p.Close()
	prod, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		m.Topic = topic
	}
	if err := prod.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
}

// orders are n orders of saleKey as the relay produces them.
func orders(t *testing.T, saleKey string, n int) []*sarama.ProducerMessage {
	t.Helper()
	out := make([]*sarama.ProducerMessage, n)
	for i := range out {
		o := pipelinetest.Order(saleKey, "1001", fmt.Sprintf("u%d", i), "19.90")
		v, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = &sarama.ProducerMessage{Key: sarama.StringEncoder(o.User), Value: sarama.ByteEncoder(v)}
	}
	return out
}

// start runs a consumer until the test ends or the returned stop is called.
func start(t *testing.T, cfg consumer.Config) (stop func() (time.Duration, error)) {
	t.Helper()
	c, err := consumer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pipelinetest.Start(t, c.Run)
}

func config(saleKey string, brokers []string, db *sql.DB, reg prometheus.Registerer) consumer.Config {
	return consumer.Config{
		SaleKey: saleKey, Kafka: kafkautil.Options{Brokers: brokers}, Partitions: partitions,
		Writer: dbsink.New(dbsink.Config{
			Store: orderdb.New(db), SaleKey: saleKey, Backoff: fast, Metrics: dbsink.NewMetrics(reg),
		}),
		BatchSize: 50, SessionTimeout: time.Second, Backoff: fast,
	}
}

// committed sums the group's committed offsets over the topic's partitions.
func committed(t *testing.T, brokers []string, saleKey string) int64 {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, kafkautil.Options{}.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	topic := keys.Topic(saleKey)
	parts := make([]int32, partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	res, err := admin.ListConsumerGroupOffsets(keys.ConsumerGroup(saleKey), map[string][]int32{topic: parts})
	if errors.Is(err, sarama.ErrGroupIDNotFound) { // nobody joined yet
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, b := range res.Blocks[topic] {
		sum += max(b.Offset, 0)
	}
	return sum
}

func header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestConsumerStoresThenCommits consumes orders with poison among them (a
// message that is no order, a row MySQL refuses): the orders are rows in
// MySQL, the poison is on the dead-letter topic with its reason and origin,
// and the group's offsets are committed past everything.
func TestConsumerStoresThenCommits(t *testing.T) {
	t.Parallel()
	db, _ := testutil.OrderDB(t)
	brokers := startKafka(t)
	saleKey := testutil.UniqueName(t) + "/sale"
	msgs := orders(t, saleKey, 300)
	refused := pipelinetest.Order(saleKey, "1001", "carol", "1e20") // out of DECIMAL(14,2)'s range
	v, err := refused.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msgs = append(msgs,
		&sarama.ProducerMessage{Key: sarama.StringEncoder("mallory"), Value: sarama.ByteEncoder("\x00not an order{")},
		&sarama.ProducerMessage{Key: sarama.StringEncoder("carol"), Value: sarama.ByteEncoder(v)},
	)
	produce(t, brokers, saleKey, msgs...)
	start(t, config(saleKey, brokers, db, nil))

	testutil.Eventually(t, 30*time.Second, "offsets committed past all 302", func() bool {
		return committed(t, brokers, saleKey) == 302
	})
	if n := pipelinetest.Rows(t, db, saleKey); n != 300 {
		t.Fatalf("%d rows, want 300", n)
	}
	c, err := sarama.NewConsumer(brokers, kafkautil.Options{}.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(keys.DeadLetterTopic(saleKey), 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	reasons := map[string]string{}
	for range 2 {
		select {
		case m := <-pc.Messages():
			if header(m, consumer.HeaderSourceTopic) != keys.Topic(saleKey) || header(m, consumer.HeaderSourceOffset) == "" {
				t.Fatalf("dead letter without its origin: %v", m.Headers)
			}
			reasons[string(m.Key)] = header(m, consumer.HeaderError) + " after " + header(m, consumer.HeaderAttempts)
		case <-time.After(10 * time.Second):
			t.Fatalf("dead letters: %v, want 2", reasons)
		}
	}
	if r := reasons["mallory"]; !strings.HasPrefix(r, "decode: ") || !strings.HasSuffix(r, " after 1") {
		t.Errorf("undecodable message dead-lettered as %q", r)
	}
	if r := reasons["carol"]; !strings.HasPrefix(r, "mysql: ") || !strings.HasSuffix(r, " after "+strconv.Itoa(3)) {
		t.Errorf("refused row dead-lettered as %q", r)
	}
}

// TestConsumerCommitsNothingWhileMySQLIsDown cuts MySQL away: no offset is
// committed while the batch cannot be stored; stopping gives up after
// ShutdownGrace; a consumer started once MySQL is back gets the same
// messages again and stores them all.
func TestConsumerCommitsNothingWhileMySQLIsDown(t *testing.T) {
	t.Parallel()
	direct, dsn := testutil.OrderDB(t)
	proxy, db := testutil.ProxiedOrderDB(t, dsn, 2*time.Second)
	brokers := startKafka(t)
	saleKey := testutil.UniqueName(t) + "/sale"
	produce(t, brokers, saleKey, orders(t, saleKey, 100)...)
	proxy.Cut()

	reg := prometheus.NewRegistry()
	first := config(saleKey, brokers, db, reg)
	first.ShutdownGrace = 300 * time.Millisecond
	stop := start(t, first)
	testutil.Eventually(t, 30*time.Second, "MySQL retries", func() bool {
		return pipelinetest.Counter(t, reg, "flashsale_worker_retries_total", "transient") >= 2
	})
	if n := committed(t, brokers, saleKey); n != 0 {
		t.Fatalf("%d offsets committed while MySQL is down", n)
	}
	if took, _ := stop(); took > 5*time.Second {
		t.Fatalf("Run returned %v after its context ended (grace 300ms)", took)
	}
	if n := committed(t, brokers, saleKey); n != 0 {
		t.Fatalf("%d offsets committed by the stop", n)
	}

	proxy.Restore()
	start(t, config(saleKey, brokers, direct, nil))
	testutil.Eventually(t, 30*time.Second, "all 100 committed", func() bool { return committed(t, brokers, saleKey) == 100 })
	if n := pipelinetest.Rows(t, direct, saleKey); n != 100 {
		t.Fatalf("%d rows, want 100", n)
	}
}
