package seckill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/rediscap"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
)

// MetricDurabilityTimeouts counts admitted orders answered 202 with
// "durable": false: the wait for replicas or the AOF did not confirm them.
const MetricDurabilityTimeouts = "flashsale_seckill_durability_timeouts_total"

// Durability is what an admitted purchase waits for before its 202
// (spec.redis.durability). Redis replicates asynchronously: without a wait,
// a primary that dies right after answering takes the order with it.
type Durability struct {
	// Replicas that must acknowledge the purchase's writes (WAIT); 0: none.
	Replicas int
	// AOF waits for the primary's append-only file fsync (WAITAOF, Redis 7.2+).
	AOF bool
	// Timeout bounds the whole wait (default 250 ms).
	Timeout time.Duration
}

// The bounds of Durability.Timeout (as the CRD's on
// spec.redis.durability.timeout). WAIT counts whole milliseconds; and a wait
// must end well within purchaseTimeout (3 s), or every timed-out wait would
// be answered 503 instead of 202 "durable": false.
const (
	MinDurabilityTimeout = time.Millisecond
	MaxDurabilityTimeout = 2 * time.Second
)

// Enabled reports whether purchases wait for anything.
func (d Durability) Enabled() bool { return d.Replicas > 0 || d.AOF }

// DurabilityOf reads spec.redis.durability of fs.
func DurabilityOf(fs *v1alpha1.FlashSale) Durability {
	d := fs.Spec.Redis.Durability
	if d == nil {
		return Durability{}
	}
	out := Durability{Replicas: int(d.Replicas), AOF: d.AOF, Timeout: v1alpha1.DefaultDurabilityTimeout}
	if d.Timeout != nil && d.Timeout.Duration > 0 {
		out.Timeout = d.Timeout.Duration
	}
	return out
}

// Why an admitted order was answered "durable": false.
const (
	notDurableReplicas = "replicas" // fewer replicas than asked acknowledged within the timeout
	notDurableAOF      = "aof"      // the AOF fsync was not confirmed within the timeout
	notDurableError    = "error"    // the wait itself failed (the connection broke after the script ran)
)

// ack is what the wait found for one purchase.
type ack struct {
	durable bool
	reason  string // when not durable
	err     error
}

// admission is the script's answer plus, when the sale asks for durability
// and the script admitted an order, whether the wait confirmed it.
type admission struct {
	purchase.Result
	durable *bool
}

// ackKey carries a purchase's *ack from the handler through purchase.Script
// (which knows nothing of durability) down to durableClient.EvalSha.
type ackKey struct{}

// purchase runs the purchase script; with durability asked for, an
// admitted or replayed order also says whether the wait confirmed it.
// A replay is waited for like a new order: the first answer may have been
// lost while its wait still ran (a 503 after purchaseTimeout, a dropped
// connection), and the retry's 202 must not promise more than that wait.
func (s *Server) purchase(ctx context.Context, req purchase.Request) (admission, error) {
	if s.durable == nil {
		res, err := s.script.Purchase(ctx, req)
		return admission{Result: res}, err
	}
	a := &ack{}
	res, err := s.script.Purchase(context.WithValue(ctx, ackKey{}, a), req)
	adm := admission{Result: res}
	if err == nil && (res.Outcome == purchase.Admitted || res.Outcome == purchase.Replayed) {
		durable := a.durable
		adm.durable = &durable
		if !durable {
			s.durable.notDurable(req.SKU, res.OrderNo, a)
		}
	}
	return adm, err
}

