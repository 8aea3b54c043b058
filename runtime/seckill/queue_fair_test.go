package seckill_test

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestQueueIsFair: 10,000 buyers join the pre-queue in a known order, the
// first 100 of them bots that join again and again; admission after the
// start goes by places drawn at random, so the admission order is
// uncorrelated with the join order (Spearman's rho near 0: its standard
// deviation under a fair shuffle is 1/sqrt(n-1) = 0.01, so |rho| < 0.05 is
// five of them; a first-come-first-served queue gives rho = 1). Every
// buyer holds one ticket and one place, nobody is admitted twice, and a
// forged or borrowed ticket gets nothing.
func TestQueueIsFair(t *testing.T) {
	const users, bots, botJoins = 10000, 100, 20
	const rate = 2000 // admitted per second: five seconds of admission
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Millisecond)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: rate},
		v1alpha1.SKU{ID: "1001", Stock: 2 * users, Price: "1.00", PerUserLimit: 1})
	clk := clocktesting.NewFakeClock(now)
	s := startServer(t, rdb, fs, serverOpts{clock: clk})

	tickets := joinInOrder(t, s, users, bots, botJoins)
	if f := figures(t, s); f.Joined != users || f.Admitted != 0 {
		t.Fatalf("after the joins: %+v, want %d joined, none admitted", f, users)
	}
	before := s.wait(userName(0), tickets[0])
	if before.Status != http.StatusOK || before.State != "waiting" || before.Place != nil || before.Ahead == nil || *before.Ahead != users-1 {
		t.Fatalf("wait before the start: %d %s %+v", before.Status, before.Body, before)
	}
	checkForgedTickets(t, s, tickets)

	batches := admitAll(t, s, clk, users, rate)
	places := placesOf(t, s, tickets)
	checkBatchesInPlaceOrder(t, batches, places)
	checkRejoin(t, s, tickets, places)

	order := make([]int64, users) // join order i -> admission order (place - 1)
	for i := range users {
		order[i] = places[userName(i)] - 1
	}
	rho := spearman(order)
	t.Logf("Spearman rank correlation between join order and admission order over %d buyers: %.4f", users, rho)
	if math.Abs(rho) >= 0.05 {
		t.Fatalf("admission order correlates with join order: rho = %.4f", rho)
	}
	var botPlaces float64
	for i := range bots {
		botPlaces += float64(order[i])
	}
	t.Logf("mean admission rank of the %d bots that joined first, %d times each: %.0f of %d (fair: about %d)",
		bots, botJoins, botPlaces/bots, users, users/2)
	if got := metricSum(t, s.Metrics().Registry, seckill.MetricQueueAdmissions); got != users {
		t.Fatalf("%s = %v, want %d: somebody was admitted twice, or not at all", seckill.MetricQueueAdmissions, got, users)
	}
	if got := metricSum(t, s.Metrics().Registry, seckill.MetricQueueWait); got != users {
		t.Fatalf("%s observed %v waits, want %d", seckill.MetricQueueWait, got, users)
	}
}

// joinInOrder joins users one after the other; each of the first bots
// users joins botJoins times, again after every users/botJoins others.
// Every join of a user answers the same ticket, 201 the first time only.
func joinInOrder(t *testing.T, s *testServer, users, bots, botJoins int) []string {
	t.Helper()
	tickets := make([]string, users)
	for i := range users {
		r := s.join(userName(i))
		if r.Status != http.StatusCreated || r.Ticket == "" || r.State != "waiting" {
			t.Fatalf("join %d: %d %s", i, r.Status, r.Body)
		}
		tickets[i] = r.Ticket
		if i < bots || i%(users/botJoins) != 0 {
			continue
		}
		for b := range bots {
			again := s.join(userName(b))
			if again.Status != http.StatusOK || again.Ticket != tickets[b] {
				t.Fatalf("bot %d joining again: %d %s, want 200 with its ticket", b, again.Status, again.Body)
			}
		}
	}
	return tickets
}

