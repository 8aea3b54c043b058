// Package kafkautil holds the sarama plumbing the relay and the consumer
// share: the client configuration, topic creation, and a producer that is
// rebuilt after Kafka went away.
package kafkautil

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// DefaultVersion is the Kafka protocol version spoken unless told otherwise.
var DefaultVersion = sarama.V3_6_0_0

// Options are what every sarama client of the pipeline needs.
type Options struct {
	Brokers  []string
	ClientID string
	// Version of the Kafka protocol; zero means DefaultVersion.
	Version sarama.KafkaVersion
}

// Config returns a sarama config with the pipeline's common settings.
func (o Options) Config() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = o.ClientID
	if c.ClientID == "" {
		c.ClientID = "flashsale-worker"
	}
	c.Version = o.Version
	if c.Version == (sarama.KafkaVersion{}) {
		c.Version = DefaultVersion
	}
	c.Net.DialTimeout = 5 * time.Second
	c.Net.ReadTimeout = 15 * time.Second
	c.Net.WriteTimeout = 10 * time.Second
	c.Metadata.Retry.Max = 2
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	c.Metadata.AllowAutoTopicCreation = false
	c.Metadata.RefreshFrequency = 30 * time.Second
	return c
}

// IdempotentProducerConfig returns a config for an idempotent producer that
// waits for all in-sync replicas: a retried batch is never written twice and
// per-partition order holds.
func (o Options) IdempotentProducerConfig() *sarama.Config {
	c := o.Config()
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Retry.Max = 3
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Partitioner = sarama.NewHashPartitioner
	// Let a burst gather into big produce requests.
	c.Producer.Flush.Bytes = 256 * 1024
	c.Producer.Flush.Frequency = time.Millisecond
	c.ChannelBufferSize = 4096
	return c
}

// EnsureTopic creates topic with partitions when it does not exist. The
// replication factor is the smaller of 3 and the number of brokers.
func EnsureTopic(client sarama.Client, topic string, partitions int32) error {
	if partitions <= 0 {
		partitions = 1
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	// No admin.Close: it would close the client the caller owns.
	//
	// Ask for the topic with one plain metadata request rather than
	// client.RefreshMetadata: for a missing topic (a new sale) the latter
	// retries Metadata.Retry.Max times Metadata.Retry.Backoff apart, which
	// delayed the first order of every sale (and every reconnect) by 400ms.
	if md, err := admin.DescribeTopics([]string{topic}); err == nil && len(md) == 1 &&
		errors.Is(md[0].Err, sarama.ErrNoError) && len(md[0].Partitions) > 0 {
		return client.RefreshMetadata(topic)
	}
	rf := int16(min(3, len(client.Brokers())))
	rf = max(rf, 1)
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: rf}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		var te *sarama.TopicError
		if !errors.As(err, &te) || !errors.Is(te.Err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	return client.RefreshMetadata(topic)
}

// Producer is a sync producer created on first use and rebuilt after a
// failure (Kafka restarted, the topic deleted): Invalidate drops it and the
// next Get connects afresh and creates the topics that went missing.
type Producer struct {
	opts   Options
	topics map[string]int32

	mu     sync.Mutex
	client sarama.Client
	prod   sarama.SyncProducer
}

// NewProducer returns a Producer that makes sure topics (name → partitions)
// exist whenever it connects.
func NewProducer(opts Options, topics map[string]int32) *Producer {
	return &Producer{opts: opts, topics: topics}
}

// Get returns the live producer, connecting when there is none.
func (p *Producer) Get() (sarama.SyncProducer, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prod != nil {
		return p.prod, nil
	}
	client, err := sarama.NewClient(p.opts.Brokers, p.opts.IdempotentProducerConfig())
	if err != nil {
		return nil, fmt.Errorf("connect to kafka %v: %w", p.opts.Brokers, err)
	}
	for t, n := range p.topics {
		if err := EnsureTopic(client, t, n); err != nil {
			_ = client.Close()
			return nil, err
		}
	}
	prod, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	p.client, p.prod = client, prod
	return prod, nil
}

// Invalidate closes prod if it is still the current producer.
func (p *Producer) Invalidate(prod sarama.SyncProducer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prod == nil || p.prod != prod {
		return
	}
	p.closeLocked()
}

// Close closes the producer.
func (p *Producer) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prod != nil {
		p.closeLocked()
	}
}

func (p *Producer) closeLocked() {
	_ = p.prod.Close()
	_ = p.client.Close()
	p.prod, p.client = nil, nil
}
