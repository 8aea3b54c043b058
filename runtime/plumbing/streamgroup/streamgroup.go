// Package streamgroup reads a SKU's order stream as one consumer of the
// relay consumer group, the way both the Kafka relay and the Redis-only sink
// need it: first the entries this consumer had in hand when it last died,
// then entries idle too long in a dead consumer's hands, then new entries.
// Done acknowledges and deletes entries (and files dead letters) in one
// MULTI, so the stream holds exactly the orders still in flight.
//
// Loop is the one consumer loop both run: read, back off while Redis fails,
// hand each batch to the caller's Handler, acknowledge with retry, and on
// shutdown finish the batch in hand within a grace period or leave it
// pending for the next reader.
package streamgroup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reader reads one stream as one consumer.
type Reader struct {
	RDB      redis.UniversalClient
	Stream   string
	Group    string
	Consumer string
	// Count is the most entries one read returns (default 500).
	Count int64
	// Block is how long a read waits for new entries (default 1s).
	Block time.Duration
	// MinIdle is how long an entry must sit unacknowledged in another
	// consumer's hands before this one claims it (default 30s).
	MinIdle time.Duration
	// ClaimInterval is how often idle entries are looked for (default MinIdle/2, at most 5s).
	ClaimInterval time.Duration
	// WaitReplicas, when above 0, hands entries on only once that many
	// replicas acknowledged them (WAIT on the reader's own connection, see
	// replicas.go): an order that never reached a replica never reaches
	// MySQL or Kafka, so a failover cannot sell its unit twice.
	WaitReplicas int
	// WaitTimeout bounds the first WAIT of a batch (default 1s); each
	// following one waits twice as long, up to MaxWaitTimeout.
	WaitTimeout time.Duration
	// Replication, when set, counts the waits and the entries held back.
	Replication *ReplicaMetrics

	started     bool
	ownDone     bool
	claimCursor string
	nextClaim   time.Time
	// Claimed counts the entries taken over from other consumers.
	Claimed int64
	wait    replicaWait
}

func (r *Reader) defaults() {
	if r.Count <= 0 {
		r.Count = 500
	}
	if r.Block <= 0 {
		r.Block = time.Second
	}
	if r.MinIdle <= 0 {
		r.MinIdle = 30 * time.Second
	}
	if r.ClaimInterval <= 0 {
		r.ClaimInterval = min(r.MinIdle/2, 5*time.Second)
	}
	if r.claimCursor == "" {
		r.claimCursor = "0-0"
	}
	if r.WaitTimeout <= 0 {
		r.WaitTimeout = time.Second
	}
}

// EnsureGroup creates the stream and its group from the first entry if
// either is missing (warm-up normally did it).
func EnsureGroup(ctx context.Context, rdb redis.UniversalClient, stream, group string) error {
	err := rdb.XGroupCreateMkStream(ctx, stream, group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("create consumer group %s on %s: %w", group, stream, err)
	}
	return nil
}

// Next returns the next entries to process, possibly none (after Block).
// Entries whose body is gone (deleted while pending) come with nil Values:
// the caller only acknowledges them. With WaitReplicas, Next returns a
// *ReplicasBehind error while the entries it read wait for the replicas.
func (r *Reader) Next(ctx context.Context) ([]redis.XMessage, error) {
	r.defaults()
	if r.WaitReplicas > 0 {
		return r.nextReplicated(ctx)
	}
	return r.next(ctx, r.RDB)
}

// streamCmds are the commands a Reader reads with: the shared client, or
// its own connection when it waits for replicas.
type streamCmds interface {
	XReadGroup(ctx context.Context, a *redis.XReadGroupArgs) *redis.XStreamSliceCmd
	XAutoClaim(ctx context.Context, a *redis.XAutoClaimArgs) *redis.XAutoClaimCmd
	XClaimJustID(ctx context.Context, a *redis.XClaimArgs) *redis.StringSliceCmd
}

func (r *Reader) next(ctx context.Context, c streamCmds) ([]redis.XMessage, error) {
	if !r.started {
		if err := EnsureGroup(ctx, r.RDB, r.Stream, r.Group); err != nil {
			return nil, err
		}
		r.started = true
	}
	if !r.ownDone {
		// Our own pending entries, from a previous life under the same name.
		msgs, err := r.read(ctx, c, "0", 0)
		if err != nil {
			return nil, err
		}
		if len(msgs) > 0 {
			return msgs, r.ownHistory(ctx, c, msgs)
		}
		r.ownDone = true
	}
	if now := time.Now(); !now.Before(r.nextClaim) {
		msgs, cursor, err := c.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: r.Stream, Group: r.Group, Consumer: r.Consumer,
			MinIdle: r.MinIdle, Start: r.claimCursor, Count: r.Count,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if redis.HasErrorPrefix(err, "NOGROUP") {
				r.started = false
			}
			return nil, fmt.Errorf("claim idle entries of %s: %w", r.Stream, err)
		}
		r.claimCursor = cursor
		if cursor == "0-0" || cursor == "" {
			r.claimCursor = "0-0"
			r.nextClaim = now.Add(r.ClaimInterval)
		}
		if len(msgs) > 0 {
			r.Claimed += int64(len(msgs))
			return msgs, nil
		}
	}
	return r.read(ctx, c, ">", r.Block)
}

func (r *Reader) read(ctx context.Context, c streamCmds, id string, block time.Duration) ([]redis.XMessage, error) {
	args := &redis.XReadGroupArgs{
		Group: r.Group, Consumer: r.Consumer, Streams: []string{r.Stream, id}, Count: r.Count, Block: block,
	}
	if block == 0 {
		args.Block = -1 // no BLOCK argument: pending reads never block
	}
	res, err := c.XReadGroup(ctx, args).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if redis.HasErrorPrefix(err, "NOGROUP") {
			r.started = false
		}
		return nil, fmt.Errorf("read %s: %w", r.Stream, err)
	}
	var out []redis.XMessage
	for _, s := range res {
		out = append(out, s.Messages...)
	}
	return out, nil
}

// DeadEntry is a stream entry that can never be stored.
type DeadEntry struct {
	Msg    redis.XMessage
	Reason string
	// Attempts made before giving up.
	Attempts int
}

// Done acknowledges and deletes ids and appends dead entries to the
// dead-letter stream dlq, all in one MULTI (every key shares the SKU's hash
// tag): an entry is never both gone and unrecorded.
func Done(ctx context.Context, rdb redis.UniversalClient, stream, group, dlq string, ids []string, dead []DeadEntry) error {
	if len(ids) == 0 && len(dead) == 0 {
		return nil
	}
	all := make([]string, 0, len(ids)+len(dead))
	all = append(all, ids...)
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range dead {
			vals := make([]any, 0, 2*len(d.Msg.Values)+8)
			vals = append(vals, "source-id", d.Msg.ID, "error", d.Reason, "attempts", d.Attempts,
				"at", time.Now().UnixMilli())
			for k, v := range d.Msg.Values {
				vals = append(vals, "f:"+k, v)
			}
			p.XAdd(ctx, &redis.XAddArgs{Stream: dlq, Values: vals})
			all = append(all, d.Msg.ID)
		}
		p.XAck(ctx, stream, group, all...)
		p.XDel(ctx, stream, all...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge %d entries of %s: %w", len(all), stream, err)
	}
	return nil
}
