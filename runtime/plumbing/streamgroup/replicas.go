package streamgroup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
)

// MaxWaitTimeout caps the WAIT of a batch held back for its replicas (or
// WaitTimeout, if longer). WAIT returns as soon as the replicas acknowledge,
// so a long timeout costs no latency once they are back; it only bounds how
// long a shutdown may wait for the WAIT in flight.
const MaxWaitTimeout = 5 * time.Second

// Waiting for replicas.
//
// The purchase answers 202 when the primary ran its script (or, with
// spec.redis.durability, once replicas acknowledged it, or "durable": false
// when they did not in time). An order the worker moves to MySQL or Kafka
// before a replica has it is a unit sold twice if the primary then dies: the
// promoted replica never knew the order and sells its unit again. So with
// WaitReplicas the reader hands entries on only after `WAIT n timeout` on
// its own connection counted n replicas. WAIT covers every write the
// connection made before it; an XREADGROUP (or XAUTOCLAIM) that returned
// entries is itself a replicated write (it moves them into the group's
// pending list), made after the XADDs of those entries, so a replica that
// acknowledged it has the entries. Until then the entries stay in hand,
// pending in the group: a crash loses nothing, and if the primary dies they
// die with it, as their buyers were told ("durable": false; polling answers
// 404 after the failover).

// replicaWait is a Reader's state while it waits for replicas.
type replicaWait struct {
	conn    *redis.Conn // this reader's own connection
	reload  bool        // the connection failed: refresh the cluster's slot map first
	held    []redis.XMessage
	tries   int  // WAITs made for held
	counted bool // held is counted in Replication.Held
}

// ReplicasBehind is Next's error while the entries it read wait for their
// replicas; Next tries again (a longer WAIT) when called again.
type ReplicasBehind struct {
	Held, Acked, Want int
	Waited            time.Duration
}

func (e *ReplicasBehind) Error() string {
	return fmt.Sprintf("%d entries held back: %d of %d replica(s) acknowledged them within %s", e.Held, e.Acked, e.Want, e.Waited)
}

// ReplicaMetrics count the waits of the readers of one worker.
type ReplicaMetrics struct {
	// Waits counts WAITs by result: acknowledged, short (fewer replicas
	// than asked in time: the entries stay held back), error.
	Waits *prometheus.CounterVec
	// Held is the number of entries read but held back until enough
	// replicas have them.
	Held prometheus.Gauge
}

// NewReplicaMetrics creates the metrics and registers them on reg (if not nil).
func NewReplicaMetrics(reg prometheus.Registerer) *ReplicaMetrics {
	m := &ReplicaMetrics{
		Waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flashsale_worker_replication_waits_total",
			Help: "WAITs for the replicas of the orders read from the streams, by result (acknowledged, short: held back, error).",
		}, []string{"result"}),
		Held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flashsale_worker_orders_held_for_replicas",
			Help: "Orders read from the streams and held back until enough replicas have them (--wait-replicas).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Waits, m.Held)
	}
	return m
}

// nextReplicated is Next with WaitReplicas: it reads on the reader's own
// connection, then releases the entries once the replicas have them.
func (r *Reader) nextReplicated(ctx context.Context) ([]redis.XMessage, error) {
	w := &r.wait
	if len(w.held) == 0 {
		c, err := r.conn(ctx)
		if err != nil {
			return nil, err
		}
		msgs, err := r.next(ctx, c)
		if err != nil {
			r.dropConn()
			return nil, err
		}
		if !anyBody(msgs) {
			return msgs, nil // nothing to hand on: acknowledging needs no replica
		}
		w.held, w.tries = msgs, 0
	}
	return r.release(ctx)
}

