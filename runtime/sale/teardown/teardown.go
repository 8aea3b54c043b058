// Package teardown removes what a sale left in Redis and Kafka once it has
// settled (or was deleted): the operator's cleanup step, and the demo's.
// Both calls are idempotent: what is already gone counts as removed.
package teardown

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// scanCount is how many keys one SCAN step looks at.
const scanCount = 1000

// DeleteKeys unlinks every key of the sale (and of no other sale) on every
// master of a cluster, or on the standalone server, and reports how many.
//
// The SKUs' keys go first, on every master, and the sale-wide keys (the
// switches hash among them) only then: a seckill pod still serving reads a
// missing switches hash as "open", so while any stock counter exists the
// closed switch must still be there to refuse buyers. Once the counters are
// gone the purchase script refuses on its own (NOT_WARMED).
func DeleteKeys(ctx context.Context, rdb redis.UniversalClient, sale string) (int64, error) {
	var n atomic.Int64
	patterns := keys.Patterns(sale)
	perSKU, saleWide := patterns[1], patterns[0]
	for _, pattern := range []string{perSKU, saleWide} {
		sweep := func(ctx context.Context, c redis.Cmdable) error {
			iter := c.Scan(ctx, 0, pattern, scanCount).Iterator()
			for iter.Next(ctx) {
				// One key per UNLINK: keys of different SKUs live in
				// different slots, and a multi-key call would be CROSSSLOT.
				if err := c.Unlink(ctx, iter.Val()).Err(); err != nil {
					return fmt.Errorf("unlink %s: %w", iter.Val(), err)
				}
				n.Add(1)
			}
			if err := iter.Err(); err != nil {
				return fmt.Errorf("scan %s: %w", pattern, err)
			}
			return nil
		}
		var err error
		if cc, ok := rdb.(*redis.ClusterClient); ok {
			err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return sweep(ctx, node) })
		} else {
			err = sweep(ctx, rdb)
		}
		if err != nil {
			return n.Load(), fmt.Errorf("delete keys of sale %s: %w", sale, err)
		}
	}
	return n.Load(), nil
}

// DeleteTopics deletes the sale's order topic and its dead-letter topic.
// A topic that does not exist is not an error.
func DeleteTopics(admin sarama.ClusterAdmin, sale string) error {
	var errs []error
	for _, topic := range []string{keys.Topic(sale), keys.DeadLetterTopic(sale)} {
		err := admin.DeleteTopic(topic)
		if err == nil || errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			continue
		}
		var te *sarama.TopicError
		if errors.As(err, &te) && errors.Is(te.Err, sarama.ErrUnknownTopicOrPartition) {
			continue
		}
		errs = append(errs, fmt.Errorf("delete topic %s: %w", topic, err))
	}
	return errors.Join(errs...)
}
