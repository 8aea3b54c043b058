package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/IBM/sarama"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// kafkaMessage is one message read from a topic, decoded when it is an order.
type kafkaMessage struct {
	Partition int32
	Offset    int64
	Order     order.Order
	Err       error  // why it is not a valid order of this sale
	Reason    string // the dead-letter reason header, if any
}

// kafkaView is what the audit saw in Kafka.
type kafkaView struct {
	// Lag is the consumer group's lag on the order topic: the sum over
	// partitions of high watermark − committed offset.
	Lag int64
	// Pending are the messages behind the group's committed offsets.
	Pending []kafkaMessage
	// DeadLetters are every message of the dead-letter topic.
	DeadLetters []kafkaMessage
	// Incomplete says a range could not be read to its end in time.
	Incomplete []string
}

// SaramaConfig is the client configuration the audit uses unless told
// otherwise: the pipeline's (kafkautil), under the audit's own client id.
func SaramaConfig() *sarama.Config {
	c := kafkautil.Options{ClientID: "flashsale-audit"}.Config()
	c.Consumer.Return.Errors = true
	return c
}

// readKafka reads the consumer group's committed offsets on the order topic,
// the messages behind them, and the whole dead-letter topic.
func (a *Auditor) readKafka(ctx context.Context) (*kafkaView, error) {
	cfg := a.cfg.Sarama
	if cfg == nil {
		cfg = SaramaConfig()
	}
	client, err := sarama.NewClient(a.cfg.Brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka %s: %w", strings.Join(a.cfg.Brokers, ","), err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer: %w", err)
	}
	defer consumer.Close()

	v := &kafkaView{}
	saleKey := a.cfg.Sale.SaleKey()
	if err := a.readBehindGroup(ctx, client, consumer, saleKey, v); err != nil {
		return nil, err
	}
	if err := a.readDeadLetters(ctx, client, consumer, keys.DeadLetterTopic(saleKey), v); err != nil {
		return nil, err
	}
	return v, nil
}

// readBehindGroup adds to v the workers' consumer group's lag on the order
// topic and the messages behind its committed offsets.
func (a *Auditor) readBehindGroup(ctx context.Context, client sarama.Client, consumer sarama.Consumer, saleKey string, v *kafkaView) error {
	topic := keys.Topic(saleKey)
	parts, err := partitions(client, topic)
	if err != nil || len(parts) == 0 {
		return err
	}
	committed, err := committedOffsets(client, keys.ConsumerGroup(saleKey), topic, parts)
	if err != nil {
		return err
	}
	var ranges []partRange
	for _, p := range parts {
		oldest, newest, err := bounds(client, topic, p)
		if err != nil {
			return err
		}
		from := committed[p]
		if from < oldest { // nothing committed (or retention passed it): the group starts at the oldest
			from = oldest
		}
		if newest <= from {
			continue
		}
		v.Lag += newest - from
		ranges = append(ranges, partRange{p: p, from: from, to: newest})
	}
	msgs, incomplete := a.readRanges(ctx, consumer, topic, ranges)
	v.Pending = append(v.Pending, msgs...)
	v.Incomplete = append(v.Incomplete, incomplete...)
	return nil
}

// readDeadLetters adds every message of the dead-letter topic dlq to v.
func (a *Auditor) readDeadLetters(ctx context.Context, client sarama.Client, consumer sarama.Consumer, dlq string, v *kafkaView) error {
	dparts, err := partitions(client, dlq)
	if err != nil {
		return err
	}
	var ranges []partRange
	for _, p := range dparts {
		oldest, newest, err := bounds(client, dlq, p)
		if err != nil {
			return err
		}
		if newest > oldest {
			ranges = append(ranges, partRange{p: p, from: oldest, to: newest})
		}
	}
	msgs, incomplete := a.readRanges(ctx, consumer, dlq, ranges)
	v.DeadLetters = append(v.DeadLetters, msgs...)
	v.Incomplete = append(v.Incomplete, incomplete...)
	return nil
}

