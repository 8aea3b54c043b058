// Package lag reads how far a sale's order pipeline is behind, for the
// operator's scaling decisions: the backlog of the SKU streams in Redis (the
// relay group's lag plus its pending entries) and the backlog of the order
// topic in Kafka (the consumer group's lag, read the way KEDA's Kafka scaler
// reads it), together with whether the Kafka consumers hold their partitions.
package lag

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// ErrNoTopic means the order topic does not exist: the relay (and the
// consumer, when given a partition count) create it when they first connect,
// so a sale whose pipeline never ran has none. Callers tell it apart from a
// failure with errors.Is.
var ErrNoTopic = errors.New("topic does not exist")

// StreamLag is the backlog of a sale's order streams, summed over its SKUs
// and over every bucket of a SKU split into buckets.
type StreamLag struct {
	// Total is Pending + Undelivered: orders admitted by the purchase script
	// and not yet handed on to Kafka (relay) or MySQL (streamsink).
	Total int64
	// Pending are entries delivered to a consumer of the group and not yet
	// acknowledged (the group's pending entries list).
	Pending int64
	// Undelivered are entries after the group's last delivered id (the
	// group's lag); on a stream that has no group yet, every entry, because
	// the readers create the group from id 0 (streamgroup.EnsureGroup).
	Undelivered int64
	// Consumers is how many distinct consumer names the group has across the
	// SKUs' streams. Redis keeps a consumer until XGROUP DELCONSUMER, which
	// nothing in the pipeline calls, so this counts every pod that has read
	// since the group was created, not only the live ones.
	Consumers int
}

// streamPage is how many entries one XRANGE returns when the undelivered
// entries must be counted: small enough not to stall a Redis that is serving
// a flash sale, large enough that a big backlog takes few round trips.
const streamPage = 1000

// Stream reads the backlog of the order streams of sale saleKey's SKUs
// skuIDs: the stream of every bucket of each, as bk counts them (nil: no SKU
// is split).
//
// Both pipelines drain the streams with the same group, keys.RelayGroup:
// the relay (Kafka mode) and the Redis-only sink both run a
// streamgroup.Loop on it, and acknowledge with streamgroup.Done on it.
//
// The commands go in pipelines of per-key commands, so they work on a
// standalone Redis and on a Redis Cluster alike (go-redis sends each to the
// shard of its key; the keys of one bucket share a hash tag). A stream that
// does not exist yet adds nothing.
func Stream(ctx context.Context, rdb redis.UniversalClient, saleKey string, skuIDs []string, bk orderstate.Buckets) (StreamLag, error) {
	var out StreamLag
	if len(skuIDs) == 0 {
		return out, nil
	}
	var streams []string
	for _, k := range bk.All(saleKey, skuIDs) {
		streams = append(streams, k.Stream)
	}

	// Round trip 1: the groups of every stream, and its length for the
	// streams that have no group yet.
	groups := make([]*redis.XInfoGroupsCmd, len(streams))
	lens := make([]*redis.IntCmd, len(streams))
	pipe := rdb.Pipeline()
	for i, s := range streams {
		groups[i] = pipe.XInfoGroups(ctx, s)
		lens[i] = pipe.XLen(ctx, s)
	}
	// A missing stream fails its XINFO GROUPS; each command's error is looked
	// at below, so the pipeline's first error is not.
	_, _ = pipe.Exec(ctx)

	// Round trip 2: the consumers of every group, and the first page of the
	// undelivered entries where Redis cannot say how many there are.
	pipe = rdb.Pipeline()
	q := &groupQueries{}
	for i, s := range streams {
		if err := q.add(ctx, pipe, s, groups[i], lens[i], &out); err != nil {
			return out, err
		}
	}
	if len(q.consumers) > 0 || len(q.counts) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	n, err := q.consumerCount()
	if err != nil {
		return out, err
	}
	out.Consumers = n

	// Only a backlog of more than a page takes further round trips.
	for _, c := range q.counts {
		n, err := countAfter(ctx, rdb, c.stream, c.page)
		if err != nil {
			return out, err
		}
		out.Undelivered += n
	}
	out.Total = out.Pending + out.Undelivered
	return out, nil
}

