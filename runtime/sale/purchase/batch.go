package purchase

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Batching (Options.Batch). The script's fixed costs (the call, reading the
// stock, writing each structure) are paid once per call, so concurrent
// purchases of one SKU bucket share one call: a purchase arriving while no
// call of its bucket is running is sent at once, alone; those arriving while
// calls run queue up and go together in the next one. Alone, nothing waits;
// under load the batches grow with the load.
const (
	// maxBatch purchases share one call at most. A script blocks Redis while
	// it runs: 64 purchases take well under a millisecond.
	maxBatch = 64
	// maxInFlight calls per bucket at once: while one runs, the next
	// gathers, and a slow reply does not stall the bucket entirely.
	maxInFlight = 2
	// batchTimeout bounds one call. The callers' own contexts may end
	// sooner; the call then completes without them (its outcome is unknown
	// to them: they retry with the same token and get the same order).
	batchTimeout = 3 * time.Second
	// MaxQueued purchases wait per bucket in one Script at most. A healthy
	// bucket sends them in 16 rounds of maxInFlight calls (milliseconds),
	// and a burst of a pod's buyers of one bucket fits (a few batches' worth
	// would refuse an ordinary spike of 800 at once). Past it Redis is not
	// keeping up (a stall, a failover): queuing more only grows a backlog
	// whose callers give up before it is sent, so a purchase past the cap
	// is refused at once (ErrBusy), safely: it was never sent.
	MaxQueued = 32 * maxBatch
)

// ErrBusy is a purchase refused before it was sent because too many
// purchases of its bucket already wait for Redis: nothing changed, the buyer
// may retry.
var ErrBusy = errors.New("purchase: too many purchases waiting for redis; not sent")

// batchKey names one bucket of one SKU: a batch touches one bucket's keys.
type batchKey struct {
	sku             string
	bucket, buckets int
}

// pending is one purchase waiting for its batch's answer.
type pending struct {
	// ctx is the caller's: a purchase whose caller gave up before it was
	// put in a batch is never sent (its caller was told the outcome is
	// unknown; not sending it keeps a stall's backlog from being admitted
	// for buyers who left).
	ctx  context.Context
	req  Request
	res  Result
	err  error
	done chan struct{}
}

// bucketQueue is the purchases of one bucket waiting to be sent.
type bucketQueue struct {
	waiting []*pending
	running int
}

// batcher coalesces the purchases of a Script by bucket.
type batcher struct {
	s      *Script
	mu     sync.Mutex
	queues map[batchKey]*bucketQueue
}

func newBatcher(s *Script) *batcher {
	return &batcher{s: s, queues: map[batchKey]*bucketQueue{}}
}

// purchase queues r and waits for its answer or for ctx.
func (b *batcher) purchase(ctx context.Context, r Request) (Result, error) {
	p := &pending{ctx: ctx, req: r, done: make(chan struct{})}
	if !b.submit(p) {
		return Result{}, ErrBusy
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("purchase script: %w", ctx.Err())
	}
}

// submit queues p; a call starts unless maxInFlight of its bucket are
// running, in which case one of them takes p with its next batch. It says
// false, queuing nothing, when MaxQueued purchases of p's bucket wait.
func (b *batcher) submit(p *pending) bool {
	k := batchKey{p.req.SKU, p.req.Bucket, max(p.req.Buckets, 1)}
	b.mu.Lock()
	q, ok := b.queues[k]
	if !ok {
		q = &bucketQueue{}
		b.queues[k] = q
	}
	if len(q.waiting) >= MaxQueued {
		b.mu.Unlock()
		return false
	}
	q.waiting = append(q.waiting, p)
	start := q.running < maxInFlight
	if start {
		q.running++
	}
	b.mu.Unlock()
	if start {
		go b.drain(q)
	}
	return true
}

// drain sends q's waiting purchases, a batch per call, until none wait.
func (b *batcher) drain(q *bucketQueue) {
	for {
		b.mu.Lock()
		if len(q.waiting) == 0 {
			q.running--
			b.mu.Unlock()
			return
		}
		batch, gone := take(q)
		b.mu.Unlock()
		for _, p := range gone {
			p.err = fmt.Errorf("purchase not sent: %w", p.ctx.Err())
			close(p.done)
		}
		if len(batch) > 0 {
			b.send(batch)
		}
	}
}

// take removes from q (locked) the next batch: up to maxBatch purchases
// whose callers still wait, and, apart, those whose callers gave up.
func take(q *bucketQueue) (batch, gone []*pending) {
	i := 0
	for ; i < len(q.waiting) && len(batch) < maxBatch; i++ {
		if p := q.waiting[i]; p.ctx.Err() != nil {
			gone = append(gone, p)
		} else {
			batch = append(batch, p)
		}
	}
	q.waiting = append(q.waiting[:0], q.waiting[i:]...)
	return batch, gone
}

// send runs one call for batch and hands each purchase its own answer.
func (b *batcher) send(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	reqs := make([]Request, len(batch))
	for i, p := range batch {
		reqs[i] = p.req
	}
	res, err := b.s.run(ctx, reqs)
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.res = res[i]
		}
		close(p.done)
	}
}
