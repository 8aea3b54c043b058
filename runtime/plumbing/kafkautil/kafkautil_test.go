package kafkautil_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestConfig checks the settings every client of the pipeline shares: a
// client ID and protocol version by default or as given, no topic created by
// a mere metadata request, bounded network timeouts, and a config sarama
// accepts.
func TestConfig(t *testing.T) {
	cases := map[string]struct {
		opts        kafkautil.Options
		wantID      string
		wantVersion sarama.KafkaVersion
	}{
		"defaults": {kafkautil.Options{}, "flashsale-worker", kafkautil.DefaultVersion},
		"given":    {kafkautil.Options{ClientID: "relay-1", Version: sarama.V2_8_0_0}, "relay-1", sarama.V2_8_0_0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for cfgName, cfg := range map[string]*sarama.Config{"Config": c.opts.Config(), "IdempotentProducerConfig": c.opts.IdempotentProducerConfig()} {
				if cfg.ClientID != c.wantID || cfg.Version != c.wantVersion {
					t.Errorf("%s: client ID %q version %s, want %q %s", cfgName, cfg.ClientID, cfg.Version, c.wantID, c.wantVersion)
				}
				if cfg.Metadata.AllowAutoTopicCreation {
					t.Errorf("%s: a metadata request may create topics", cfgName)
				}
				if cfg.Net.DialTimeout <= 0 || cfg.Net.DialTimeout > 10*time.Second || cfg.Net.ReadTimeout <= 0 || cfg.Net.WriteTimeout <= 0 {
					t.Errorf("%s: network timeouts dial %s read %s write %s, want bounded", cfgName, cfg.Net.DialTimeout, cfg.Net.ReadTimeout, cfg.Net.WriteTimeout)
				}
				if err := cfg.Validate(); err != nil {
					t.Errorf("%s: sarama refuses it: %v", cfgName, err)
				}
			}
		})
	}
	p := kafkautil.Options{}.IdempotentProducerConfig()
	if !p.Producer.Idempotent || p.Producer.RequiredAcks != sarama.WaitForAll || p.Net.MaxOpenRequests != 1 ||
		!p.Producer.Return.Successes || p.Producer.Retry.Max < 1 {
		t.Errorf("producer config: idempotent %t, acks %d, max open requests %d, return successes %t, retries %d; want true, all (-1), 1, true, >= 1",
			p.Producer.Idempotent, p.Producer.RequiredAcks, p.Net.MaxOpenRequests, p.Producer.Return.Successes, p.Producer.Retry.Max)
	}
}

// produced is what the broker saw of the produce requests: their acks and
// the producer ID of every record batch (-1: not idempotent).
type produced struct {
	mu          sync.Mutex
	acks        []int16
	producerIDs []int64
	initIDs     int
}

// newKafka starts an in-process Kafka of brokers brokers and no topics, and
// records what producers send it.
func newKafka(t *testing.T, brokers int) (*kfake.Cluster, *produced) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	seen := &produced{}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := req.(*kmsg.ProduceRequest)
		seen.mu.Lock()
		defer seen.mu.Unlock()
		seen.acks = append(seen.acks, pr.Acks)
		for _, tp := range pr.Topics {
			for _, p := range tp.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(p.Records); err != nil {
					t.Errorf("produce request to %s/%d: unreadable record batch: %v", tp.Topic, p.Partition, err)
					continue
				}
				seen.producerIDs = append(seen.producerIDs, b.ProducerID)
			}
		}
		return nil, nil, false // observe only: the broker handles it
	})
	c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		seen.mu.Lock()
		seen.initIDs++
		seen.mu.Unlock()
		return nil, nil, false
	})
	return c, seen
}

// TestProducerIsIdempotent produces through a Producer to a real (in-process)
// broker: the topic is created on connect, the producer asks the broker for
// a producer ID, every request waits for all in-sync replicas, every batch
// carries the producer ID, and messages of one key land in one partition.
func TestProducerIsIdempotent(t *testing.T) {
	kafka, seen := newKafka(t, 3)
	topic := "flashsale." + testutil.UniqueName(t)
	opts := kafkautil.Options{Brokers: kafka.ListenAddrs(), ClientID: "kafkautil-test"}
	p := kafkautil.NewProducer(opts, map[string]int32{topic: 4})
	defer p.Close()
	prod, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	partitions := map[int32]bool{}
	var last int64
	for i := range 3 {
		msg := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("user-42"), Value: sarama.StringEncoder("order")}
		part, off, err := prod.SendMessage(msg)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		partitions[part] = true
		last = off
	}
	if len(partitions) != 1 || last != 2 {
		t.Errorf("3 messages of one key went to partitions %v, last offset %d; want one partition, offsets 0-2", partitions, last)
	}

	seen.mu.Lock()
	defer seen.mu.Unlock()
	if seen.initIDs == 0 {
		t.Error("the producer never asked the broker for a producer ID (InitProducerID): not idempotent")
	}
	if len(seen.acks) == 0 {
		t.Fatal("the broker saw no produce request")
	}
	for _, a := range seen.acks {
		if a != -1 {
			t.Errorf("a produce request asked for acks=%d, want -1 (all in-sync replicas)", a)
		}
	}
	for _, id := range seen.producerIDs {
		if id < 0 {
			t.Errorf("a record batch has producer ID %d: not idempotent", id)
		}
	}
}

