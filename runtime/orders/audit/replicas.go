package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
)

// Waiting for replicas before a repair stores a stream entry.
//
// With spec.redis.durability.replicas the worker hands an order on to MySQL
// only once that many replicas have its stream entry (streamgroup's
// WaitReplicas): a primary that dies before then takes the order with it,
// and its buyer was told "durable": false. While a replica lags, the worker
// holds the entries pending, so they look stuck to the audit. Were the
// repair to store them in MySQL anyway, a failover to that replica would
// sell their units a second time: the promoted replica never knew them. So
// the repair waits as the worker does: one write on its own connection to
// the master of the stream's slot, made after the entries' XADDs (the
// audit read them already), then `WAIT n timeout`, which counts the
// replicas whose offset covers that write and so the entries.

// DefaultWaitTimeout bounds the repair's WAIT when Config.WaitTimeout is 0.
const DefaultWaitTimeout = 2 * time.Second

// DurabilityReplicas is the number of replicas sale's purchases wait for
// (spec.redis.durability.replicas): the repair's WaitReplicas.
func DurabilityReplicas(sale *v1alpha1.FlashSale) int {
	if d := sale.Spec.Redis.Durability; d != nil {
		return int(d.Replicas)
	}
	return 0
}

// ReplicasShort is the reason a repair left entries where they are: fewer
// replicas than asked acknowledged them.
type ReplicasShort struct {
	Stream      string
	Acked, Want int
	Waited      time.Duration
}

func (e *ReplicasShort) Error() string {
	return fmt.Sprintf("not stored: only %d of %d replica(s) acknowledged the entries of %s within %s "+
		"(a failover now would sell their units again; the repair stores them once the replicas have them)",
		e.Acked, e.Want, e.Stream, e.Waited)
}

// replicated returns nil once WaitReplicas replicas have every entry the
// stream held when the audit read it, a *ReplicasShort when fewer
// acknowledge within WaitTimeout, or the error that kept it from asking.
func (a *Auditor) replicated(ctx context.Context, stream string) error {
	if a.cfg.WaitReplicas <= 0 {
		return nil
	}
	// A connection of its own to the server holding the stream: WAIT
	// counts the replicas of one connection's writes.
	m, err := redisconn.MasterFor(ctx, a.cfg.Redis, stream, false)
	if err != nil {
		return err
	}
	c := m.Conn()
	defer func() { _ = c.Close() }()
	// A replicated write that leaves nothing behind: a key of the stream's
	// slot (its hash tag), set and deleted in one transaction.
	marker := stream + ":repair-wait"
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, marker, "1", 0)
		p.Del(ctx, marker)
		return nil
	}); err != nil {
		return fmt.Errorf("write before waiting for the replicas of %s: %w", stream, err)
	}
	n, err := c.Wait(ctx, a.cfg.WaitReplicas, a.cfg.WaitTimeout).Result()
	if err != nil {
		return fmt.Errorf("wait for %d replica(s) of %s: %w", a.cfg.WaitReplicas, stream, err)
	}
	if int(n) < a.cfg.WaitReplicas {
		return &ReplicasShort{Stream: stream, Acked: int(n), Want: a.cfg.WaitReplicas, Waited: a.cfg.WaitTimeout}
	}
	return nil
}
