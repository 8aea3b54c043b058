package queue_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var (
	ctx = context.Background()
	t0  = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC) // the sale's start
)

// newSale returns a fresh sale key whose keys are removed at cleanup.
func newSale(t *testing.T, rdb redis.UniversalClient) string {
	t.Helper()
	sale := testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(sale) {
		testutil.CleanupKeys(t, rdb, p)
	}
	return sale
}

// warmQueue returns the initialised queue of a fresh sale.
func warmQueue(t *testing.T, rdb redis.UniversalClient, cfg queue.Config) (*queue.Queue, string) {
	t.Helper()
	return warmQueueOn(t, rdb, newSale(t, rdb), cfg)
}

// warmQueueOn initialises the queue of sale.
func warmQueueOn(t testing.TB, rdb redis.UniversalClient, sale string, cfg queue.Config) (*queue.Queue, string) {
	t.Helper()
	if err := queue.Init(ctx, rdb, sale); err != nil {
		t.Fatal(err)
	}
	q := queue.New(rdb, sale, cfg)
	if err := q.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return q, sale
}

func cfg(rate float64) queue.Config {
	return queue.Config{Start: t0, AdmitPerSecond: rate, Overbook: 1.5, AdmissionTTL: 2 * time.Minute}
}

func join(t *testing.T, q *queue.Queue, user string, now time.Time) queue.Place {
	t.Helper()
	p, err := q.Join(ctx, user, now)
	if err != nil {
		t.Fatalf("join %s: %v", user, err)
	}
	return p
}

func admit(t *testing.T, q *queue.Queue, now time.Time, remaining int64) queue.Step {
	t.Helper()
	s, err := q.Admit(ctx, now, remaining)
	if err != nil {
		t.Fatalf("admit at %v: %v", now.Sub(t0), err)
	}
	if int64(len(s.Waits)) != s.New {
		t.Fatalf("admit: %d waits for %d admitted", len(s.Waits), s.New)
	}
	return s
}

func position(t *testing.T, q *queue.Queue, user string) queue.Place {
	t.Helper()
	p, err := q.Position(ctx, user)
	if err != nil {
		t.Fatalf("position of %s: %v", user, err)
	}
	return p
}

func user(i int) string { return fmt.Sprintf("user-%05d", i) }

// TestOnePlacePerUser: joining again, before or after the start, keeps the
// one place the user got first.
func TestOnePlacePerUser(t *testing.T) {
	rdb := testutil.Redis(t)
	q, _ := warmQueue(t, rdb, cfg(10))
	for i := range 20 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	first := join(t, q, "alice", t0.Add(-time.Second))
	if !first.Queued || !first.New || first.Length != 21 {
		t.Fatalf("first join %+v", first)
	}
	for _, at := range []time.Time{t0.Add(-time.Second), t0, t0.Add(time.Minute)} {
		again := join(t, q, "alice", at)
		if again.New || again.Rank != first.Rank || again.Length != 21 {
			t.Fatalf("join again at %v: %+v, first %+v", at.Sub(t0), again, first)
		}
	}
	if p := position(t, q, "alice"); !p.Queued || p.Rank != first.Rank || p.Length != 21 || p.IsAdmitted() {
		t.Fatalf("position %+v, join %+v", p, first)
	}
	if p := position(t, q, "bob"); p.Queued || p.Length != 21 {
		t.Fatalf("position of a user who never joined: %+v", p)
	}
}

// TestNotWarmed: before Init the queue refuses to give places or admit, and
// Read says it does not exist.
func TestNotWarmed(t *testing.T) {
	rdb := testutil.Redis(t)
	sale := newSale(t, rdb)
	q := queue.New(rdb, sale, cfg(10))
	if _, err := q.Join(ctx, "alice", t0); !errors.Is(err, queue.ErrNotWarmed) {
		t.Fatalf("join before Init: %v", err)
	}
	if _, err := q.Admit(ctx, t0.Add(time.Second), 10); !errors.Is(err, queue.ErrNotWarmed) {
		t.Fatalf("admit before Init: %v", err)
	}
	if _, err := q.Position(ctx, "alice"); !errors.Is(err, queue.ErrNotWarmed) {
		t.Fatalf("position before Init: %v", err)
	}
	if f, ok, err := queue.Read(ctx, rdb, sale); err != nil || ok || f != (queue.Figures{}) {
		t.Fatalf("read before Init: %+v %v %v", f, ok, err)
	}
	if n, _ := rdb.Exists(ctx, keys.ForSale(sale).Queue).Result(); n != 0 {
		t.Fatal("a refused join left a place behind")
	}
}

