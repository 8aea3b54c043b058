package ratelimit

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2030, 11, 11, 0, 0, 0, 0, time.UTC)

func newTest(r Rates, opts ...Option) (*Limiter, *clocktesting.FakePassiveClock) {
	clk := clocktesting.NewFakePassiveClock(t0)
	return New(r, clk, opts...), clk
}

func step(clk *clocktesting.FakePassiveClock, d time.Duration) { clk.SetTime(clk.Now().Add(d)) }

func expect(t *testing.T, got Decision, allowed bool, lim Limit, retry time.Duration) {
	t.Helper()
	want := Decision{Allowed: allowed, Limit: lim, RetryAfter: retry}
	if got != want {
		t.Fatalf("decision = %+v, want %+v", got, want)
	}
}

func TestGlobalRateBurstAndRefill(t *testing.T) {
	l, clk := newTest(Rates{RequestsPerSecond: 10, Burst: 5})
	for i := range 5 {
		expect(t, l.Allow(fmt.Sprint("u", i), "10.0.0.1"), true, None, 0)
	}
	expect(t, l.Allow("u9", "10.0.0.9"), false, Global, time.Second)

	step(clk, 100*time.Millisecond) // one token at 10/s
	expect(t, l.Allow("u10", "10.0.0.10"), true, None, 0)
	expect(t, l.Allow("u11", "10.0.0.11"), false, Global, time.Second)

	step(clk, time.Hour) // refill is capped at the burst
	for i := range 5 {
		expect(t, l.Allow(fmt.Sprint("v", i), ""), true, None, 0)
	}
	expect(t, l.Allow("v9", ""), false, Global, time.Second)
}

func TestDefaultBurst(t *testing.T) {
	cases := []struct {
		rate  float64
		burst int
		want  int
	}{
		{rate: 3, want: 3},
		{rate: 2.5, want: 3},
		{rate: 0.5, want: 1},
		{rate: 100, burst: 7, want: 7},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.rate, "/", c.burst), func(t *testing.T) {
			l, _ := newTest(Rates{PerUserPerSecond: c.rate, UserBurst: c.burst})
			for range c.want {
				expect(t, l.Allow("alice", ""), true, None, 0)
			}
			if d := l.Allow("alice", ""); d.Allowed || d.Limit != User {
				t.Fatalf("request %d = %+v, want refused by user", c.want+1, d)
			}
		})
	}
}

func TestPerUserAndPerIP(t *testing.T) {
	l, clk := newTest(Rates{PerUserPerSecond: 2, UserBurst: 2, PerIPPerSecond: 3, IPBurst: 3})
	expect(t, l.Allow("alice", "1.1.1.1"), true, None, 0)
	expect(t, l.Allow("alice", "1.1.1.1"), true, None, 0)
	expect(t, l.Allow("alice", "1.1.1.1"), false, User, time.Second)
	expect(t, l.Allow("bob", "1.1.1.1"), true, None, 0)
	expect(t, l.Allow("carol", "1.1.1.1"), false, IP, time.Second)
	expect(t, l.Allow("carol", "2.2.2.2"), true, None, 0)

	step(clk, 500*time.Millisecond) // alice gets one token back at 2/s
	expect(t, l.Allow("alice", "3.3.3.3"), true, None, 0)
	expect(t, l.Allow("alice", "3.3.3.3"), false, User, time.Second)
}

func TestRetryAfterRounding(t *testing.T) {
	l, clk := newTest(Rates{PerUserPerSecond: 0.25, UserBurst: 1}) // a token every 4 s
	expect(t, l.Allow("alice", ""), true, None, 0)
	expect(t, l.Allow("alice", ""), false, User, 4*time.Second)
	step(clk, time.Millisecond)
	expect(t, l.Allow("alice", ""), false, User, 4*time.Second) // 3.999 s -> 4 s
	step(clk, 2500*time.Millisecond)
	expect(t, l.Allow("alice", ""), false, User, 2*time.Second) // 1.499 s -> 2 s
	step(clk, 1498*time.Millisecond)
	d := l.Allow("alice", "")
	expect(t, d, false, User, time.Second) // 1 ms -> 1 s
	if d.RetryAfterSeconds() != 1 {
		t.Fatalf("RetryAfterSeconds = %d", d.RetryAfterSeconds())
	}
	step(clk, time.Millisecond)
	expect(t, l.Allow("alice", ""), true, None, 0)

	// A fast bucket still says at least 1 s.
	l2, _ := newTest(Rates{RequestsPerSecond: 1000, Burst: 1})
	expect(t, l2.Allow("a", ""), true, None, 0)
	expect(t, l2.Allow("b", ""), false, Global, time.Second)
	if (Decision{Allowed: true}).RetryAfterSeconds() != 0 {
		t.Fatal("allowed decision has a Retry-After")
	}
}