// newScript returns the sale's purchase script: straight on cfg.Redis, or,
// when the sale asks for durability, through a durableClient whose own
// batching replaces the autopipeliner (a WAIT must follow its script on the
// very same connection, which the autopipeliner does not promise).
func (s *Server) newScript(cfg Config) (*purchase.Script, error) {
	if !cfg.Durability.Enabled() {
		return purchase.New(cfg.Redis, s.saleKey, purchase.Options{AutoPipeline: cfg.AutoPipeline, Batch: cfg.Batch,
			Observe: s.metrics.observeRedis})
	}
	d := cfg.Durability
	if d.Timeout <= 0 {
		d.Timeout = v1alpha1.DefaultDurabilityTimeout
	}
	switch cfg.Redis.(type) {
	case *redis.Client, *redis.ClusterClient:
	default:
		return nil, fmt.Errorf("seckill: durability needs a standalone or cluster Redis client, not %T", cfg.Redis)
	}
	s.durable = newDurableClient(cfg.Redis, d, s.saleKey, s.metrics, s.log)
	return purchase.New(s.durable, s.saleKey, purchase.Options{Observe: s.metrics.observeRedis})
}

// Batching of durable purchases, per master node.
const (
	// maxInFlight batches per node: each holds one pooled connection.
	maxInFlight = 8
	// maxBatch purchases share one pipeline and one WAIT.
	maxBatch = 128
	// maxQueued purchases wait per node at most, for the reason of
	// purchase.MaxQueued (a stall's backlog is refused at once, unsent,
	// rather than admitted for buyers who left): 16 batches' worth.
	maxQueued = 16 * maxBatch
)

// durableClient runs the purchase script and then waits for durability on
// the same connection: WAIT and WAITAOF only cover the writes of the
// connection they are sent on. Concurrent purchases on one node are
// coalesced: a pipeline of scripts, then one WAIT for all of them (group
// commit). Everything but EvalSha goes straight to the embedded client.
type durableClient struct {
	redis.UniversalClient
	d       Durability
	saleKey string

	mu    sync.Mutex
	nodes map[string]*durableNode // by address

	timeouts *prometheus.CounterVec
	observe  func(op string, d time.Duration, err error)
	log      *slog.Logger
	// lastLog and skipped sample the "not durable" log: one line per
	// logEvery at most, saying how many it stands for.
	lastLog atomic.Int64
	skipped atomic.Int64
}

// logEvery is the most often a "not durable" order is logged.
const logEvery = 10 * time.Second

func newDurableClient(rdb redis.UniversalClient, d Durability, saleKey string, m *Metrics, log *slog.Logger) *durableClient {
	c := &durableClient{UniversalClient: rdb, d: d, saleKey: saleKey, nodes: map[string]*durableNode{},
		observe: m.observeRedis, log: log,
		timeouts: m.notDurable,
	}
	return c
}

// notDurable counts an order the wait did not confirm, and logs it (sampled).
func (c *durableClient) notDurable(sku, orderNo string, a *ack) {
	c.timeouts.WithLabelValues(c.saleKey, a.reason).Inc()
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if now-last < int64(logEvery) || !c.lastLog.CompareAndSwap(last, now) {
		c.skipped.Add(1)
		return
	}
	c.log.Warn(`Order answered 202 with "durable": false: it exists on the primary only and a failover may lose it`,
		"sale", c.saleKey, "sku", sku, "order", orderNo, "reason", a.reason, "err", a.err,
		"replicas", c.d.Replicas, "aof", c.d.AOF, "timeout", c.d.Timeout,
		"alsoNotDurableSinceLastLog", c.skipped.Swap(0))
}

// durableCall is one purchase waiting for its batch.
type durableCall struct {
	// ctx is the caller's: a call whose caller gave up before it was put in
	// a batch is never sent (as in package purchase's batcher).
	ctx  context.Context
	sha  string
	keys []string
	args []any
	res  any
	err  error
	ack  ack
	done chan struct{}
}