// partRange is the offsets [from, to) of partition p.
type partRange struct {
	p        int32
	from, to int64
}

// readRanges reads the ranges of topic at once (sarama starts each
// partition consumer after a batching pause of its own, 100 ms: one after
// the other, 12 partitions would take over a second) and returns their
// messages in partition order, and the ranges it could not read to the end.
func (a *Auditor) readRanges(ctx context.Context, consumer sarama.Consumer, topic string, ranges []partRange) (msgs []kafkaMessage, incomplete []string) {
	out := make([][]kafkaMessage, len(ranges))
	complete := make([]bool, len(ranges))
	var wg sync.WaitGroup
	for i, r := range ranges {
		wg.Go(func() { out[i], complete[i] = a.readRange(ctx, consumer, topic, r.p, r.from, r.to) })
	}
	wg.Wait()
	for i, r := range ranges {
		msgs = append(msgs, out[i]...)
		if !complete[i] {
			incomplete = append(incomplete, fmt.Sprintf("%s/%d [%d,%d)", topic, r.p, r.from, r.to))
		}
	}
	return msgs, incomplete
}

// partitions lists a topic's partitions; a topic that does not exist has none.
func partitions(client sarama.Client, topic string) ([]int32, error) {
	if err := client.RefreshMetadata(topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return nil, nil
		}
		return nil, fmt.Errorf("kafka metadata of %s: %w", topic, err)
	}
	ps, err := client.Partitions(topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	return ps, nil
}

func bounds(client sarama.Client, topic string, p int32) (oldest, newest int64, err error) {
	if oldest, err = client.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
		return 0, 0, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	if newest, err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
		return 0, 0, fmt.Errorf("high watermark of %s/%d: %w", topic, p, err)
	}
	return oldest, newest, nil
}

// committedOffsets fetches the group's committed offset per partition (-1: none).
func committedOffsets(client sarama.Client, group, topic string, parts []int32) (map[int32]int64, error) {
	coord, err := client.Coordinator(group)
	if err != nil {
		return nil, fmt.Errorf("coordinator of group %s: %w", group, err)
	}
	req := &sarama.OffsetFetchRequest{Version: 1, ConsumerGroup: group}
	for _, p := range parts {
		req.AddPartition(topic, p)
	}
	resp, err := coord.FetchOffset(req)
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	if resp.Err != sarama.ErrNoError {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, resp.Err)
	}
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		out[p] = -1
		if b := resp.GetBlock(topic, p); b != nil && b.Err == sarama.ErrNoError {
			out[p] = b.Offset
		}
	}
	return out, nil
}

// readRange reads [from, to) of one partition and decodes each message as
// an order of this sale; complete is false when it ran out of time first.
func (a *Auditor) readRange(ctx context.Context, consumer sarama.Consumer, topic string, p int32, from, to int64) (out []kafkaMessage, complete bool) {
	raw, complete := a.readRaw(ctx, consumer, topic, p, from, to)
	saleKey := a.cfg.Sale.SaleKey()
	for _, m := range raw {
		km := kafkaMessage{Partition: p, Offset: m.Offset, Reason: dlqReason(m)}
		km.Order, km.Err = order.Unmarshal(m.Value)
		if km.Err == nil && km.Order.Sale != saleKey {
			km.Err = fmt.Errorf("order %s belongs to sale %q", km.Order.OrderNo, km.Order.Sale)
		}
		out = append(out, km)
	}
	return out, complete
}

// dlqReason is the reason a dead-letter message carries in its headers (a
// header whose key names a reason or an error; the last one wins), or "".
func dlqReason(m *sarama.ConsumerMessage) string {
	reason := ""
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		k := strings.ToLower(string(h.Key))
		if strings.Contains(k, "reason") || strings.Contains(k, "error") {
			reason = string(h.Value)
		}
	}
	return reason
}
