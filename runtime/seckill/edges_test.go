package seckill_test

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/risk"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// toggleRisk allows purchases until deny is set.
type toggleRisk struct{ deny atomic.Bool }

func (r *toggleRisk) Check(context.Context, risk.Request) (risk.Decision, error) {
	return risk.Decision{Allow: !r.deny.Load(), Reason: "score too high"}, nil
}

// TestRetryGetsItsOrderWhateverRefusesIt: a buyer whose purchase was
// admitted but whose answer was lost retries with the same token. Whatever
// would refuse the retry now (the sale ended or closed, the go-live gate,
// the pause, the rate limit, the risk check, the token's own expiry however
// long ago), the retry gets its order back (202, the same order number) and
// nothing moves; a buyer who did not buy with their token still gets the
// refusal.
func TestRetryGetsItsOrderWhateverRefusesIt(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// refuse makes the retry refused, and says with which code.
		refuse func(t *testing.T, s *testServer, clk *clocktesting.FakeClock, rk *toggleRisk) string
	}{
		{"ended", func(_ *testing.T, s *testServer, clk *clocktesting.FakeClock, _ *toggleRisk) string {
			clk.SetTime(s.sale.Spec.EndTime.Time) // the token (10 s) outlives the sale (5 s)
			return "ENDED"
		}},
		{"closed early", func(t *testing.T, s *testServer, _ *clocktesting.FakeClock, _ *toggleRisk) string {
			if err := switches.SetClosed(ctx, s.rdb, s.sale.SaleKey(), true); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, time.Second, "the pod answers ENDED", func() bool { return s.token("probe", "1001").Error == "ENDED" })
			return "ENDED"
		}},
		{"held", func(t *testing.T, s *testServer, _ *clocktesting.FakeClock, _ *toggleRisk) string {
			if err := switches.SetHeld(ctx, s.rdb, s.sale.SaleKey(), true); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, time.Second, "the pod answers NOT_READY", func() bool { return s.token("probe", "1001").Error == "NOT_READY" })
			return "NOT_READY"
		}},
		{"paused", func(t *testing.T, s *testServer, _ *clocktesting.FakeClock, _ *toggleRisk) string {
			if err := switches.SetPaused(ctx, s.rdb, s.sale.SaleKey(), true); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, time.Second, "the pod answers PAUSED", func() bool { return s.token("probe", "1001").Error == "PAUSED" })
			return "PAUSED"
		}},
		{"rate limited", func(t *testing.T, s *testServer, _ *clocktesting.FakeClock, _ *toggleRisk) string {
			// The clock stands still: the buyers' buckets stay empty.
			for _, u := range []string{"buyer", "other"} {
				for i := 0; s.token(u, "1001").Error != "RATE_LIMITED"; i++ {
					if i > 10 {
						t.Fatalf("%s never rate limited", u)
					}
				}
			}
			return "RATE_LIMITED"
		}},
		{"risk rejected", func(_ *testing.T, _ *testServer, _ *clocktesting.FakeClock, rk *toggleRisk) string {
			rk.deny.Store(true)
			return "RISK_REJECTED"
		}},
		{"token expired an hour ago", func(_ *testing.T, s *testServer, clk *clocktesting.FakeClock, _ *toggleRisk) string {
			// Long after the token and the sale ended: the token's record
			// lives until teardown, so the buyer still learns their order.
			clk.Step(s.sale.TokenTTL() + time.Hour)
			return "BAD_TOKEN"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rdb := testutil.Redis(t)
			fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 10, Price: "1.00", PerUserLimit: 2})
			now := time.Now().Truncate(time.Millisecond)
			fs.Spec.StartTime = metav1.NewTime(now.Add(-time.Second))
			fs.Spec.EndTime = metav1.NewTime(now.Add(5 * time.Second))
			if tc.name == "rate limited" {
				fs.Spec.RateLimit = v1alpha1.RateLimit{PerUserPerSecond: 2}
			}
			clk := clocktesting.NewFakeClock(now)
			rk := &toggleRisk{}
			s := startServer(t, rdb, fs, serverOpts{clock: clk, risk: rk})

			tk := s.token("buyer", "1001")
			first := s.purchase("buyer", "1001", tk.Token)
			if first.Status != http.StatusAccepted {
				t.Fatalf("first purchase: %d %s", first.Status, first.Error)
			}
			other := s.token("other", "1001") // a token that never bought
			if other.Status != http.StatusOK {
				t.Fatalf("other's token: %d %s", other.Status, other.Error)
			}
			code := tc.refuse(t, s, clk, rk)
			before := snapshot(t, rdb, fs)
			retry := s.purchase("buyer", "1001", tk.Token)
			if retry.Status != http.StatusAccepted || retry.OrderNo != first.OrderNo {
				t.Fatalf("retry with the same token: %d %s %q, want 202 with order %s", retry.Status, retry.Error, retry.OrderNo, first.OrderNo)
			}
			if r := s.purchase("other", "1001", other.Token); r.Error != code {
				t.Fatalf("a token that never bought: %d %s, want %s", r.Status, r.Error, code)
			}
			if after := snapshot(t, rdb, fs); after != before {
				t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
			}
			if n := stock(t, rdb, fs, "1001"); n != 9 {
				t.Fatalf("stock %d, want 9", n)
			}
		})
	}
}

