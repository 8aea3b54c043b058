package seckill_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestRefusedBuyersFreeTheBudget is make demo's stall in small: two SKUs,
// a (5 units) and b (50), overbook 1.5, more buyers waiting than the
// budget admits. The admitted buy a until it sells out; the others who
// wanted a are refused SOLD_OUT (at /token, or at the purchase with a token
// fetched before) and leave. Their admissions must not hold the budget
// until admissionTTL while b is on sale: after the grace the admitter
// admits the next in line, who buy b. A refused buyer may still fetch a
// token for b within the grace, not after it.
func TestRefusedBuyersFreeTheBudget(t *testing.T) {
	const users = 200
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Millisecond)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: 1000, Overbook: "1.5"},
		v1alpha1.SKU{ID: "a", Stock: 5, Price: "5.00", PerUserLimit: 1},
		v1alpha1.SKU{ID: "b", Stock: 50, Price: "5.00", PerUserLimit: 1})
	clk := clocktesting.NewFakeClock(now)
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	tickets := joinAll(t, s, users)
	refusedAt := start.Add(time.Second)
	clk.SetTime(refusedAt)
	waitAdmitted(t, s, 82) // floor(55 x 1.5)
	first := admittedNow(s, tickets)
	if len(first) != 82 {
		t.Fatalf("%d admitted by the wait endpoint, want 82", len(first))
	}
	buyersOfA, late, keen, refused := first[:5], first[5], first[6], first[7:]
	lateToken := s.tokenWith(userName(late), "a", tickets[late])
	if lateToken.Status != http.StatusOK {
		t.Fatalf("token for a while on sale: %d %s", lateToken.Status, lateToken.Body)
	}
	for _, i := range buyersOfA {
		s.buyQueued(i, "a", tickets)
	}
	if r := s.purchase(userName(late), "a", lateToken.Token); r.Status != http.StatusGone || r.Error != seckill.CodeSoldOut {
		t.Fatalf("purchase of the sold-out a: %d %s, want 410 SOLD_OUT", r.Status, r.Body)
	}
	for _, i := range refused {
		if r := s.tokenWith(userName(i), "a", tickets[i]); r.Status != http.StatusGone || r.Error != seckill.CodeSoldOut {
			t.Fatalf("token for the sold-out a: %d %s, want 410 SOLD_OUT", r.Status, r.Body)
		}
	}
	// keen buys b after the refusals: once keen's admission is used (a
	// later or the same admitter tick), the refusals are applied too.
	s.buyQueued(keen, "b", tickets)
	testutil.Eventually(t, 20*time.Second, "keen's admission used", func() bool {
		return s.wait(userName(keen), tickets[keen]).State == "done"
	})
	// Within the grace the refused may still choose b, whether refused at
	// /token or at the purchase.
	for _, i := range []int{late, refused[0]} {
		if r := s.tokenWith(userName(i), "b", tickets[i]); r.Status != http.StatusOK {
			t.Fatalf("%s, refused a, asks for b within the grace: %d %s, want a token", userName(i), r.Status, r.Body)
		}
	}

	// The refused leave. After the grace their share of the budget goes to
	// the next in line: floor(49 x 1.5) = 73 more (admissionTTL is 2 min).
	clk.SetTime(refusedAt.Add(seckill.RefusalGrace))
	waitAdmitted(t, s, 82+73)
	var next []int
	for _, i := range admittedNow(s, tickets) {
		if !slices.Contains(first, i) {
			next = append(next, i)
		}
	}
	if len(next) != 73 {
		t.Fatalf("%d newly admitted hold a live admission, want 73", len(next))
	}
	for _, i := range next[:10] {
		s.buyQueued(i, "b", tickets)
	}
	for _, i := range []int{late, refused[0], refused[1]} {
		if r := s.tokenWith(userName(i), "b", tickets[i]); r.Status != http.StatusForbidden || r.Error != seckill.CodeNotAdmitted {
			t.Fatalf("%s asks for b after the grace: %d %s, want 403 NOT_ADMITTED", userName(i), r.Status, r.Body)
		}
		if w := s.wait(userName(i), tickets[i]); w.State != "done" {
			t.Fatalf("wait of %s after the grace: %d %s, want status done", userName(i), w.Status, w.Body)
		}
	}
}