// groupQueries are the commands of Stream's second round trip.
type groupQueries struct {
	// counts page through the undelivered entries of the streams whose lag
	// Redis cannot tell.
	counts []undeliveredCount
	// consumers of the group, on the streams grouped.
	consumers []*redis.XInfoConsumersCmd
	grouped   []string
}

type undeliveredCount struct {
	stream string
	page   *redis.XMessageSliceCmd
}

// add adds what the first round trip tells about stream s to out, and queues
// on pipe what it leaves to find out.
func (q *groupQueries) add(ctx context.Context, pipe redis.Pipeliner, s string, groups *redis.XInfoGroupsCmd, length *redis.IntCmd, out *StreamLag) error {
	gs, err := groups.Result()
	if redis.HasErrorPrefix(err, "no such key") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("groups of stream %s: %w", s, err)
	}
	g, ok := relayGroup(gs)
	if !ok {
		n, err := length.Result()
		if err != nil {
			return fmt.Errorf("length of stream %s: %w", s, err)
		}
		out.Undelivered += n
		return nil
	}
	out.Pending += g.Pending
	q.consumers = append(q.consumers, pipe.XInfoConsumers(ctx, s, keys.RelayGroup))
	q.grouped = append(q.grouped, s)
	// Redis reports the lag as nil (go-redis: -1) when entries after the
	// last delivered one may have been deleted, which happens in the
	// pipeline whenever the last delivered entry was acknowledged (and
	// so deleted) while older ones are still pending. Redis before 7.0
	// reports no lag at all (go-redis: 0, with entries-read also 0). In
	// both cases the entries after the last delivered id are counted.
	if g.Lag > 0 || (g.Lag == 0 && g.EntriesRead > 0) {
		out.Undelivered += g.Lag
		return nil
	}
	q.counts = append(q.counts, undeliveredCount{
		stream: s, page: pipe.XRangeN(ctx, s, "("+g.LastDeliveredID, "+", streamPage),
	})
	return nil
}

// consumerCount is how many distinct consumer names the groups have.
func (q *groupQueries) consumerCount() (int, error) {
	names := map[string]struct{}{}
	for i, cmd := range q.consumers {
		cs, err := cmd.Result()
		if err != nil {
			return 0, fmt.Errorf("consumers of stream %s: %w", q.grouped[i], err)
		}
		for _, c := range cs {
			names[c.Name] = struct{}{}
		}
	}
	return len(names), nil
}

// relayGroup finds the pipeline's group among a stream's groups.
func relayGroup(gs []redis.XInfoGroup) (redis.XInfoGroup, bool) {
	for _, g := range gs {
		if g.Name == keys.RelayGroup {
			return g, true
		}
	}
	return redis.XInfoGroup{}, false
}

// countAfter counts the entries of stream from first, the answer to
// XRANGE stream (id + COUNT streamPage, onwards.
func countAfter(ctx context.Context, rdb redis.UniversalClient, stream string, first *redis.XMessageSliceCmd) (int64, error) {
	page, err := first.Result()
	var n int64
	for {
		if err != nil {
			return 0, fmt.Errorf("count undelivered entries of stream %s: %w", stream, err)
		}
		n += int64(len(page))
		if len(page) < streamPage {
			return n, nil
		}
		page, err = rdb.XRangeN(ctx, stream, "("+page[len(page)-1].ID, "+", streamPage).Result()
	}
}

