// Package switches owns a sale's switches: the Redis hash every seckill pod
// polls to learn whether purchases are paused, closed early, or held at the
// operator's go-live gate. The operator and `flashsale warm` write them; the
// seckill pods read them. An absent field means off, so a sale warmed
// without an operator (no held field) is never held.
package switches

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Fields of the control hash, in the order Queue reads them.
const (
	fieldPaused = "paused"
	fieldClosed = "closed"
	fieldHeld   = "held"
)

// State is the sale's switches at one instant.
type State struct {
	// Paused: purchases answer 503 PAUSED (spec.paused).
	Paused bool
	// Closed: purchases answer 410 ENDED (the sale's end, or an early close).
	Closed bool
	// Held: the go-live gate is shut; purchases answer 503 NOT_READY even
	// after the start, until every data-plane pod is ready.
	Held bool
}

// SetPaused flips the pause switch.
func SetPaused(ctx context.Context, rdb redis.UniversalClient, saleKey string, on bool) error {
	return set(ctx, rdb, saleKey, fieldPaused, on)
}

// SetClosed flips the early-close switch.
func SetClosed(ctx context.Context, rdb redis.UniversalClient, saleKey string, on bool) error {
	return set(ctx, rdb, saleKey, fieldClosed, on)
}

// SetHeld flips the go-live gate.
func SetHeld(ctx context.Context, rdb redis.UniversalClient, saleKey string, on bool) error {
	return set(ctx, rdb, saleKey, fieldHeld, on)
}

func set(ctx context.Context, rdb redis.UniversalClient, saleKey, field string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := rdb.HSet(ctx, keys.ForSale(saleKey).Control, field, v).Err(); err != nil {
		return fmt.Errorf("set %s switch of sale %s: %w", field, saleKey, err)
	}
	return nil
}

// Queue adds the read of the switches to pipe, so a pod reads them in the
// same round trip as its stock counters; the returned func parses the reply
// once the pipeline has run.
func Queue(ctx context.Context, pipe redis.Pipeliner, saleKey string) func() State {
	cmd := pipe.HMGet(ctx, keys.ForSale(saleKey).Control, fieldPaused, fieldClosed, fieldHeld)
	return func() State { return parse(cmd.Val()) }
}

// Get reads the switches in one call.
func Get(ctx context.Context, rdb redis.UniversalClient, saleKey string) (State, error) {
	vals, err := rdb.HMGet(ctx, keys.ForSale(saleKey).Control, fieldPaused, fieldClosed, fieldHeld).Result()
	if err != nil {
		return State{}, fmt.Errorf("read switches of sale %s: %w", saleKey, err)
	}
	return parse(vals), nil
}

func parse(vals []any) State {
	on := func(i int) bool { return len(vals) > i && vals[i] == "1" }
	return State{Paused: on(0), Closed: on(1), Held: on(2)}
}
