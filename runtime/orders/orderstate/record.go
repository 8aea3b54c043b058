package orderstate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Record is what Redis shows about one order: the status result polling
// answers and the buyer who may see it.
type Record struct {
	// Status is queued until the order is durable in MySQL, then created,
	// then paid or cancelled.
	Status order.Status
	// User is the buyer who made the order.
	User string
}

// Behind says whether the record lags an order whose status is now actual,
// by the forward-only order queued → created → paid | cancelled that
// advance.lua enforces (paid and cancelled are both final).
func (r Record) Behind(actual order.Status) bool {
	return rank(r.Status) < rank(actual)
}

func rank(s order.Status) int {
	switch s {
	case order.Queued:
		return 0
	case order.Created:
		return 1
	case order.Paid, order.Cancelled:
		return 2
	}
	return -1
}

// Lookup reads the record of order orderNo of SKU sku (split into n
// buckets) of sale saleKey ("namespace/name"), in the bucket its order
// number names. ok is false when Redis knows no such order: it was never
// admitted (its number names a bucket the SKU does not have, say), or the
// sale's keys are gone.
func Lookup(ctx context.Context, rdb redis.HashCmdable, saleKey, sku string, n int, orderNo string) (rec Record, ok bool, err error) {
	if b, _ := keys.BucketOf(orderNo); b >= max(n, 1) {
		return Record{}, false, nil
	}
	v, err := rdb.HGet(ctx, keys.ForOrder(saleKey, sku, orderNo, n).Orders, orderNo).Result()
	if errors.Is(err, redis.Nil) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("look up order %s: %w", orderNo, err)
	}
	rec, err = parse(v)
	if err != nil {
		return Record{}, false, fmt.Errorf("look up order %s: %w", orderNo, err)
	}
	return rec, true, nil
}

// Records are the records of every order of one bucket of a SKU.
type Records struct {
	// ByOrder are the records by order number.
	ByOrder map[string]Record
	// Malformed are the values no writer makes (a hand edit, a foreign
	// writer), by order number: for the audit to report, not to guess at.
	Malformed map[string]string
}

// QueueAll adds the read of every record of the bucket k (of a SKU) to
// pipe, so the audit reads them in the same MULTI as the bucket's other
// keys; the returned func parses the reply once the pipeline has run.
func QueueAll(ctx context.Context, pipe redis.Pipeliner, k keys.SKU) func() (Records, error) {
	sku := k.ID
	cmd := pipe.HGetAll(ctx, k.Orders)
	return func() (Records, error) {
		vals, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return Records{}, fmt.Errorf("read order records of SKU %s: %w", sku, err)
		}
		recs := Records{ByOrder: make(map[string]Record, len(vals)), Malformed: map[string]string{}}
		for orderNo, v := range vals {
			rec, err := parse(v)
			if err != nil {
				recs.Malformed[orderNo] = v
				continue
			}
			recs.ByOrder[orderNo] = rec
		}
		return recs, nil
	}
}

// parse reads one record; see the package documentation for its format.
func parse(v string) (Record, error) {
	word, user, ok := strings.Cut(v, " ")
	if !ok || user == "" {
		return Record{}, fmt.Errorf("malformed order record %q: want \"<status> <user>\"", v)
	}
	st, err := order.ParseStatus(word)
	if err != nil {
		return Record{}, fmt.Errorf("malformed order record %q: %w", v, err)
	}
	return Record{Status: st, User: user}, nil
}
