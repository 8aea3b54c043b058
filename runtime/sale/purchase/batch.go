package purchase

import (
	"context"
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
)

// batchKey names one bucket of one SKU: a batch touches one bucket's keys.
type batchKey struct {
	sku             string
	bucket, buckets int
}

// pending is one purchase waiting for its batch's answer.
type pending struct {
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
	p := &pending{req: r, done: make(chan struct{})}
	b.submit(p)
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return Result{}, fmt.Errorf("purchase script: %w", ctx.Err())
	}
}

// submit queues p; a call starts unless maxInFlight of its bucket are
// running, in which case one of them takes p with its next batch.
func (b *batcher) submit(p *pending) {
	k := batchKey{p.req.SKU, p.req.Bucket, max(p.req.Buckets, 1)}
	b.mu.Lock()
	q, ok := b.queues[k]
	if !ok {
		q = &bucketQueue{}
		b.queues[k] = q
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
		n := min(len(q.waiting), maxBatch)
		batch := make([]*pending, n)
		copy(batch, q.waiting)
		q.waiting = append(q.waiting[:0], q.waiting[n:]...)
		b.mu.Unlock()
		b.send(batch)
	}
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
