package seckill_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// joinAll joins users 0..n-1 and returns their tickets.
func joinAll(t *testing.T, s *testServer, n int) []string {
	t.Helper()
	tickets := make([]string, n)
	for i := range n {
		r := s.join(userName(i))
		if r.Status != http.StatusCreated {
			t.Fatalf("join %d: %d %s", i, r.Status, r.Body)
		}
		tickets[i] = r.Ticket
	}
	return tickets
}

// admittedNow returns the users the wait endpoint calls admitted.
func admittedNow(s *testServer, tickets []string) []int {
	var out []int
	for i, tk := range tickets {
		if s.wait(userName(i), tk).State == "admitted" {
			out = append(out, i)
		}
	}
	return out
}

// TestSoldOutSKUKeepsAdmission (review defect 1): a /token refused SOLD_OUT
// for one sold-out SKU, while another SKU is still on sale, leaves the
// buyer's admission in place: it still opens tokens for the other SKU, and
// it still counts against the budget, so nobody more is admitted than the
// remaining stock x overbook. A used admission (a purchase made) opens no
// more tokens, and the wait endpoint says "done".
func TestSoldOutSKUKeepsAdmission(t *testing.T) {
	const users = 60
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Millisecond)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: 1000, Overbook: "1"},
		v1alpha1.SKU{ID: "a", Stock: 1, Price: "5.00", PerUserLimit: 1},
		v1alpha1.SKU{ID: "b", Stock: 10, Price: "5.00", PerUserLimit: 1})
	clk := clocktesting.NewFakeClock(now)
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	tickets := joinAll(t, s, users)
	clk.SetTime(start.Add(time.Second))
	waitAdmitted(t, s, 11) // floor(11 x 1)
	in := admittedNow(s, tickets)
	if len(in) != 11 {
		t.Fatalf("%d admitted by the wait endpoint, want 11", len(in))
	}
	buyerA, buyerB, rest := in[0], in[1], in[2:]
	s.buyQueued(buyerA, "a", tickets)
	for _, i := range rest {
		if r := s.tokenWith(userName(i), "a", tickets[i]); r.Status != http.StatusGone || r.Error != seckill.CodeSoldOut {
			t.Fatalf("token for the sold-out a: %d %s", r.Status, r.Body)
		}
	}
	// B buys b after the others' refusals: once B's admission is freed,
	// everything recorded before it has been flushed too.
	s.buyQueued(buyerB, "b", tickets)
	testutil.Eventually(t, 5*time.Second, "B's admission used", func() bool {
		return s.wait(userName(buyerB), tickets[buyerB]).State == "done"
	})
	time.Sleep(100 * time.Millisecond) // ten more admitter ticks
	if f := figures(t, s); f.Admitted != 11 || f.Outstanding != int64(len(rest)) {
		t.Fatalf("figures %+v: want 11 admitted and %d outstanding for 9 units of b left (overbook 1)", f, len(rest))
	}
	for _, i := range rest {
		if r := s.tokenWith(userName(i), "b", tickets[i]); r.Status != http.StatusOK {
			t.Fatalf("%s, refused a, asks for b: %d %s, want a token (the admission is still live)", userName(i), r.Status, r.Body)
		}
	}
	for _, i := range []int{buyerA, buyerB} {
		w := s.wait(userName(i), tickets[i])
		if w.Status != http.StatusOK || w.State != "done" || w.Message == "" || w.Place == nil || w.PollAfterSeconds != 0 {
			t.Fatalf("wait of %s after buying: %d %s, want status done", userName(i), w.Status, w.Body)
		}
		if r := s.tokenWith(userName(i), "b", tickets[i]); r.Status != http.StatusForbidden || r.Error != seckill.CodeNotAdmitted {
			t.Fatalf("token for %s after buying: %d %s, want 403 NOT_ADMITTED (the admission is used)", userName(i), r.Status, r.Body)
		}
	}
}

// TestExpiredAdmissionOpensNoToken (review defect 2): after admissionTTL an
// unused admission lapses: it stops counting against the budget and opens
// no more tokens (the wait endpoint says "done"), so live token rights
// never exceed the budget however many TTLs pass.
func TestExpiredAdmissionOpensNoToken(t *testing.T) {
	const users = 30
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Millisecond)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: 1000, Overbook: "1"},
		v1alpha1.SKU{ID: "b", Stock: 10, Price: "5.00", PerUserLimit: 1})
	clk := clocktesting.NewFakeClock(now)
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	tickets := joinAll(t, s, users)
	clk.SetTime(start.Add(time.Second))
	waitAdmitted(t, s, 10)
	first := admittedNow(s, tickets)
	if len(first) != 10 {
		t.Fatalf("%d admitted, want 10", len(first))
	}
	clk.SetTime(start.Add(time.Second + fs.AdmissionTTL()))
	waitAdmitted(t, s, 20)
	for _, i := range first {
		if w := s.wait(userName(i), tickets[i]); w.Status != http.StatusOK || w.State != "done" || w.Message == "" {
			t.Fatalf("wait of %s after the TTL: %d %s, want status done", userName(i), w.Status, w.Body)
		}
		if r := s.tokenWith(userName(i), "b", tickets[i]); r.Status != http.StatusForbidden || r.Error != seckill.CodeNotAdmitted {
			t.Fatalf("token of %s after the TTL: %d %s, want 403 NOT_ADMITTED", userName(i), r.Status, r.Body)
		}
	}
	ok := 0
	for i := range users {
		if r := s.tokenWith(userName(i), "b", tickets[i]); r.Status == http.StatusOK {
			ok++
		}
	}
	if ok != 10 {
		t.Fatalf("%d buyers can fetch a token for 10 units at overbook 1, want 10", ok)
	}
}

