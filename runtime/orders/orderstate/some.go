package orderstate

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// QueueSome adds the read of the records of orderNos (of the bucket k of a
// SKU) to pipe, like QueueAll for a few orders: the audit reads again,
// at the end of a run, the orders its snapshot could not settle. The
// returned func parses the reply once the pipeline has run; an order the
// hash does not hold is in neither map.
func QueueSome(ctx context.Context, pipe redis.Pipeliner, k keys.SKU, orderNos []string) func() (Records, error) {
	sku := k.ID
	recs := Records{ByOrder: map[string]Record{}, Malformed: map[string]string{}}
	if len(orderNos) == 0 {
		return func() (Records, error) { return recs, nil }
	}
	cmd := pipe.HMGet(ctx, k.Orders, orderNos...)
	return func() (Records, error) {
		vals, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return Records{}, fmt.Errorf("read %d order records of SKU %s: %w", len(orderNos), sku, err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok || i >= len(orderNos) {
				continue
			}
			rec, err := parse(s)
			if err != nil {
				recs.Malformed[orderNos[i]] = s
				continue
			}
			recs.ByOrder[orderNos[i]] = rec
		}
		return recs, nil
	}
}