// checkForgedTickets: a made-up ticket, a real one with a character
// changed, one signed with another key and another buyer's are all
// BAD_TICKET, at the wait and at /token; /token without a ticket is
// NOT_ADMITTED. None of them changes the queue.
func checkForgedTickets(t *testing.T, s *testServer, tickets []string) {
	t.Helper()
	ring, err := token.NewKeyRing([]byte("another-key-another-key-another-key!!"))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := token.NewSigner(ring, 0, nil).Ticket(s.sale.SaleKey(), userName(1))
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(tickets[1])
	if c := &flipped[len(flipped)-5]; *c == 'A' {
		*c = 'B'
	} else {
		*c = 'A'
	}
	forged := map[string]string{
		"made up":         "q1.0000abcd.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"changed":         string(flipped),
		"other key":       otherKey,
		"borrowed":        tickets[2], // user 2's, presented by user 1
		"other sale's":    otherSaleTicket(t, s),
		"path token":      tickets[1][:10],
		"empty-ish space": "%20",
	}
	before := figures(t, s)
	for name, tk := range forged {
		if r := s.wait(userName(1), tk); r.Status != http.StatusForbidden || r.Error != seckill.CodeBadTicket {
			t.Fatalf("wait with a %s ticket: %d %s, want 403 BAD_TICKET", name, r.Status, r.Body)
		}
	}
	if r := s.tokenWith(userName(1), "1001", tickets[2]); r.Status != http.StatusTooEarly {
		t.Fatalf("token before the start: %d %s, want 425", r.Status, r.Body)
	}
	if after := figures(t, s); after != before {
		t.Fatalf("refused tickets changed the queue: %+v -> %+v", before, after)
	}
}

func otherSaleTicket(t *testing.T, s *testServer) string {
	t.Helper()
	ring, err := token.NewKeyRing(testKey)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := token.NewSigner(ring, 0, nil).Ticket(s.sale.Namespace+"/other", userName(1))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// admitAll moves the clock past the start a second at a time (rate more
// admissions each, the token bucket's burst) until everybody is admitted,
// and returns who each second admitted (the admissions set's scores are
// the admission times). After the first second it checks the gate of
// /token: an admitted ticket gets a token; a waiting one, NOT_ADMITTED with
// its place; none, NOT_ADMITTED; another buyer's, BAD_TICKET.
func admitAll(t *testing.T, s *testServer, clk *clocktesting.FakeClock, users, rate int) [][]string {
	t.Helper()
	clk.SetTime(s.sale.Spec.StartTime.Time)
	var batches [][]string
	for admitted := 0; admitted < users; {
		clk.Step(time.Second)
		admitted = min(admitted+rate, users)
		waitAdmitted(t, s, int64(admitted))
		ms := strconv.FormatInt(clk.Now().UnixMilli(), 10)
		batch, err := s.rdb.ZRangeByScore(context.Background(), keys.ForSale(s.sale.SaleKey()).Admissions,
			&redis.ZRangeBy{Min: ms, Max: ms}).Result()
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, batch)
		if len(batches) == 1 {
			checkGate(t, s, batch)
		}
	}
	return batches
}