// EvalSha runs the script on the master of keys[0] and, if it wrote, waits
// for durability before returning; the wait's outcome goes to the *ack in
// ctx. A caller giving up early (ctx) leaves the call to finish on its own:
// its outcome is unknown to the buyer, who retries with the same token.
func (c *durableClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if len(keys) == 0 {
		return redis.NewCmdResult(nil, errors.New("seckill: the purchase script needs keys"))
	}
	n, err := c.node(ctx, keys[0])
	if err != nil {
		return redis.NewCmdResult(nil, err)
	}
	call := &durableCall{ctx: ctx, sha: sha, keys: keys, args: args, done: make(chan struct{})}
	if !n.submit(call) {
		return redis.NewCmdResult(nil, purchase.ErrBusy)
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		return redis.NewCmdResult(nil, ctx.Err())
	}
	if a, ok := ctx.Value(ackKey{}).(*ack); ok {
		*a = call.ack
	}
	return redis.NewCmdResult(call.res, call.err)
}

// node returns the batcher of the master serving key.
func (c *durableClient) node(ctx context.Context, key string) (*durableNode, error) {
	client, err := redisconn.MasterFor(ctx, c.UniversalClient, key, false)
	if err != nil {
		return nil, err
	}
	addr := client.Options().Addr
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[addr]
	if !ok || n.client != client {
		n = &durableNode{owner: c, client: client}
		c.nodes[addr] = n
	}
	return n, nil
}

// durableNode batches the purchases of one master.
type durableNode struct {
	owner  *durableClient
	client *redis.Client

	mu      sync.Mutex
	pending []*durableCall
	running int
}

// submit queues call; a new batch starts unless maxInFlight are running,
// in which case a running one takes it with the next batch. It says false,
// queuing nothing, when maxQueued calls wait.
func (n *durableNode) submit(call *durableCall) bool {
	n.mu.Lock()
	if len(n.pending) >= maxQueued {
		n.mu.Unlock()
		return false
	}
	n.pending = append(n.pending, call)
	start := n.running < maxInFlight
	if start {
		n.running++
	}
	n.mu.Unlock()
	if start {
		go n.drain()
	}
	return true
}

func (n *durableNode) drain() {
	for {
		n.mu.Lock()
		if len(n.pending) == 0 {
			n.running--
			n.mu.Unlock()
			return
		}
		batch, gone := n.take()
		n.mu.Unlock()
		for _, call := range gone {
			call.err = fmt.Errorf("seckill: purchase not sent: %w", call.ctx.Err())
			close(call.done)
		}
		if len(batch) > 0 {
			n.run(batch)
		}
	}
}

// take removes from the pending calls (n.mu held) the next batch: up to
// maxBatch calls whose callers still wait, and, apart, those whose callers
// gave up.
func (n *durableNode) take() (batch, gone []*durableCall) {
	i := 0
	for ; i < len(n.pending) && len(batch) < maxBatch; i++ {
		if call := n.pending[i]; call.ctx.Err() != nil {
			gone = append(gone, call)
		} else {
			batch = append(batch, call)
		}
	}
	n.pending = append(n.pending[:0], n.pending[i:]...)
	return batch, gone
}

// run sends a batch of scripts on one connection, then, if any of them
// admitted an order, one wait on that same connection.
func (n *durableNode) run(batch []*durableCall) {
	c := n.owner
	ctx, cancel := context.WithTimeout(context.Background(), purchaseTimeout+c.d.Timeout)
	defer cancel()
	conn := n.client.Conn()
	defer func() { _ = conn.Close() }()
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, call := range batch {
			cmds[i] = p.EvalSha(ctx, call.sha, call.keys, call.args...)
		}
		return nil
	})
	var a ack
	wrote := false
	for _, cmd := range cmds {
		wrote = wrote || answersOrder(cmd)
		if err := cmd.Err(); err != nil && (redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK")) {
			if cc, ok := c.UniversalClient.(*redis.ClusterClient); ok {
				cc.ReloadState(ctx) // the slot moved: the next call asks the new master
			}
		}
	}
	if wrote {
		start := time.Now()
		a = c.d.wait(ctx, conn)
		c.observe("durability_wait", time.Since(start), a.err)
	}
	for i, call := range batch {
		call.res, call.err = cmds[i].Val(), cmds[i].Err()
		if answersOrder(cmds[i]) {
			call.ack = a
		}
		close(call.done)
	}
}