// TestForgedTokensDoNotDrainTheSaleBucket: the token's HMAC is checked
// before the sale-wide bucket is charged, so a flood of forged tokens
// (answered 403) leaves the sale's capacity to real buyers.
func TestForgedTokensDoNotDrainTheSaleBucket(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	fs.Spec.RateLimit = v1alpha1.RateLimit{RequestsPerSecond: 5}
	clk := clocktesting.NewFakeClock(time.Now()) // stands still: no refill
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	other := newSale(t, rdb)
	for i := range 200 {
		user := "bot" + strconv.Itoa(i)
		forged, _, err := s.signer.Issue(other.SaleKey(), "1001", user) // genuine shape, wrong sale
		if err != nil {
			t.Fatal(err)
		}
		if r := s.purchase(user, "1001", forged); r.Status != http.StatusForbidden || r.Error != "BAD_TOKEN" {
			t.Fatalf("forged token %d: %d %s, want 403 BAD_TOKEN", i, r.Status, r.Error)
		}
	}
	if r := s.buy("alice", "1001"); r.Status != http.StatusAccepted {
		t.Fatalf("a real buyer after the flood: %d %s (%s), want 202", r.Status, r.Error, r.Message)
	}
}

// TestOrderPollingIsRateLimited: result polling reads Redis, so it is
// limited per user and per IP (429 with Retry-After), in buckets of its own:
// polling once a second always passes, and polling neither uses up the
// buyer's purchase budget nor the sale-wide bucket.
func TestOrderPollingIsRateLimited(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 10, Price: "1.00", PerUserLimit: 2})
	fs.Spec.RateLimit = v1alpha1.RateLimit{RequestsPerSecond: 4, PerUserPerSecond: 2, PerIPPerSecond: 5}
	fs.Spec.Access = &v1alpha1.Access{TrustedProxies: []string{"127.0.0.1/32", "::1/128"}}
	clk := clocktesting.NewFakeClock(time.Now())
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	poll := func(user, ip, orderNo string) reply {
		return s.call(http.MethodGet, "/orders/"+orderNo, "", "X-User-ID", user, "X-Forwarded-For", ip)
	}
	buy := func(user, ip string) reply {
		tk := s.call(http.MethodPost, "/token", `{"sku":"1001"}`, "X-User-ID", user, "X-Forwarded-For", ip)
		if tk.Status != http.StatusOK {
			return tk
		}
		return s.call(http.MethodPost, "/purchase", `{"sku":"1001","token":"`+tk.Token+`"}`, "X-User-ID", user, "X-Forwarded-For", ip)
	}
	order := buy("alice", "198.51.100.1")
	if order.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", order.Status, order.Error)
	}
	clk.Step(time.Second) // alice's and the sale's buckets refill

	// A buyer polling once a second is always answered.
	for i := range 10 {
		if r := poll("alice", "198.51.100.1", order.OrderNo); r.Status != http.StatusOK || r.State != "queued" {
			t.Fatalf("poll %d at 1/s: %d %s", i, r.Status, r.Error)
		}
		clk.Step(time.Second)
	}
	// Faster than perUserPerSecond (burst 2): refused with Retry-After.
	var r reply
	for range 3 {
		r = poll("alice", "198.51.100.1", order.OrderNo)
	}
	if r.Status != http.StatusTooManyRequests || r.Error != "RATE_LIMITED" || r.RetryAfter == "" {
		t.Fatalf("third poll within a second: %d %s Retry-After=%q, want 429 RATE_LIMITED with Retry-After", r.Status, r.Error, r.RetryAfter)
	}
	// Polling used neither alice's purchase budget nor the sale's: 12 polls
	// in the sale-wide bucket of 4 would have emptied it.
	if r := buy("alice", "198.51.100.1"); r.Status != http.StatusAccepted {
		t.Fatalf("a purchase after polling: %d %s (%s), want 202", r.Status, r.Error, r.Message)
	}
	// Per IP: five buyers behind one address poll once each (IP burst 5);
	// the sixth is refused by the IP limit.
	for i := range 6 {
		r = poll("neighbour"+strconv.Itoa(i), "203.0.113.9", order.OrderNo)
		want := http.StatusNotFound // not their order
		if i == 5 {
			want = http.StatusTooManyRequests
		}
		if r.Status != want {
			t.Fatalf("poll by neighbour %d: %d %s (%s), want %d", i, r.Status, r.Error, r.Message, want)
		}
	}
}