func TestNoOverchargeWhenUserRefuses(t *testing.T) {
	l, _ := newTest(Rates{RequestsPerSecond: 1, Burst: 2, PerUserPerSecond: 0.1, UserBurst: 1})
	expect(t, l.Allow("alice", ""), true, None, 0)
	for range 10 { // refused by the user limit: the global bucket keeps its last token
		expect(t, l.Allow("alice", ""), false, User, 10*time.Second)
	}
	expect(t, l.Allow("bob", ""), true, None, 0)
	expect(t, l.Allow("carol", ""), false, Global, time.Second)
}

func TestRefundWhenLaterLimitRefuses(t *testing.T) {
	// IP refuses: the user's token is given back.
	l, _ := newTest(Rates{PerUserPerSecond: 0.1, UserBurst: 2, PerIPPerSecond: 0.1, IPBurst: 1})
	expect(t, l.Allow("alice", "1.1.1.1"), true, None, 0)
	for range 5 {
		expect(t, l.Allow("alice", "1.1.1.1"), false, IP, 10*time.Second)
	}
	expect(t, l.Allow("alice", "2.2.2.2"), true, None, 0) // second user token still there
	expect(t, l.Allow("alice", "3.3.3.3"), false, User, 10*time.Second)
	// ...and 3.3.3.3 was not charged either.
	expect(t, l.Allow("bob", "3.3.3.3"), true, None, 0)

	// Global refuses: both the user and the IP tokens are given back.
	l, clk := newTest(Rates{RequestsPerSecond: 1, Burst: 1, PerUserPerSecond: 0.1, UserBurst: 1, PerIPPerSecond: 0.1, IPBurst: 1})
	expect(t, l.Allow("alice", "1.1.1.1"), true, None, 0)
	expect(t, l.Allow("bob", "2.2.2.2"), false, Global, time.Second)
	step(clk, time.Second)
	expect(t, l.Allow("bob", "2.2.2.2"), true, None, 0)
}

func TestSetShare(t *testing.T) {
	l, clk := newTest(Rates{RequestsPerSecond: 100, Burst: 100, PerUserPerSecond: 2, UserBurst: 2})
	// Existing per-user bucket before the rescale.
	expect(t, l.Allow("alice", ""), true, None, 0)

	l.SetShare(4) // 25/s burst 25 global; 0.5/s per user, keeping the burst of 2
	if l.Share() != 4 {
		t.Fatalf("Share = %d", l.Share())
	}
	// A bucket's debt is kept as time: alice owes 0.5 s, now against one
	// token every 2 s and a burst of 2, so one more passes, then she waits
	// 0.5 s (rounded up to 1 s).
	expect(t, l.Allow("alice", ""), true, None, 0)
	expect(t, l.Allow("alice", ""), false, User, time.Second)
	expect(t, l.Allow("bob", ""), true, None, 0)
	expect(t, l.Allow("bob", ""), true, None, 0)
	expect(t, l.Allow("bob", ""), false, User, 2*time.Second)

	step(clk, time.Hour)
	for i := range 25 {
		expect(t, l.Allow(fmt.Sprint("u", i), ""), true, None, 0)
	}
	expect(t, l.Allow("last", ""), false, Global, time.Second)

	l.SetShare(0) // treated as 1
	if l.Share() != 1 {
		t.Fatalf("Share = %d after SetShare(0)", l.Share())
	}
	step(clk, time.Hour)
	expect(t, l.Allow("bob", ""), true, None, 0) // bob's existing bucket is back to 2/s burst 2
	expect(t, l.Allow("bob", ""), true, None, 0)
	expect(t, l.Allow("bob", ""), false, User, time.Second)
	for i := range 98 { // global burst back to 100
		expect(t, l.Allow(fmt.Sprint("w", i), ""), true, None, 0)
	}
	expect(t, l.Allow("w100", ""), false, Global, time.Second)

	l.SetRates(Rates{RequestsPerSecond: 1})
	step(clk, time.Hour)
	expect(t, l.Allow("x", ""), true, None, 0)
	expect(t, l.Allow("x", ""), false, Global, time.Second)
}

