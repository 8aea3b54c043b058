package purchase

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// RunBatch runs one script call for a batch of purchases of one bucket (tests).
func (s *Script) RunBatch(ctx context.Context, batch []Request) ([]Result, error) {
	return s.run(ctx, batch)
}

// SetExec routes the script's calls through e (tests: a Redis that stalls).
func (s *Script) SetExec(e redis.Scripter) { s.exec = e }

// Queued says how many purchases wait in the batcher and how many calls
// run, over every bucket (tests).
func (s *Script) Queued() (waiting, running int) {
	s.batches.mu.Lock()
	defer s.batches.mu.Unlock()
	for _, q := range s.batches.queues {
		waiting += len(q.waiting)
		running += q.running
	}
	return waiting, running
}
