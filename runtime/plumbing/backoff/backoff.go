// Package backoff is the exponential backoff with full jitter that every
// retry loop of the order pipeline waits with: reading and acknowledging
// stream entries, producing to Kafka, joining the consumer group, writing to
// MySQL.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Default is the backoff of the pipeline's loops unless told otherwise.
var Default = Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Backoff is an exponential backoff with full jitter.
type Backoff struct {
	Min, Max time.Duration
}

// Delay is the wait before retry number attempt (1-based).
func (b Backoff) Delay(attempt int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 50 * time.Millisecond
	}
	if hi < lo {
		hi = 5 * time.Second
	}
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not security
}

// Sleep waits the delay of attempt, or less if ctx ends (then it returns ctx.Err()).
func (b Backoff) Sleep(ctx context.Context, attempt int) error {
	t := time.NewTimer(b.Delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