// KafkaLag is the consumer group's backlog on a topic and how the group holds it.
type KafkaLag struct {
	// Total is the sum over partitions of high watermark minus the offset the
	// group will read next: its committed offset, or the partition's oldest
	// offset when nothing is committed (or the commit fell behind retention).
	Total int64
	// Partitions is the topic's partition count.
	Partitions int32
	// Members is how many members the group has right now.
	Members int
	// AssignedPartitions is how many distinct partitions of the topic the
	// members hold; less than Partitions means part of the topic is not
	// being consumed (no member yet, or a rebalance under way).
	AssignedPartitions int32
	// State is the group's state as the coordinator reports it ("Stable",
	// "PreparingRebalance", "CompletingRebalance", "Empty", "Dead").
	State string
}

// Kafka reads group's lag on topic and how the group's members hold the
// topic's partitions. client gives the partition leaders (for the offsets);
// admin the topic's partitions, the committed offsets and the group's
// members. A topic that does not exist gives an error wrapping ErrNoTopic.
//
// KEDA's Kafka scaler (with offsetResetPolicy earliest) counts a partition
// without a committed offset from offset 0, that is its whole high watermark.
// Here it counts from the partition's oldest offset instead, which is the same
// until retention deletes messages, and then is what the consumer (which
// starts at sarama.OffsetOldest) really has left to read.
func Kafka(client sarama.Client, admin sarama.ClusterAdmin, topic, group string) (KafkaLag, error) {
	var out KafkaLag
	parts, err := topicPartitions(admin, topic)
	if err != nil {
		return out, err
	}
	out.Partitions = int32(len(parts))

	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	// A group nobody ever joined or committed for has no offsets. Kafka's
	// classic coordinator answers -1 for each partition; kfake (which the
	// tests run against), and possibly other brokers, answer
	// GROUP_ID_NOT_FOUND. A new sale's group is in that state until its
	// first consumer joins, so it is no error.
	if errors.Is(err, sarama.ErrGroupIDNotFound) {
		resp, err = nil, nil
	}
	if err != nil {
		return out, fmt.Errorf("committed offsets of group %s on %s: %w", group, topic, err)
	}
	newest, err := listOffsets(client, topic, parts, sarama.OffsetNewest)
	if err != nil {
		return out, err
	}
	oldest, err := listOffsets(client, topic, parts, sarama.OffsetOldest)
	if err != nil {
		return out, err
	}
	for _, p := range parts {
		from, err := committed(resp, topic, p)
		if err != nil {
			return out, fmt.Errorf("committed offset of group %s on %s/%d: %w", group, topic, p, err)
		}
		// The consumer resets to the oldest offset both when it has no
		// commit and when retention deleted the committed one.
		from = max(from, oldest[p])
		// A commit past the high watermark (the topic was recreated) is no
		// backlog.
		out.Total += max(newest[p]-from, 0)
	}

	if err := describeGroup(admin, topic, group, parts, &out); err != nil {
		return out, err
	}
	return out, nil
}

// committed is the offset the group committed on topic/p, or -1 when it
// committed none (resp is nil when the group does not exist).
func committed(resp *sarama.OffsetFetchResponse, topic string, p int32) (int64, error) {
	if resp == nil {
		return -1, nil
	}
	b := resp.GetBlock(topic, p)
	if b == nil {
		return -1, nil
	}
	if !errors.Is(b.Err, sarama.ErrNoError) {
		return 0, b.Err
	}
	return b.Offset, nil
}

