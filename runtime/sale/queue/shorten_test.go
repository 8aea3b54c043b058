package queue_test

import (
	"slices"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// shorten calls Shorten and fails the test on an error.
func shorten(t *testing.T, q *queue.Queue, now time.Time, grace time.Duration, users ...string) {
	t.Helper()
	if err := q.Shorten(ctx, now, grace, users...); err != nil {
		t.Fatalf("shorten %v: %v", users, err)
	}
}

// TestShortenedAdmissionLapsesAfterGrace: a buyer refused one item keeps a
// live admission for the grace only: after it the admission opens no
// token and stops counting against the budget, so the next in line are
// admitted. Shorten never lengthens an admission (an already shorter one,
// or one that would lapse sooner by its TTL) and never adds one (a waiting
// buyer, a used admission, a stranger).
func TestShortenedAdmissionLapsesAfterGrace(t *testing.T) {
	rdb := testutil.Redis(t)
	c := cfg(10)
	q, _ := warmQueue(t, rdb, c)
	for i := range 10 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	at := t0.Add(time.Second)
	if s := admit(t, q, at, 4); s.New != 6 { // floor(4 x 1.5)
		t.Fatalf("admit %+v", s)
	}
	in := mustAdmittedUsers(t, q, 10)
	var waiting string
	for i := range 10 {
		if !slices.Contains(in, user(i)) {
			waiting = user(i)
		}
	}
	a, b, late, used := in[0], in[1], in[2], in[3]
	if err := q.Done(ctx, used); err != nil {
		t.Fatal(err)
	}
	refusal := at.Add(10 * time.Second)
	shorten(t, q, refusal, 5*time.Second, b)
	shorten(t, q, refusal, 15*time.Second, a, b, waiting, used, "stranger")
	// 15 s from at+110s would lapse after the TTL: nothing changes.
	shorten(t, q, at.Add(110*time.Second), 15*time.Second, late)

	if p := position(t, q, a); !p.Live(refusal.Add(14*time.Second), c.AdmissionTTL) || p.Live(refusal.Add(15*time.Second), c.AdmissionTTL) {
		t.Fatalf("shortened admission %+v: want live until 15 s after the refusal, not after", p)
	}
	if p := position(t, q, b); !p.Live(refusal.Add(4*time.Second), c.AdmissionTTL) || p.Live(refusal.Add(5*time.Second), c.AdmissionTTL) {
		t.Fatalf("admission shortened to 5 s, then to 15 s: %+v, want it still lapsing after 5 s", p)
	}
	if p := position(t, q, late); !p.AdmittedAt.Equal(at) {
		t.Fatalf("admission shortened past its TTL: %+v, want it unchanged (admitted at %v)", p, at)
	}
	for _, u := range []string{waiting, used, "stranger"} {
		if p := position(t, q, u); !p.AdmittedAt.IsZero() {
			t.Fatalf("%s holds no admission, Shorten gave one: %+v", u, p)
		}
	}
	if n, err := q.Outstanding(ctx); err != nil || n != 5 {
		t.Fatalf("outstanding %d, %v; want 5 (6 admitted, 1 used)", n, err)
	}
	// Before a's grace ends only b has lapsed: room for 2 (6 - a, late and two more).
	if s := admit(t, q, refusal.Add(14*time.Second), 4); s.New != 2 || s.Outstanding != 6 {
		t.Fatalf("admit before the grace ended: %+v, want 2 admitted (b lapsed), 6 outstanding", s)
	}
	if s := admit(t, q, refusal.Add(15*time.Second), 4); s.New != 1 || s.Outstanding != 6 {
		t.Fatalf("admit after the grace: %+v, want a's share given to the next in line", s)
	}
}

// TestShortenOnRedisClock: with RedisClock the grace runs from Redis's
// clock, not the caller's (here an hour ahead, which would leave the
// admission as it was).
func TestShortenOnRedisClock(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	c := cfg(100)
	c.Start = now.Add(-time.Second)
	c.RedisClock = true
	q, _ := warmQueue(t, rdb, c)
	join(t, q, "alice", now)
	if s := admit(t, q, now, 10); s.New != 1 {
		t.Fatalf("admit %+v", s)
	}
	shorten(t, q, now.Add(time.Hour), 10*time.Second, "alice")
	p := position(t, q, "alice")
	want := time.Now().Add(10*time.Second - c.AdmissionTTL)
	if d := p.AdmittedAt.Sub(want); d < -5*time.Second || d > 5*time.Second {
		t.Fatalf("shortened on Redis's clock: admitted at %v, want about %v (lapsing 10 s from now)", p.AdmittedAt, want)
	}
}