// TestInitNeverResets: warming a live queue again changes nothing.
func TestInitNeverResets(t *testing.T) {
	rdb := testutil.Redis(t)
	q, sale := warmQueue(t, rdb, cfg(10))
	for i := range 5 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	admit(t, q, t0.Add(300*time.Millisecond), 100) // 3 admitted
	late := join(t, q, "late", t0.Add(time.Second))
	before, _, _ := queue.Read(ctx, rdb, sale)
	if err := queue.Init(ctx, rdb, sale); err != nil {
		t.Fatal(err)
	}
	after, ok, err := queue.Read(ctx, rdb, sale)
	if err != nil || !ok || after != before || after.Admitted != 3 {
		t.Fatalf("after Init again: %+v (ok %v, %v), before %+v", after, ok, err, before)
	}
	// The arrival counter survived too: the next joiner goes behind "late".
	if p := join(t, q, "later", t0.Add(2*time.Second)); p.Rank != late.Rank+1 {
		t.Fatalf("joiner after Init again at rank %d, late at %d", p.Rank, late.Rank)
	}
}

// TestEarlyJoinersShuffledLateOnesInOrder: the order in which early buyers
// joined says nothing about their places (Spearman's rank correlation near
// 0), and everybody joining after the start queues behind them in arrival
// order.
func TestEarlyJoinersShuffledLateOnesInOrder(t *testing.T) {
	rdb := testutil.Redis(t)
	q, _ := warmQueue(t, rdb, cfg(10))
	const early, late = 2000, 50
	for i := range early {
		join(t, q, user(i), t0.Add(-time.Duration(early-i)*time.Millisecond))
	}
	for i := early; i < early+late; i++ {
		p := join(t, q, user(i), t0.Add(time.Duration(i)*time.Millisecond))
		if p.Rank != int64(i) {
			t.Fatalf("late joiner %d got rank %d, want %d (arrival order behind the early ones)", i, p.Rank, i)
		}
	}
	ranks := make([]float64, early)
	seen := make(map[int64]bool, early)
	for i := range early {
		p := position(t, q, user(i))
		if !p.Queued || p.Rank < 0 || p.Rank >= early || seen[p.Rank] {
			t.Fatalf("early joiner %d: %+v (ranks must be a permutation of 0..%d)", i, p, early-1)
		}
		seen[p.Rank] = true
		ranks[i] = float64(p.Rank)
	}
	rho := spearman(ranks)
	t.Logf("Spearman rank correlation of join order and place over %d early joiners: %.4f (sd under independence ~%.4f)",
		early, rho, 1/math.Sqrt(early-1))
	// Under independence rho ~ N(0, 1/sqrt(n-1)) = ±0.022; 0.1 is 4.5 sd.
	if math.Abs(rho) > 0.1 {
		t.Fatalf("early joiners' places follow their join order: Spearman %.4f", rho)
	}
}

// spearman returns the rank correlation between i and ranks[i] (ranks is a
// permutation of 0..n-1, so no ties): 1 - 6 Σd² / (n(n²-1)).
func spearman(ranks []float64) float64 {
	n := float64(len(ranks))
	var d2 float64
	for i, r := range ranks {
		d := float64(i) - r
		d2 += d * d
	}
	return 1 - 6*d2/(n*(n*n-1))
}

// TestNothingAdmittedBeforeStart: whatever the budget and however long the
// queue has waited, admission starts at the start, with an empty bucket.
func TestNothingAdmittedBeforeStart(t *testing.T) {
	rdb := testutil.Redis(t)
	q, _ := warmQueue(t, rdb, cfg(10))
	for i := range 30 {
		join(t, q, user(i), t0.Add(-time.Hour))
	}
	for _, at := range []time.Duration{-time.Hour, -time.Second, -time.Millisecond} {
		if s := admit(t, q, t0.Add(at), 1000); s.New != 0 || s.Admitted != 0 || s.Length != 30 {
			t.Fatalf("admit at start%+v: %+v", at, s)
		}
	}
	// Pods calling before the start did not end the shuffle: early joiners
	// still draw random places (not all behind the first 30).
	var before int
	for i := 30; i < 60; i++ {
		if join(t, q, user(i), t0.Add(-time.Millisecond)).Rank < 30 {
			before++
		}
	}
	if before == 0 {
		t.Fatal("after Admit calls before the start, early joiners queue in arrival order")
	}
	if s := admit(t, q, t0, 1000); s.New != 0 || s.Length != 60 {
		t.Fatalf("admit at the start: %+v (the bucket starts empty)", s)
	}
	if s := admit(t, q, t0.Add(500*time.Millisecond), 1000); s.New != 5 {
		t.Fatalf("half a second after the start at 10/s: %+v, want 5 admitted", s)
	}
}