// TestIPv6ClientsAreCountedByTheir64: per-IP limits key an IPv6 client on
// its /64 (a host picks any address of it at will), IPv4 on the address.
func TestIPv6ClientsAreCountedByTheir64(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	fs.Spec.RateLimit = v1alpha1.RateLimit{PerIPPerSecond: 1}
	fs.Spec.Access = &v1alpha1.Access{TrustedProxies: []string{"127.0.0.1/32", "::1/128"}}
	clk := clocktesting.NewFakeClock(time.Now())
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	token := func(user, ip string) reply {
		return s.call(http.MethodPost, "/token", `{"sku":"1001"}`, "X-User-ID", user, "X-Forwarded-For", ip)
	}
	for i, tc := range []struct {
		ip   string
		want int
	}{
		{"2001:db8:1:2::1", 200},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 429}, // same /64
		{"[2001:db8:1:2::3]:443", 429},            // same /64, with a port
		{"2001:db8:1:3::1", 200},                  // the next /64
		{"192.0.2.1", 200},
		{"::ffff:192.0.2.1", 429}, // IPv4-mapped: the same IPv4 client
		{"192.0.2.2", 200},        // IPv4 stays per address
	} {
		if r := token("u"+strconv.Itoa(i), tc.ip); r.Status != tc.want {
			t.Errorf("token from %s: %d %s, want %d", tc.ip, r.Status, r.Error, tc.want)
		}
	}
}