func TestShareBurstFloor(t *testing.T) {
	l, _ := newTest(Rates{RequestsPerSecond: 20, Burst: 20})
	l.SetShare(50) // 0.4/s per pod, burst max(1, 20/50) = 1
	expect(t, l.Allow("", ""), true, None, 0)
	expect(t, l.Allow("", ""), false, Global, 3*time.Second) // 2.5 s rounded up
}

// TestShareKeepsPerKeyBurst: per-user and per-IP buckets keep their whole
// burst on every pod (a buyer's token and purchase arrive together), while
// their sustained rate is shared.
func TestShareKeepsPerKeyBurst(t *testing.T) {
	l, clk := newTest(Rates{PerIPPerSecond: 20, IPBurst: 20, PerUserPerSecond: 2})
	l.SetShare(50) // 0.4/s per pod for each IP, burst still 20
	for range 20 {
		expect(t, l.Allow("", "9.9.9.9"), true, None, 0)
	}
	expect(t, l.Allow("", "9.9.9.9"), false, IP, 3*time.Second) // 2.5 s rounded up
	expect(t, l.Allow("alice", ""), true, None, 0)
	expect(t, l.Allow("alice", ""), true, None, 0)
	expect(t, l.Allow("alice", ""), false, User, 25*time.Second) // 2/50 per s: one every 25 s
	step(clk, 25*time.Second)
	expect(t, l.Allow("alice", ""), true, None, 0)
}

func TestUnlimited(t *testing.T) {
	for _, r := range []Rates{{}, {RequestsPerSecond: -1, PerUserPerSecond: -5, PerIPPerSecond: 0}} {
		l, _ := newTest(r)
		for i := range 10_000 {
			expect(t, l.Allow("alice", fmt.Sprint("10.0.", i%3, ".1")), true, None, 0)
		}
		if u, i := l.Len(); u != 0 || i != 0 {
			t.Fatalf("unlimited dimensions hold buckets: %d users, %d ips", u, i)
		}
	}
	// One dimension unlimited, the others not.
	l, _ := newTest(Rates{PerUserPerSecond: 1, UserBurst: 1})
	expect(t, l.Allow("alice", "1.1.1.1"), true, None, 0)
	expect(t, l.Allow("bob", "1.1.1.1"), true, None, 0)
	expect(t, l.Allow("alice", "1.1.1.1"), false, User, time.Second)
}

func TestEmptyKeysAreNotLimited(t *testing.T) {
	l, _ := newTest(Rates{PerUserPerSecond: 1, UserBurst: 1, PerIPPerSecond: 1, IPBurst: 1})
	for range 5 {
		expect(t, l.Allow("", ""), true, None, 0)
		expect(t, l.AllowAddr("", netip.Addr{}), true, None, 0)
	}
}

func TestAllowAddr(t *testing.T) {
	l, _ := newTest(Rates{PerIPPerSecond: 1, IPBurst: 1})
	expect(t, l.AllowAddr("a", netip.MustParseAddr("192.0.2.7")), true, None, 0)
	// The IPv4-mapped form is the same client.
	expect(t, l.AllowAddr("b", netip.MustParseAddr("::ffff:192.0.2.7")), false, IP, time.Second)
	expect(t, l.AllowAddr("c", netip.MustParseAddr("2001:db8::7")), true, None, 0)
	expect(t, l.AllowAddr("d", netip.MustParseAddr("2001:db8::7")), false, IP, time.Second)
	// An IPv6 client is its /64: another address of the same /64 (a privacy
	// address, a zone) shares the bucket, the next /64 does not.
	expect(t, l.AllowAddr("e", netip.MustParseAddr("2001:db8::ffff:ffff:ffff:1")), false, IP, time.Second)
	expect(t, l.AllowAddr("f", netip.MustParseAddr("fe80::1%eth0")), true, None, 0)
	expect(t, l.AllowAddr("g", netip.MustParseAddr("fe80::2")), false, IP, time.Second)
	expect(t, l.AllowAddr("h", netip.MustParseAddr("2001:db8:0:1::7")), true, None, 0)
	// IPv4 stays per address: the neighbour of 192.0.2.7 has its own bucket.
	expect(t, l.AllowAddr("i", netip.MustParseAddr("192.0.2.8")), true, None, 0)
}

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"::ffff:192.0.2.7":          "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1%eth0": "2001:db8:1:2::",
		"::1":                       "::",
		"2001:db8:1:3:0:0:0:0":      "2001:db8:1:3::",
	} {
		if got := IPKey(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("IPKey(%s) = %s, want %s", in, got, want)
		}
	}
	if IPKey(netip.Addr{}).IsValid() {
		t.Error("IPKey of the zero Addr is valid")
	}
}