// rawCall sends a request and returns the response with its body read.
func rawCall(t *testing.T, method, url, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

// TestPersonalAnswersNotCached: a buyer's answers (join, wait, token,
// purchase, order, and every refusal) tell caches to keep nothing; the
// sale and a SKU's stock keep their public caching, and HEAD on the sale
// answers like GET without a body.
func TestPersonalAnswersNotCached(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	clk := clocktesting.NewFakeClock(now)
	fs := queuedSale(t, rdb, now.Add(time.Minute), v1alpha1.Queue{AdmitPerSecond: 10})
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	tk := s.join("alice").Ticket
	user := []string{"X-User-ID", "alice"}
	for _, c := range []struct{ name, method, path, body string }{
		{"join", http.MethodPost, "/queue", ""},
		{"wait", http.MethodGet, "/queue/" + tk, ""},
		{"bad ticket", http.MethodGet, "/queue/q1.x.y", ""},
		{"token before the start", http.MethodPost, "/token", `{"sku":"1001","ticket":"` + tk + `"}`},
		{"purchase", http.MethodPost, "/purchase", `{"sku":"1001","token":"nope"}`},
		{"order", http.MethodGet, "/orders/nope", ""},
		{"wrong method", http.MethodDelete, "/queue", ""},
	} {
		resp, body := rawCall(t, c.method, s.url+c.path, c.body, user...)
		if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
			t.Errorf("%s: %d %s with Cache-Control %q, want private, no-store", c.name, resp.StatusCode, body, cc)
		}
	}
	resp, body := rawCall(t, http.MethodGet, s.url+"/skus/1001", "")
	if cc := resp.Header.Get("Cache-Control"); resp.StatusCode != http.StatusOK || cc != "max-age=1" {
		t.Errorf("sku: %d %s, Cache-Control %q", resp.StatusCode, body, cc)
	}
	get, getBody := rawCall(t, http.MethodGet, s.url, "")
	head, headBody := rawCall(t, http.MethodHead, s.url, "")
	if head.StatusCode != http.StatusOK || headBody != "" || head.Header.Get("Cache-Control") != get.Header.Get("Cache-Control") ||
		head.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(get.Header.Get("Cache-Control"), "public") || getBody == "" {
		t.Errorf("HEAD sale: %d %q %v; GET: %d %v", head.StatusCode, headBody, head.Header, get.StatusCode, get.Header)
	}
	if resp, _ := rawCall(t, http.MethodPost, s.url, "{}"); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST sale: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestQueuePollingKeepsOrderPolling: joins and waits have buckets of their
// own: a buyer who used up their queue rate still polls their order (and
// the other way round).
func TestQueuePollingKeepsOrderPolling(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	clk := clocktesting.NewFakeClock(now) // stands still: no refill
	fs := queuedSale(t, rdb, now.Add(time.Minute), v1alpha1.Queue{AdmitPerSecond: 10})
	fs.Spec.RateLimit = v1alpha1.RateLimit{PerUserPerSecond: 2, PerIPPerSecond: 100}
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	tk := s.join("alice").Ticket
	s.wait("alice", tk)
	if r := s.wait("alice", tk); r.Status != http.StatusTooManyRequests {
		t.Fatalf("third queue request in a second: %d %s, want 429", r.Status, r.Body)
	}
	for i := range 2 {
		if r := s.call(http.MethodGet, "/orders/nope", "", "X-User-ID", "alice"); r.Status != http.StatusNotFound {
			t.Fatalf("order poll %d after the queue's rate was used up: %d %s, want 404 (not rate limited)", i, r.Status, r.Body)
		}
	}
	if r := s.call(http.MethodGet, "/orders/nope", "", "X-User-ID", "alice"); r.Status != http.StatusTooManyRequests {
		t.Fatalf("third order poll in a second: %d %s, want 429", r.Status, r.Body)
	}
	if r := s.join("bob"); r.Status != http.StatusCreated {
		t.Fatalf("another buyer joins: %d %s", r.Status, r.Body)
	}
}

// TestQueueOnRedisClock: on the real clock the waiting room follows Redis's
// clock (one for every pod); with a fake clock it follows that clock.
func TestQueueOnRedisClock(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	onRedisClock := startServer(t, rdb, queuedSale(t, rdb, now.Add(time.Minute), v1alpha1.Queue{AdmitPerSecond: 10}), serverOpts{})
	fake := startServer(t, rdb, queuedSale(t, rdb, now.Add(time.Minute), v1alpha1.Queue{AdmitPerSecond: 10}),
		serverOpts{clock: clocktesting.NewFakeClock(now)})
	if !onRedisClock.QueueOnRedisClock() || fake.QueueOnRedisClock() {
		t.Fatalf("on Redis's clock: real clock %v, fake clock %v; want true, false", onRedisClock.QueueOnRedisClock(), fake.QueueOnRedisClock())
	}
}