// TestBudgetIsExact: the budget is floor(remaining × overbook) computed as
// the decimal it is (100 × 1.15 is 114.99999999999999 in binary).
func TestBudgetIsExact(t *testing.T) {
	rdb := testutil.Redis(t)
	for _, c := range []struct {
		remaining int64
		overbook  float64
		want      int64
	}{{100, 1.15, 115}, {29, 1.1, 31}, {3, 1.5, 4}, {7, 1, 7}, {1, 0, 1}, {0, 2, 0}} {
		cf := cfg(1_000_000)
		cf.Overbook = c.overbook
		q, _ := warmQueue(t, rdb, cf)
		for i := range 200 {
			join(t, q, user(i), t0.Add(-time.Minute))
		}
		if s := admit(t, q, t0.Add(time.Second), c.remaining); s.New != c.want {
			t.Errorf("remaining %d × overbook %v: admitted %d, want %d", c.remaining, c.overbook, s.New, c.want)
		}
	}
}

// TestAdmitRate: over a simulated clock the admissions follow the rate
// sale-wide, however many pods call (several calls at the same instant
// admit once), with one second of burst after a pause; admission goes by
// place.
func TestAdmitRate(t *testing.T) {
	rdb := testutil.Redis(t)
	q, _ := warmQueue(t, rdb, cfg(20))
	for i := range 1000 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	var total int64
	for step := 1; step <= 50; step++ { // 5 s, 3 pods calling every 100 ms
		now := t0.Add(time.Duration(step) * 100 * time.Millisecond)
		for range 3 {
			total += admit(t, q, now, 1_000_000).New
		}
	}
	if total != 100 {
		t.Fatalf("5 s at 20/s admitted %d, want 100", total)
	}
	// A pause: the bucket holds at most one second (20), not 10 s worth.
	s := admit(t, q, t0.Add(15*time.Second), 1_000_000)
	if s.New != 20 || s.Admitted != 120 {
		t.Fatalf("after a 10 s pause: %+v, want 20 new (1 s burst), 120 in all", s)
	}
	// A pod whose clock lags admits nothing more and does not refill.
	if s := admit(t, q, t0.Add(10*time.Second), 1_000_000); s.New != 0 {
		t.Fatalf("lagging clock: %+v", s)
	}
	checkAdmittedByPlace(t, q, 1000, 120)
}

// checkAdmittedByPlace: exactly the first admitted places are admitted.
func checkAdmittedByPlace(t *testing.T, q *queue.Queue, users int, admitted int64) {
	t.Helper()
	var n int64
	for i := range users {
		p := position(t, q, user(i))
		if p.IsAdmitted() != (p.Rank < admitted) || p.Admitted != admitted {
			t.Fatalf("%s: %+v with %d admitted", user(i), p, admitted)
		}
		if p.IsAdmitted() {
			n++
		} else if p.Ahead() != p.Rank-admitted {
			t.Fatalf("%s: ahead %d, rank %d, admitted %d", user(i), p.Ahead(), p.Rank, admitted)
		}
	}
	if n != admitted {
		t.Fatalf("%d users admitted, the queue says %d", n, admitted)
	}
}

// TestAdmitBudget: outstanding admissions never exceed remaining × overbook;
// Done frees budget at once, an admission older than the TTL stops counting,
// admission stops when nothing remains and reopens when stock comes back.
func TestAdmitBudget(t *testing.T) {
	rdb := testutil.Redis(t)
	c := cfg(1000)
	c.AdmissionTTL = time.Minute
	q, _ := warmQueue(t, rdb, c)
	for i := range 200 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	now := t0.Add(time.Second)
	expect := func(remaining, wantNew, wantOutstanding int64) queue.Step {
		t.Helper()
		now = now.Add(time.Second) // the bucket is always full: only the budget limits
		s := admit(t, q, now, remaining)
		if s.New != wantNew || s.Outstanding != wantOutstanding {
			t.Fatalf("remaining %d at %v: %+v, want %d new, %d outstanding", remaining, now.Sub(t0), s, wantNew, wantOutstanding)
		}
		return s
	}
	expect(10, 15, 15) // 10 × 1.5
	expect(10, 0, 15)
	expect(7, 0, 15) // 7 × 1.5 = 10 < 15 outstanding
	first := mustAdmittedUsers(t, q, 200)
	if err := q.Done(ctx, first[:6]...); err != nil { // six bought or were refused
		t.Fatal(err)
	}
	expect(7, 1, 10)  // 15 - 6 = 9 outstanding, budget 10
	expect(0, 0, 10)  // sold out: nobody more
	expect(-3, 0, 10) // oversold counters count as 0
	expect(20, 20, 30)
	// A minute after the first 16 admissions (at +2 s and +5 s) they expire:
	// of them 10 were still outstanding (6 were done), so 30 - 10 = 20
	// remain and 10 more are admitted.
	now = t0.Add(time.Minute + 6*time.Second)
	s := admit(t, q, now, 20)
	if s.Outstanding != 30 || s.New != 10 {
		t.Fatalf("after the TTL: %+v, want 10 new, 30 outstanding", s)
	}
	if s.Admitted != 15+1+20+10 {
		t.Fatalf("admitted %d in all", s.Admitted)
	}
}