func TestEvictionOfRefilledBuckets(t *testing.T) {
	l, clk := newTest(Rates{PerUserPerSecond: 1, UserBurst: 1, PerIPPerSecond: 1, IPBurst: 1})
	for i := range 1000 {
		l.Allow(fmt.Sprint("u", i), fmt.Sprint("ip", i))
	}
	if u, i := l.Len(); u != 1000 || i != 1000 {
		t.Fatalf("Len = %d, %d; want 1000, 1000", u, i)
	}
	step(clk, 2*time.Second) // every bucket has refilled: they carry no information any more
	// New keys landing in every shard trigger the lazy sweep.
	for i := range 2000 {
		l.Allow(fmt.Sprint("new", i), fmt.Sprint("newip", i))
	}
	if u, i := l.Len(); u != 2000 || i != 2000 {
		t.Fatalf("after sweep Len = %d, %d; want 2000, 2000", u, i)
	}
	// A key that is still in debt survives a sweep.
	step(clk, 2*time.Second)
	expect(t, l.Allow("alice", ""), true, None, 0)
	step(clk, 1100*time.Millisecond) // sweeps may run again; alice has refilled too
	expect(t, l.Allow("alice", ""), true, None, 0)
	for i := range 1000 {
		l.Allow(fmt.Sprint("later", i), "")
	}
	expect(t, l.Allow("alice", ""), false, User, time.Second)
}

func TestCapOnKeys(t *testing.T) {
	l, _ := newTest(Rates{PerIPPerSecond: 0.01, IPBurst: 1}, WithMaxKeys(640)) // 10 per shard
	// A botnet of random IPs at one instant: all in debt, nothing to sweep.
	for i := range 100_000 {
		expect(t, l.Allow("", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)), true, None, 0)
	}
	if _, n := l.Len(); n > 640 {
		t.Fatalf("per-IP buckets = %d, cap 640", n)
	}
	// A newcomer is still tracked (it evicted someone).
	expect(t, l.Allow("", "198.51.100.1"), true, None, 0)
	expect(t, l.Allow("", "198.51.100.1"), false, IP, 100*time.Second)

	tiny, _ := newTest(Rates{PerUserPerSecond: 1}, WithMaxKeys(1)) // raised to 1 per shard
	for i := range 1000 {
		tiny.Allow(fmt.Sprint("u", i), "")
	}
	if n, _ := tiny.Len(); n > numShards {
		t.Fatalf("buckets = %d, cap %d", n, numShards)
	}
}

func TestConcurrentGlobalIsExact(t *testing.T) {
	l, _ := newTest(Rates{RequestsPerSecond: 1000, Burst: 1000, PerUserPerSecond: 1, UserBurst: 1})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 500 {
				if l.Allow(fmt.Sprint(g, "-", i), "").Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 1000 {
		t.Fatalf("allowed %d, want exactly the burst of 1000", allowed.Load())
	}
}

func TestLimitString(t *testing.T) {
	for l, want := range map[Limit]string{None: "", Global: "global", User: "user", IP: "ip"} {
		if l.String() != want {
			t.Errorf("%d.String() = %q, want %q", l, l.String(), want)
		}
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, _ := newTest(Rates{RequestsPerSecond: 1e6, PerUserPerSecond: 1e6, PerIPPerSecond: 1e6})
	ip := netip.MustParseAddr("2001:db8::1")
	l.Allow("alice", "1.2.3.4")
	l.AllowAddr("alice", ip)
	if n := testing.AllocsPerRun(1000, func() { l.Allow("alice", "1.2.3.4") }); n != 0 {
		t.Errorf("Allow allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { l.AllowAddr("alice", ip) }); n != 0 {
		t.Errorf("AllowAddr allocates %v times", n)
	}
}