// topicPartitions lists topic's partitions with one metadata request to the
// controller (as KEDA does). Unlike client.RefreshMetadata it neither retries
// a missing topic Metadata.Retry.Max times nor asks the broker to auto-create
// it.
func topicPartitions(admin sarama.ClusterAdmin, topic string) ([]int32, error) {
	mds, err := admin.DescribeTopics([]string{topic})
	if err != nil {
		return nil, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	for _, md := range mds {
		if md.Name != topic {
			continue
		}
		if errors.Is(md.Err, sarama.ErrUnknownTopicOrPartition) {
			return nil, fmt.Errorf("%s: %w", topic, ErrNoTopic)
		}
		if !errors.Is(md.Err, sarama.ErrNoError) {
			return nil, fmt.Errorf("describe topic %s: %w", topic, md.Err)
		}
		parts := make([]int32, 0, len(md.Partitions))
		for _, p := range md.Partitions {
			parts = append(parts, p.ID)
		}
		return parts, nil
	}
	return nil, fmt.Errorf("describe topic %s: no metadata in the answer: %w", topic, ErrNoTopic)
}

// listOffsets returns the offset at `at` (sarama.OffsetNewest: the high
// watermark; sarama.OffsetOldest: the log start offset) of every partition,
// with one ListOffsets request per partition leader, as KEDA does, rather
// than one per partition. A partition the batch could not answer (its leader
// moved, the connection broke) is asked again alone with client.GetOffset,
// which refreshes the metadata and retries once.
func listOffsets(client sarama.Client, topic string, parts []int32, at int64) (map[int32]int64, error) {
	type batch struct {
		broker *sarama.Broker
		req    *sarama.OffsetRequest
		parts  []int32
	}
	batches := map[int32]*batch{}
	out := make(map[int32]int64, len(parts))
	var retry []int32
	for _, p := range parts {
		leader, err := client.Leader(topic, p)
		if err != nil {
			retry = append(retry, p)
			continue
		}
		b := batches[leader.ID()]
		if b == nil {
			b = &batch{broker: leader, req: sarama.NewOffsetRequest(client.Config().Version)}
			batches[leader.ID()] = b
		}
		b.req.AddBlock(topic, p, at, 1)
		b.parts = append(b.parts, p)
	}
	for _, b := range batches {
		resp, err := b.broker.GetAvailableOffsets(b.req)
		for _, p := range b.parts {
			var blk *sarama.OffsetResponseBlock
			if err == nil {
				blk = resp.GetBlock(topic, p)
			}
			if blk == nil || !errors.Is(blk.Err, sarama.ErrNoError) || len(blk.Offsets) != 1 {
				retry = append(retry, p)
				continue
			}
			out[p] = blk.Offsets[0]
		}
	}
	for _, p := range retry {
		off, err := client.GetOffset(topic, p, at)
		if err != nil {
			return nil, fmt.Errorf("%s offset of %s/%d: %w", offsetName(at), topic, p, err)
		}
		out[p] = off
	}
	return out, nil
}

func offsetName(at int64) string {
	if at == sarama.OffsetOldest {
		return "oldest"
	}
	return "newest"
}

// describeGroup fills in the group's state, members and the partitions of
// topic they were assigned, decoded from each member's assignment.
func describeGroup(admin sarama.ClusterAdmin, topic, group string, parts []int32, out *KafkaLag) error {
	descs, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return fmt.Errorf("describe group %s: %w", group, err)
	}
	known := make(map[int32]bool, len(parts))
	for _, p := range parts {
		known[p] = true
	}
	assigned := map[int32]bool{}
	for _, d := range descs {
		if d.GroupId != group {
			continue
		}
		// A group nobody joined or committed for is "Dead" without an error
		// on the DescribeGroups versions sarama speaks; newer brokers may say
		// GROUP_ID_NOT_FOUND. Both mean no members.
		if errors.Is(d.Err, sarama.ErrGroupIDNotFound) {
			out.State = "Dead"
			return nil
		}
		if !errors.Is(d.Err, sarama.ErrNoError) {
			return fmt.Errorf("describe group %s: %w", group, d.Err)
		}
		out.State = d.State
		out.Members = len(d.Members)
		for id, m := range d.Members {
			a, err := m.GetMemberAssignment()
			if err != nil {
				return fmt.Errorf("assignment of member %s of group %s: %w", id, group, err)
			}
			if a == nil { // joined, but the leader has not assigned yet
				continue
			}
			for _, p := range a.Topics[topic] {
				if known[p] {
					assigned[p] = true
				}
			}
		}
	}
	out.AssignedPartitions = int32(len(assigned))
	return nil
}