// answersOrder reports whether the script answers with an order: admitted
// ("OK") or replayed ("REPLAY", see purchase.lua and replay.lua). Those
// wrote and need the wait: a replay rewrites its token's record unchanged so
// that the WAIT, which covers this connection's writes, also covers the
// earlier order. A refusal wrote nothing and is answered at once.
func answersOrder(cmd *redis.Cmd) bool {
	v, ok := cmd.Val().([]any)
	return cmd.Err() == nil && ok && len(v) > 0 && (v[0] == "OK" || v[0] == "REPLAY")
}

// wait waits, on conn, for the replicas and then the AOF, within Timeout
// altogether. It covers every write conn made so far.
func (d Durability) wait(ctx context.Context, conn *redis.Conn) ack {
	deadline := time.Now().Add(d.Timeout)
	if d.Replicas > 0 {
		// WAIT's timeout is in whole milliseconds (go-redis truncates) and
		// 0 would block until the batch's context gives up, seconds later.
		got, err := conn.Wait(ctx, d.Replicas, max(d.Timeout, time.Millisecond)).Result()
		switch {
		case err != nil:
			return ack{reason: notDurableError, err: fmt.Errorf("WAIT: %w", err)}
		case got < int64(d.Replicas):
			return ack{reason: notDurableReplicas, err: fmt.Errorf("%d of %d replicas acknowledged within %s", got, d.Replicas, d.Timeout)}
		}
	}
	if d.AOF {
		// WAITAOF's timeout is in whole milliseconds and 0 would block forever.
		left := max(time.Until(deadline), time.Millisecond)
		got, err := conn.WaitAOF(ctx, 1, 0, left).Result()
		switch {
		case err != nil:
			return ack{reason: notDurableError, err: fmt.Errorf("WAITAOF: %w", err)}
		case len(got) == 0 || got[0] < 1:
			return ack{reason: notDurableAOF, err: fmt.Errorf("the AOF fsync was not confirmed within %s", d.Timeout)}
		}
	}
	return ack{durable: true}
}

// String is the durability in words, for logs and errors.
func (d Durability) String() string {
	var parts []string
	if d.Replicas > 0 {
		parts = append(parts, fmt.Sprintf("WAIT for %d replica(s)", d.Replicas))
	}
	if d.AOF {
		parts = append(parts, "WAITAOF for the primary's AOF fsync")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " then ") + " within " + d.Timeout.String()
}

// checkRedis refuses, at start-up, a Redis the pod cannot serve the sale
// on: older than the scripts need, or without what durability.aof needs
// (both are the server's configuration, so failing fast names the fix). Too
// few replicas online is only logged: a replica restarting must not keep
// new pods from starting mid-sale; their purchases are answered
// "durable": false and counted until it is back (the operator refuses to
// open a sale without them).
func (s *Server) checkRedis(ctx context.Context) error {
	servers, err := rediscap.Probe(ctx, s.rdb)
	if err != nil {
		if s.durable == nil {
			s.log.Warn("Could not read the Redis version (INFO); going on without the check", "sale", s.saleKey, "err", err)
			return nil
		}
		return fmt.Errorf("seckill: durability is asked for (%s) but the Redis servers cannot be checked: %w", s.durable.d.String(), err)
	}
	var d Durability
	if s.durable != nil {
		d = s.durable.d
	}
	if p := rediscap.Check(servers, rediscap.Needs{AOF: d.AOF}); p != nil {
		return fmt.Errorf("seckill: %w", p)
	}
	if p := rediscap.Check(servers, rediscap.Needs{Replicas: d.Replicas}); p != nil {
		s.log.Warn("Fewer Redis replicas online than durability asks for: purchases will be answered \"durable\": false until they are back",
			"sale", s.saleKey, "problem", p.Msg)
	}
	if s.durable != nil {
		s.log.Info("Purchases wait for durability before their 202", "sale", s.saleKey, "wait", d.String())
	}
	return nil
}