func checkGate(t *testing.T, s *testServer, admitted []string) {
	t.Helper()
	in := map[string]bool{}
	for _, u := range admitted {
		in[u] = true
	}
	var waiting string
	for i := 0; waiting == ""; i++ {
		if !in[userName(i)] {
			waiting = userName(i)
		}
	}
	ticket := func(u string) string { return s.join(u).Ticket }
	if r := s.tokenWith(admitted[0], "1001", ticket(admitted[0])); r.Status != http.StatusOK || r.Token == "" {
		t.Fatalf("token of an admitted buyer: %d %s", r.Status, r.Body)
	}
	w := s.wait(waiting, ticket(waiting))
	r := s.tokenWith(waiting, "1001", ticket(waiting))
	if r.Status != http.StatusForbidden || r.Error != seckill.CodeNotAdmitted || r.Place == nil || w.Place == nil || *r.Place != *w.Place || r.Ahead == nil || *r.Ahead != *w.Ahead {
		t.Fatalf("token of a waiting buyer (wait: %s): %d %s, want 403 NOT_ADMITTED with the place", w.Body, r.Status, r.Body)
	}
	if r := s.token(waiting, "1001"); r.Status != http.StatusForbidden || r.Error != seckill.CodeNotAdmitted {
		t.Fatalf("token without a ticket: %d %s, want 403 NOT_ADMITTED", r.Status, r.Body)
	}
	if r := s.tokenWith(waiting, "1001", ticket(admitted[0])); r.Status != http.StatusForbidden || r.Error != seckill.CodeBadTicket {
		t.Fatalf("token with an admitted buyer's ticket, borrowed: %d %s, want 403 BAD_TICKET", r.Status, r.Body)
	}
	if r := s.tokenWith(waiting, "1001", otherSaleTicket(t, s)); r.Status != http.StatusForbidden || r.Error != seckill.CodeBadTicket {
		t.Fatalf("token with another sale's ticket: %d %s, want 403 BAD_TICKET", r.Status, r.Body)
	}
}

// placesOf asks every buyer's place at the wait endpoint: all admitted,
// and the places are 1..n, each once.
func placesOf(t *testing.T, s *testServer, tickets []string) map[string]int64 {
	t.Helper()
	got := make([]reply, len(tickets))
	parallel(len(tickets), 8, func(i int) { got[i] = s.wait(userName(i), tickets[i]) })
	places := map[string]int64{}
	seen := make([]bool, len(tickets)+1)
	for i, r := range got {
		if r.Status != http.StatusOK || r.State != "admitted" || r.Place == nil || r.Next == "" {
			t.Fatalf("wait of %s after admission: %d %s", userName(i), r.Status, r.Body)
		}
		p := *r.Place
		if p < 1 || p > int64(len(tickets)) || seen[p] {
			t.Fatalf("%s has place %d: out of range or given twice", userName(i), p)
		}
		seen[p] = true
		places[userName(i)] = p
	}
	return places
}

// checkBatchesInPlaceOrder: each second admitted the next places, in order.
func checkBatchesInPlaceOrder(t *testing.T, batches [][]string, places map[string]int64) {
	t.Helper()
	var done int64
	for k, b := range batches {
		lo, hi := int64(math.MaxInt64), int64(0)
		for _, u := range b {
			lo, hi = min(lo, places[u]), max(hi, places[u])
		}
		if lo != done+1 || hi != done+int64(len(b)) {
			t.Fatalf("second %d admitted places %d..%d (%d buyers), want %d..%d", k+1, lo, hi, len(b), done+1, done+int64(len(b)))
		}
		done += int64(len(b))
	}
	if done != int64(len(places)) {
		t.Fatalf("batches admitted %d buyers, want %d", done, len(places))
	}
}

// checkRejoin: joining again after the start answers the same ticket and
// the same place (no second place at the end of the queue).
func checkRejoin(t *testing.T, s *testServer, tickets []string, places map[string]int64) {
	t.Helper()
	for i := 0; i < len(tickets); i += 97 {
		r := s.join(userName(i))
		if r.Status != http.StatusOK || r.Ticket != tickets[i] || r.Place == nil || *r.Place != places[userName(i)] {
			t.Fatalf("%s joining again after the start: %d %s, want 200, its ticket and place %d", userName(i), r.Status, r.Body, places[userName(i)])
		}
	}
	if f := figures(t, s); f.Joined != int64(len(tickets)) {
		t.Fatalf("%d places, want %d", f.Joined, len(tickets))
	}
}

// spearman is the rank correlation of i and rank[i], both permutations of
// 0..n-1 (no ties): 1 - 6 sum(d^2) / (n (n^2 - 1)).
func spearman(rank []int64) float64 {
	n := float64(len(rank))
	var d2 float64
	for i, r := range rank {
		d := float64(int64(i) - r)
		d2 += d * d
	}
	return 1 - 6*d2/(n*(n*n-1))
}