// mustAdmittedUsers returns the admitted users in place order.
func mustAdmittedUsers(t *testing.T, q *queue.Queue, users int) []string {
	t.Helper()
	type up struct {
		u string
		r int64
	}
	var out []up
	for i := range users {
		if p := position(t, q, user(i)); p.IsAdmitted() {
			out = append(out, up{user(i), p.Rank})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].r < out[b].r })
	names := make([]string, len(out))
	for i, x := range out {
		names[i] = x.u
	}
	return names
}

// TestWaitsAndFigures: Admit reports each admitted buyer's time from join
// to admission, and Read the queue's figures.
func TestWaitsAndFigures(t *testing.T) {
	rdb := testutil.Redis(t)
	q, sale := warmQueue(t, rdb, cfg(2))
	join(t, q, user(0), t0.Add(-10*time.Second))
	join(t, q, user(1), t0.Add(-10*time.Second))
	join(t, q, user(2), t0.Add(500*time.Millisecond))
	join(t, q, user(3), t0.Add(600*time.Millisecond))
	s := admit(t, q, t0.Add(time.Second), 100)
	if s.New != 2 || s.Waits[0] != 11*time.Second || s.Waits[1] != 11*time.Second {
		t.Fatalf("first admissions %+v, want two waits of 11 s", s)
	}
	s = admit(t, q, t0.Add(1500*time.Millisecond), 100)
	if s.New != 1 || s.Waits[0] != time.Second {
		t.Fatalf("third admission %+v, want a wait of 1 s (joined at +0.5 s)", s)
	}
	if err := q.Done(ctx, user(0), "never-admitted"); err != nil {
		t.Fatal(err)
	}
	f, ok, err := queue.Read(ctx, rdb, sale)
	want := queue.Figures{Joined: 4, Waiting: 1, Admitted: 3, Outstanding: 2}
	if err != nil || !ok || f != want {
		t.Fatalf("Read: %+v %v %v, want %+v", f, ok, err, want)
	}
}

// TestLaggingPodNeverShufflesAfterAdmission: once admission has begun, a
// joiner goes to the end even if its pod's clock still reads before the
// start (a random place among the admitted would push someone out).
func TestLaggingPodNeverShufflesAfterAdmission(t *testing.T) {
	rdb := testutil.Redis(t)
	q, _ := warmQueue(t, rdb, cfg(10))
	for i := range 10 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	admit(t, q, t0.Add(500*time.Millisecond), 100) // 5 admitted
	for i := 10; i < 60; i++ {
		if p := join(t, q, user(i), t0.Add(-time.Second)); p.Rank != int64(i) {
			t.Fatalf("joiner %d from a lagging pod got rank %d, want %d", i, p.Rank, i)
		}
	}
	checkAdmittedByPlace(t, q, 60, 5)
}

// TestAdmitBoundedPerCall: however high the rate and long the queue, one
// call admits at most MaxAdmitPerCall; the rest comes with the next calls.
func TestAdmitBoundedPerCall(t *testing.T) {
	rdb := testutil.Redis(t)
	q, sale := warmQueue(t, rdb, cfg(100_000))
	k := keys.ForSale(sale)
	const n = queue.MaxAdmitPerCall + 1500
	// Fill the queue directly (as post-start joiners would be): fast, and
	// what the script reads is the same.
	pipe := rdb.Pipeline()
	for i := range n {
		pipe.ZAdd(ctx, k.Queue, redis.Z{Score: float64(1<<52 + i), Member: user(i)})
		pipe.HSet(ctx, k.Joined, user(i), t0.UnixMilli())
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	s := admit(t, q, t0.Add(time.Second), 1_000_000)
	if s.New != queue.MaxAdmitPerCall || s.Outstanding != queue.MaxAdmitPerCall {
		t.Fatalf("one call admitted %+v, want %d", s, queue.MaxAdmitPerCall)
	}
	s = admit(t, q, t0.Add(time.Second), 1_000_000)
	if s.New != 1500 || s.Admitted != n || s.Length != n {
		t.Fatalf("second call %+v, want the last 1500", s)
	}
	if s.Waits[0] != time.Second {
		t.Fatalf("wait %v", s.Waits[0])
	}
}