// TestEnsureTopic creates a missing topic with the partitions asked for (at
// least one) and leaves an existing one alone; the caller's client knows the
// topic right away.
func TestEnsureTopic(t *testing.T) {
	kafka, _ := newKafka(t, 1)
	client, err := sarama.NewClient(kafka.ListenAddrs(), kafkautil.Options{ClientID: "kafkautil-test"}.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	name := testutil.UniqueName(t)
	for _, c := range []struct {
		topic      string
		partitions int32
		want       int
	}{
		{"a." + name, 3, 3},
		{"a." + name, 5, 3}, // exists: not changed
		{"b." + name, 0, 1},
	} {
		if err := kafkautil.EnsureTopic(client, c.topic, c.partitions); err != nil {
			t.Fatalf("EnsureTopic(%s, %d): %v", c.topic, c.partitions, err)
		}
		// Without a metadata refresh of its own: the producer that uses
		// the client next must find the topic in its cache.
		if known, err := client.Topics(); err != nil || !slices.Contains(known, c.topic) {
			t.Errorf("EnsureTopic(%s, %d): the client's metadata has topics %v (%v), not %s", c.topic, c.partitions, known, err, c.topic)
		}
		got, err := client.Partitions(c.topic)
		if err != nil || len(got) != c.want {
			t.Errorf("EnsureTopic(%s, %d): the client sees partitions %v (%v), want %d", c.topic, c.partitions, got, err, c.want)
		}
	}
}

// TestProducerRebuilt checks the Producer's life cycle: Get returns the same
// producer until Invalidate drops it; a stale Invalidate leaves the current
// one alone; a topic deleted meanwhile is created again on reconnect.
func TestProducerRebuilt(t *testing.T) {
	kafka, _ := newKafka(t, 1)
	topic := "flashsale." + testutil.UniqueName(t)
	opts := kafkautil.Options{Brokers: kafka.ListenAddrs(), ClientID: "kafkautil-test"}
	p := kafkautil.NewProducer(opts, map[string]int32{topic: 2})
	defer p.Close()
	send := func(prod sarama.SyncProducer) error {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("order")})
		return err
	}
	first, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := p.Get(); err != nil || again != first {
		t.Fatalf("second Get = %p (%v), want the live producer %p", again, err, first)
	}

	// Kafka loses the topic; the pipeline sees a failed send and invalidates.
	admin, err := sarama.NewClusterAdmin(opts.Brokers, opts.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.DeleteTopic(topic); err != nil {
		t.Fatal(err)
	}
	p.Invalidate(first)
	second, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("Get after Invalidate returned the invalidated producer")
	}
	if err := send(second); err != nil {
		t.Fatalf("send after reconnect (the topic should exist again): %v", err)
	}
	p.Invalidate(first) // stale: must not close second
	if err := send(second); err != nil {
		t.Fatalf("a stale Invalidate closed the live producer: %v", err)
	}
	if again, err := p.Get(); err != nil || again != second {
		t.Fatalf("Get after a stale Invalidate = %p (%v), want %p", again, err, second)
	}
}

// TestProducerNoKafka: with nothing listening, Get fails quickly, naming
// the brokers, and a later Get tries again.
func TestProducerNoKafka(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	p := kafkautil.NewProducer(kafkautil.Options{Brokers: []string{addr}}, map[string]int32{"t": 1})
	defer p.Close()
	for range 2 {
		start := time.Now()
		_, err := p.Get()
		if err == nil || !strings.Contains(err.Error(), "connect to kafka ["+addr+"]") || !errors.Is(err, sarama.ErrOutOfBrokers) {
			t.Fatalf("Get = %v, want an error that names %s and wraps sarama.ErrOutOfBrokers", err, addr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Get took %s to fail against a closed port", d)
		}
	}
}
