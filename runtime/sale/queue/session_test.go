package queue_test

import (
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestAdmissionIsASession: an admission is live (it opens /token) from the
// admit until it is used (Done) or the TTL has passed; Position and Join
// both say when it began, and a used one is not given again.
func TestAdmissionIsASession(t *testing.T) {
	rdb := testutil.Redis(t)
	c := cfg(10)
	c.AdmissionTTL = time.Minute
	q, _ := warmQueue(t, rdb, c)
	for i := range 4 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	at := t0.Add(200 * time.Millisecond)
	admit(t, q, at, 100) // 2 admitted
	admitted := mustAdmittedUsers(t, q, 4)
	if len(admitted) != 2 {
		t.Fatalf("admitted %v", admitted)
	}
	a, b := admitted[0], admitted[1]
	p := position(t, q, a)
	if !p.AdmittedAt.Equal(at) || !p.Live(at, c.AdmissionTTL) || !p.Live(at.Add(59*time.Second), c.AdmissionTTL) {
		t.Fatalf("admitted at %v: %+v, want a live admission from then", at, p)
	}
	if p.Live(at.Add(time.Minute), c.AdmissionTTL) {
		t.Fatalf("an admission older than the TTL is live: %+v", p)
	}
	if j := join(t, q, a, at.Add(time.Second)); !j.AdmittedAt.Equal(at) || !j.Live(at, c.AdmissionTTL) {
		t.Fatalf("join again of an admitted buyer: %+v", j)
	}
	if err := q.Done(ctx, a); err != nil {
		t.Fatal(err)
	}
	p = position(t, q, a)
	if !p.IsAdmitted() || !p.AdmittedAt.IsZero() || p.Live(at, c.AdmissionTTL) {
		t.Fatalf("a used admission: %+v, want admitted, not live", p)
	}
	if j := join(t, q, a, at.Add(time.Second)); j.Live(at, c.AdmissionTTL) {
		t.Fatalf("join again after the admission was used: %+v", j)
	}
	// After the TTL the admit drops b's admission: no longer live, and
	// the next two in line get theirs.
	s := admit(t, q, at.Add(time.Minute), 100)
	if s.New != 2 || s.Outstanding != 2 {
		t.Fatalf("after the TTL: %+v", s)
	}
	if p := position(t, q, b); !p.IsAdmitted() || !p.AdmittedAt.IsZero() {
		t.Fatalf("a lapsed admission: %+v", p)
	}
	if p := position(t, q, "never"); p.Queued || !p.AdmittedAt.IsZero() || p.Live(at, c.AdmissionTTL) {
		t.Fatalf("a user who never joined: %+v", p)
	}
}

// TestStaleStockAcrossPods (the review's interleaving): pod A reads the
// outstanding count (10) and then the stock (10); meanwhile five admitted
// buyers buy on pod B (stock 5) and B frees their admissions. A admits with
// its stale stock: with the outstanding count it read first as the floor,
// the budget still counts those five, so nobody is admitted beyond the
// real stock x overbook.
func TestStaleStockAcrossPods(t *testing.T) {
	rdb := testutil.Redis(t)
	c := cfg(1000)
	c.Overbook = 1
	q, _ := warmQueue(t, rdb, c)
	for i := range 30 {
		join(t, q, user(i), t0.Add(-time.Second))
	}
	at := t0.Add(2 * time.Second)
	if s := admit(t, q, at, 10); s.New != 10 {
		t.Fatalf("first tick %+v", s)
	}
	floor, err := q.Outstanding(ctx) // pod A, before it reads the stock
	if err != nil || floor != 10 {
		t.Fatalf("outstanding %d, %v", floor, err)
	}
	// Pod A reads the stock (10); then pod B sells 5 and frees their admissions.
	staleStock := int64(10)
	if err := q.Done(ctx, mustAdmittedUsers(t, q, 30)[:5]...); err != nil {
		t.Fatal(err)
	}
	s, err := q.AdmitFloor(ctx, at.Add(10*time.Millisecond), staleStock, floor)
	if err != nil {
		t.Fatal(err)
	}
	if s.New != 0 || s.Outstanding != 5 {
		t.Fatalf("pod A's tick with a stale stock: %+v, want nobody admitted (5 outstanding for the 5 units left)", s)
	}
	// The next tick reads a fresh floor and a fresh stock: room for nobody
	// more either (5 units, 5 outstanding), and with a unit returned, one.
	if s, err := q.AdmitFloor(ctx, at.Add(20*time.Millisecond), 6, 5); err != nil || s.New != 1 {
		t.Fatalf("a unit back: %+v %v, want 1 admitted", s, err)
	}
}

// TestRedisClock: with RedisClock the scripts follow Redis's clock, not the
// caller's. A pod whose clock runs an hour ahead admits nobody before the
// real start and does not end the shuffle (buyers joining before the real
// start still draw random places); after the real start a pod whose clock
// lags still admits.
func TestRedisClock(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	c := cfg(100)
	c.Start = now.Add(time.Hour)
	c.RedisClock = true
	q, sale := warmQueue(t, rdb, c)
	ahead := now.Add(2 * time.Hour) // the fast pod's clock: after the start
	for i := range 500 {
		join(t, q, user(i), now)
	}
	if s := admit(t, q, ahead, 1000); s.New != 0 || s.Admitted != 0 {
		t.Fatalf("a pod an hour ahead admitted before the real start: %+v", s)
	}
	if last, _ := rdb.HExists(ctx, keys.ForSale(sale).QueueMeta, "last").Result(); last {
		t.Fatal("a pod an hour ahead started the token bucket before the real start")
	}
	var early int
	for i := 500; i < 600; i++ {
		if join(t, q, user(i), ahead).Rank < 500 {
			early++
		}
	}
	if early == 0 {
		t.Fatal("joiners before the real start (from a pod an hour ahead) queue in arrival order: the shuffle ended early")
	}

	c2 := cfg(100)
	c2.Start = now.Add(-time.Second) // started a second ago, by the real clock
	c2.RedisClock = true
	q2, _ := warmQueue(t, rdb, c2)
	lagging := now.Add(-time.Hour)
	for i := range 10 {
		if p := join(t, q2, user(i), lagging); p.Rank != int64(i) {
			t.Fatalf("joiner %d after the real start (from a lagging pod) got rank %d: not in arrival order", i, p.Rank)
		}
	}
	if s := admit(t, q2, lagging, 1000); s.New != 10 {
		t.Fatalf("a pod an hour behind after the real start: %+v, want the 10 admitted", s)
	}
	if p := position(t, q2, user(0)); p.AdmittedAt.Before(now.Add(-time.Minute)) {
		t.Fatalf("admission time %v from the lagging pod's clock, not Redis's", p.AdmittedAt)
	}
}

// TestDoneLargeBatch: a batch larger than one ZREM chunk frees every
// admission in it.
func TestDoneLargeBatch(t *testing.T) {
	rdb := testutil.Redis(t)
	q, _ := warmQueue(t, rdb, cfg(100_000))
	const n = 2500
	users := make([]string, n)
	for i := range n {
		users[i] = user(i)
		join(t, q, users[i], t0.Add(-time.Minute))
	}
	if s := admit(t, q, t0.Add(time.Second), n); s.Outstanding != n {
		t.Fatalf("admit %+v", s)
	}
	if err := q.Done(ctx, users...); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Outstanding(ctx); err != nil || n != 0 {
		t.Fatalf("after Done of all %d: %d outstanding, %v", len(users), n, err)
	}
}