// TestSkewedPodsMakeOneOrderPerToken: a token is judged by the expiry
// written in it against the verifying pod's clock, while its key in Redis
// expired after 2×TTL + 5 s of Redis' time. A pod whose clock is off (here
// stuck a minute ahead or behind) kept accepting the token after its key was
// gone, and the same token made a second order. Now the key lives until the
// token's expiry plus a margin (by Redis' clock, corrected for the pod's
// skew), and a pod refuses a token whose expiry lies further ahead than the
// TTL allows.
func TestSkewedPodsMakeOneOrderPerToken(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 10, Price: "1.00", PerUserLimit: 5})
	const ttl = 100 * time.Millisecond
	fs.Spec.Token.TTL = &metav1.Duration{Duration: ttl}
	fs.Spec.StartTime = metav1.NewTime(time.Now().Add(-2 * time.Minute)) // open for the pod behind too
	ahead := startServer(t, rdb, fs, serverOpts{clock: clocktesting.NewFakeClock(time.Now().Add(time.Minute))})
	behind := startServer(t, rdb, fs, serverOpts{clock: clocktesting.NewFakeClock(time.Now().Add(-time.Minute)), noWarm: true})
	exact := startServer(t, rdb, fs, serverOpts{noWarm: true})

	type bought struct {
		pod            *testServer
		user, tok, ord string
	}
	var orders []bought
	for name, pod := range map[string]*testServer{"ahead": ahead, "behind": behind} {
		user := "buyer-" + name
		tk := pod.token(user, "1001")
		r := pod.purchase(user, "1001", tk.Token)
		if r.Status != http.StatusAccepted {
			t.Fatalf("purchase on the pod %s: %d %s", name, r.Status, r.Error)
		}
		orders = append(orders, bought{pod, user, tk.Token, r.OrderNo})
	}
	// Past the old key lifetime (2×TTL + 5 s), the skewed pods still hold
	// the tokens valid: a retry must find the same order.
	time.Sleep(2*ttl + 5*time.Second + 300*time.Millisecond)
	for _, b := range orders {
		r := b.pod.purchase(b.user, "1001", b.tok)
		if r.Status != http.StatusAccepted || r.OrderNo != b.ord {
			t.Errorf("retry by %s after %s: %d %s %q, want 202 with order %s", b.user, 2*ttl+5*time.Second, r.Status, r.Error, r.OrderNo, b.ord)
		}
	}
	if n, _ := rdb.XLen(context.Background(), keys.ForSKU(fs.SaleKey(), "1001").Stream).Result(); n != 2 {
		t.Errorf("stream holds %d orders, want 2 (one per token)", n)
	}

	// A token minted a minute ahead would stay valid a minute longer on a
	// pod with the right time: that pod refuses it.
	aheadTok := ahead.token("someone", "1001").Token
	if r := exact.purchase("someone", "1001", aheadTok); r.Status != http.StatusForbidden || r.Error != "BAD_TOKEN" {
		t.Fatalf("a token a minute ahead on an exact pod: %d %s, want 403 BAD_TOKEN", r.Status, r.Error)
	}
}

// TestReplayLookupsAreRateLimited: the Redis lookup a refused retry makes is
// charged to the buyer's read buckets, so one token replayed in a loop
// cannot become a stream of Redis calls; when the bucket is empty a final
// refusal (here ENDED) that could be wrong is answered 429 with Retry-After
// instead, and the next second the retry gets its order.
func TestReplayLookupsAreRateLimited(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb)
	fs.Spec.RateLimit = v1alpha1.RateLimit{PerUserPerSecond: 1}
	clk := clocktesting.NewFakeClock(time.Now())
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	tk := s.token("buyer", "1001")
	clk.Step(time.Second)
	first := s.purchase("buyer", "1001", tk.Token)
	if first.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", first.Status, first.Error)
	}
	if err := switches.SetClosed(ctx, rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "the pod answers ENDED", func() bool { return s.token("probe", "1001").Error == "ENDED" })
	if r := s.purchase("buyer", "1001", tk.Token); r.Status != http.StatusAccepted || r.OrderNo != first.OrderNo {
		t.Fatalf("retry: %d %s, want 202 with order %s", r.Status, r.Error, first.OrderNo)
	}
	before := snapshot(t, rdb, fs)
	r := s.purchase("buyer", "1001", tk.Token)
	if r.Status != http.StatusTooManyRequests || r.Error != "RATE_LIMITED" || r.RetryAfter != "1" {
		t.Fatalf("a second retry within the second: %d %s Retry-After=%q, want 429 RATE_LIMITED after 1 s", r.Status, r.Error, r.RetryAfter)
	}
	clk.Step(time.Second)
	if r := s.purchase("buyer", "1001", tk.Token); r.Status != http.StatusAccepted || r.OrderNo != first.OrderNo {
		t.Fatalf("retry a second later: %d %s, want 202 with order %s", r.Status, r.Error, first.OrderNo)
	}
	if after := snapshot(t, rdb, fs); after != before {
		t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
	}
}
