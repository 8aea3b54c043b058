package backoff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
)

// TestDelay checks that the wait doubles from Min per attempt, stops growing
// at Max, and is jittered within the upper half of that step, so that
// retrying clients spread out and never wait longer than Max.
func TestDelay(t *testing.T) {
	t.Parallel()
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		attempt int
		step    time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{50, time.Second},
	} {
		lo, hi := tc.step, time.Duration(0)
		for range 200 {
			d := b.Delay(tc.attempt)
			if d < tc.step/2 || d > tc.step {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", tc.attempt, d, tc.step/2, tc.step)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if hi-lo < tc.step/10 {
			t.Errorf("attempt %d: 200 delays all within %v..%v: no jitter", tc.attempt, lo, hi)
		}
	}
}

// TestDelayDefaults checks that a zero Backoff still waits (50ms first,
// at most 5s) instead of spinning on a dependency that is down.
func TestDelayDefaults(t *testing.T) {
	t.Parallel()
	var b backoff.Backoff
	if d := b.Delay(1); d < 25*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("zero Backoff, attempt 1: %v, want 25ms..50ms", d)
	}
	if d := b.Delay(100); d < 2500*time.Millisecond || d > 5*time.Second {
		t.Errorf("zero Backoff, attempt 100: %v, want 2.5s..5s", d)
	}
	if d := backoff.Default.Delay(1); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("Default, attempt 1: %v, want 50ms..100ms", d)
	}
}

// TestSleep checks that Sleep waits its delay, and that a shutdown (the
// context ending) cuts a long wait short and says so.
func TestSleep(t *testing.T) {
	t.Parallel()
	b := backoff.Backoff{Min: 40 * time.Millisecond, Max: 40 * time.Millisecond}
	start := time.Now()
	if err := b.Sleep(context.Background(), 1); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Errorf("Sleep returned after %v, want at least 20ms", el)
	}

	long := backoff.Backoff{Min: time.Minute, Max: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start = time.Now()
	err := long.Sleep(ctx, 1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep after cancel: %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Sleep took %v after its context ended", el)
	}
}