// release WAITs for the held entries' replicas and returns the entries once
// enough acknowledged. Each short WAIT is twice as long as the one before.
func (r *Reader) release(ctx context.Context) ([]redis.XMessage, error) {
	w := &r.wait
	// At most a quarter of MinIdle, so that keep refreshes the held
	// entries long before another consumer may claim them.
	limit := min(max(MaxWaitTimeout, r.WaitTimeout), max(r.MinIdle/4, r.WaitTimeout))
	timeout := min(r.WaitTimeout<<min(w.tries, 8), limit)
	w.tries++
	start := time.Now()
	n, err := w.conn.Wait(ctx, r.WaitReplicas, timeout).Result()
	if err != nil {
		r.count("error")
		r.dropConn()
		return nil, fmt.Errorf("wait for %d replica(s) of %s: %w", r.WaitReplicas, r.Stream, err)
	}
	if int(n) >= r.WaitReplicas {
		r.count("acknowledged")
		msgs := w.held
		r.unhold()
		return msgs, nil
	}
	r.count("short")
	if err := r.keep(ctx); err != nil {
		r.dropConn()
		return nil, err
	}
	if !w.counted && r.Replication != nil {
		r.Replication.Held.Add(float64(len(w.held)))
		w.counted = true
	}
	// WAIT blocks for its whole timeout when short; should a server answer
	// at once, do not spin.
	if rest := timeout - time.Since(start); rest > timeout/2 {
		t := time.NewTimer(rest)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil, &ReplicasBehind{Held: len(w.held), Acked: int(n), Want: r.WaitReplicas, Waited: timeout}
}

// ownHistory makes a read of this consumer's own pending entries a
// replicated write: such a read changes nothing a replica would need, so
// (depending on the server version) the connection's offset may not cover
// the entries, which were delivered by an earlier read on another
// connection. Claiming them to the same consumer (JUSTID: the delivery count
// stays) is propagated, after their XADDs. Without WaitReplicas it does
// nothing.
func (r *Reader) ownHistory(ctx context.Context, c streamCmds, msgs []redis.XMessage) error {
	if r.WaitReplicas <= 0 {
		return nil
	}
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.Values != nil {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	err := c.XClaimJustID(ctx, &redis.XClaimArgs{Stream: r.Stream, Group: r.Group, Consumer: r.Consumer, Messages: ids}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("claim own pending entries of %s: %w", r.Stream, err)
	}
	return nil
}

// keep resets the idle time of the held entries once they sat half of
// MinIdle: held back for their replicas, they are in hand, not abandoned,
// and another consumer claiming them would only wait for the same replicas
// and hand them on a second time.
func (r *Reader) keep(ctx context.Context) error {
	w := &r.wait
	ids := make([]string, 0, len(w.held))
	for _, m := range w.held {
		ids = append(ids, m.ID)
	}
	err := w.conn.XClaimJustID(ctx, &redis.XClaimArgs{Stream: r.Stream, Group: r.Group, Consumer: r.Consumer,
		MinIdle: r.MinIdle / 2, Messages: ids}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("keep the held entries of %s: %w", r.Stream, err)
	}
	return nil
}

// conn is the reader's own connection (to the master of the stream's slot
// on a cluster), opened on first use and after a failure.
func (r *Reader) conn(ctx context.Context) (*redis.Conn, error) {
	w := &r.wait
	if w.conn != nil {
		return w.conn, nil
	}
	m, err := redisconn.MasterFor(ctx, r.RDB, r.Stream, w.reload)
	if err != nil {
		return nil, err
	}
	w.conn = m.Conn()
	w.reload = false
	return w.conn, nil
}

// dropConn closes the connection after a failure. The entries in hand stay
// pending in the group and are read again from this consumer's own pending
// entries, on the next connection: a new connection's WAIT would not cover
// what the old one read.
func (r *Reader) dropConn() {
	w := &r.wait
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
	w.reload = true
	r.unhold()
	r.ownDone = false
}

func (r *Reader) unhold() {
	w := &r.wait
	if w.counted && r.Replication != nil {
		r.Replication.Held.Sub(float64(len(w.held)))
	}
	w.held, w.tries, w.counted = nil, 0, false
}

func (r *Reader) count(result string) {
	if r.Replication != nil {
		r.Replication.Waits.WithLabelValues(result).Inc()
	}
}

// Close releases the reader's own connection; the entries it held stay
// pending in the group.
func (r *Reader) Close() {
	if r.wait.conn != nil || len(r.wait.held) > 0 {
		r.dropConn()
	}
}

func anyBody(msgs []redis.XMessage) bool {
	for _, m := range msgs {
		if m.Values != nil {
			return true
		}
	}
	return false
}
