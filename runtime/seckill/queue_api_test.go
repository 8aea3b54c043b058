package seckill_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/page"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

type saleBody struct {
	Namespace  string    `json:"namespace"`
	Name       string    `json:"name"`
	Status     string    `json:"status"`
	SoldOut    bool      `json:"soldOut"`
	StartTime  time.Time `json:"startTime"`
	EndTime    time.Time `json:"endTime"`
	ServerTime time.Time `json:"serverTime"`
	Queue      *struct {
		OpensAt        time.Time `json:"opensAt"`
		AdmitPerSecond int32     `json:"admitPerSecond"`
	} `json:"queue"`
	SKUs []struct {
		SKU          string `json:"sku"`
		Price        string `json:"price"`
		PerUserLimit int32  `json:"perUserLimit"`
		Remaining    int64  `json:"remaining"`
		SoldOut      bool   `json:"soldOut"`
	} `json:"skus"`
}

// getSale reads the sale-level endpoint, with no identity, and checks its
// caching headers.
func getSale(t *testing.T, s *testServer) saleBody {
	t.Helper()
	resp, err := httpClient.Get(s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET sale: %d %s", resp.StatusCode, raw)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=1, s-maxage=1, stale-while-revalidate=2" {
		t.Fatalf("GET sale: Cache-Control %q", cc)
	}
	var b saleBody
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("GET sale: %v in %s", err, raw)
	}
	return b
}

// TestSaleEndpoint: the sale as a whole, for the buyer's page: phase,
// times, server time, the waiting room's opening, and each SKU's stock,
// cacheable by a CDN.
func TestSaleEndpoint(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Second)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: 50, PrequeueLead: &metav1.Duration{Duration: 30 * time.Second}},
		v1alpha1.SKU{ID: "1001", Stock: 5, Price: "9.90", PerUserLimit: 1},
		v1alpha1.SKU{ID: "1002", Stock: 1, Price: "19.00", PerUserLimit: 2})
	clk := clocktesting.NewFakeClock(now)
	s := startServer(t, rdb, fs, serverOpts{clock: clk})

	b := getSale(t, s)
	if b.Namespace != fs.Namespace || b.Name != "sale" || b.Status != seckill.PhaseUpcoming || b.SoldOut ||
		!b.StartTime.Equal(start) || !b.EndTime.Equal(start.Add(time.Hour)) || !b.ServerTime.Equal(now) {
		t.Fatalf("upcoming sale: %+v", b)
	}
	if b.Queue == nil || !b.Queue.OpensAt.Equal(start.Add(-30*time.Second)) || b.Queue.AdmitPerSecond != 50 {
		t.Fatalf("queue: %+v", b.Queue)
	}
	if len(b.SKUs) != 2 || b.SKUs[0].SKU != "1001" || b.SKUs[0].Price != "9.90" || b.SKUs[0].PerUserLimit != 1 ||
		b.SKUs[0].Remaining != 5 || b.SKUs[0].SoldOut || b.SKUs[1].SKU != "1002" || b.SKUs[1].Remaining != 1 || b.SKUs[1].PerUserLimit != 2 {
		t.Fatalf("skus: %+v", b.SKUs)
	}
	clk.SetTime(start.Add(time.Second))
	if b := getSale(t, s); b.Status != seckill.PhaseActive {
		t.Fatalf("started sale: %s", b.Status)
	}
	if err := switches.SetPaused(context.Background(), rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "PAUSED", func() bool { return getSale(t, s).Status == seckill.PhasePaused })
	clk.SetTime(fs.Spec.EndTime.Time)
	if b := getSale(t, s); b.Status != seckill.PhaseEnded {
		t.Fatalf("after the end: %s", b.Status)
	}
	if r := s.call(http.MethodPost, "", "{}"); r.Status != http.StatusMethodNotAllowed {
		t.Fatalf("POST sale: %d %s", r.Status, r.Body)
	}
	if resp, err := httpClient.Get(s.root + "/api/v1/sales/" + fs.Namespace + "/other"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another sale: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestSaleEndpointStock: an unqueued sale answers queue null, and each
// SKU's stock and sell-out as purchases take it; the sale is sold out when
// every SKU is.
func TestSaleEndpointStock(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 2, Price: "1.00", PerUserLimit: 1},
		v1alpha1.SKU{ID: "1002", Stock: 1, Price: "2.00", PerUserLimit: 1})
	s := startServer(t, rdb, fs, serverOpts{})
	b := getSale(t, s)
	if b.Queue != nil || b.Status != seckill.PhaseActive || b.SoldOut {
		t.Fatalf("unqueued sale: %+v", b)
	}
	if r := s.buy("a", "1002"); r.Status != http.StatusAccepted {
		t.Fatalf("buy: %d %s", r.Status, r.Body)
	}
	b = getSale(t, s)
	if b.SoldOut || !b.SKUs[1].SoldOut || b.SKUs[1].Remaining != 0 || b.SKUs[0].Remaining != 2 {
		t.Fatalf("one SKU sold out: %+v", b)
	}
	for _, u := range []string{"a", "b"} {
		if r := s.buy(u, "1001"); r.Status != http.StatusAccepted {
			t.Fatalf("buy: %d %s", r.Status, r.Body)
		}
	}
	if b := getSale(t, s); !b.SoldOut || !b.SKUs[0].SoldOut {
		t.Fatalf("every SKU sold out: %+v", b)
	}
}

// TestUnqueuedSaleHasNoQueue: a sale without spec.queue has no waiting
// room (404 NO_QUEUE) and hands out tokens as it always did, ignoring a
// ticket field.
func TestUnqueuedSaleHasNoQueue(t *testing.T) {
	rdb := testutil.Redis(t)
	s := startServer(t, rdb, newSale(t, rdb), serverOpts{})
	if r := s.join("a"); r.Status != http.StatusNotFound || r.Error != seckill.CodeNoQueue {
		t.Fatalf("join: %d %s", r.Status, r.Body)
	}
	tk, err := s.signer.Ticket(s.sale.SaleKey(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.wait("a", tk); r.Status != http.StatusNotFound || r.Error != seckill.CodeNoQueue {
		t.Fatalf("wait: %d %s", r.Status, r.Body)
	}
	r := s.tokenWith("a", "1001", "not-a-ticket")
	if r.Status != http.StatusOK {
		t.Fatalf("token with a ticket field: %d %s", r.Status, r.Body)
	}
	if r := s.purchase("a", "1001", r.Token); r.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", r.Status, r.Body)
	}
	if r := s.buy("b", "1001"); r.Status != http.StatusAccepted {
		t.Fatalf("buy without a ticket: %d %s", r.Status, r.Body)
	}
}

// TestQueueWindow: the waiting room opens prequeueLead before the start
// (425 before, with Retry-After), admits nobody before the start nor while
// the sale is paused, and closes at the end (410 ENDED).
func TestQueueWindow(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Second)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: 10, PrequeueLead: &metav1.Duration{Duration: 30 * time.Second}})
	opens := start.Add(-30 * time.Second)
	clk := clocktesting.NewFakeClock(opens.Add(-10 * time.Second))
	s := startServer(t, rdb, fs, serverOpts{clock: clk})

	if r := s.join("a"); r.Status != http.StatusTooEarly || r.Error != seckill.CodeNotStarted || r.RetryAfter != "10" {
		t.Fatalf("join before the opening: %d %s Retry-After %q", r.Status, r.Body, r.RetryAfter)
	}
	clk.SetTime(opens)
	a := s.join("a")
	if a.Status != http.StatusCreated || a.State != "waiting" || a.Place != nil || a.EstimatedWait < 30 || a.PollAfterSeconds < 1 {
		t.Fatalf("join at the opening: %d %s", a.Status, a.Body)
	}
	if r := s.call(http.MethodPost, "/queue", "{}", "X-User-ID", "b"); r.Status != http.StatusCreated {
		t.Fatalf("join with {}: %d %s", r.Status, r.Body)
	}
	if r := s.call(http.MethodPost, "/queue", "[1]", "X-User-ID", "c"); r.Status != http.StatusBadRequest {
		t.Fatalf("join with [1]: %d %s", r.Status, r.Body)
	}
	if r := s.call(http.MethodPost, "/queue", ""); r.Status != http.StatusBadRequest {
		t.Fatalf("join without X-User-ID: %d %s", r.Status, r.Body)
	}
	never, _ := s.signer.Ticket(fs.SaleKey(), "never")
	if r := s.wait("never", never); r.Status != http.StatusNotFound || r.Error != seckill.CodeNotQueued {
		t.Fatalf("wait of a genuine ticket never queued: %d %s", r.Status, r.Body)
	}

	// Paused from before the start: nobody is admitted until it resumes.
	if err := switches.SetPaused(context.Background(), rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "the pod sees the pause", s.SeesPaused)
	clk.SetTime(start.Add(time.Second))
	time.Sleep(100 * time.Millisecond) // ten admitter ticks
	if f := figures(t, s); f.Admitted != 0 {
		t.Fatalf("admitted %d while paused", f.Admitted)
	}
	if err := switches.SetPaused(context.Background(), rdb, fs.SaleKey(), false); err != nil {
		t.Fatal(err)
	}
	waitAdmitted(t, s, 2)
	if r := s.wait("a", a.Ticket); r.State != "admitted" || r.Place == nil || r.Next == "" {
		t.Fatalf("wait once admitted: %d %s", r.Status, r.Body)
	}
	if r := s.tokenWith("never", "1001", never); r.Status != http.StatusNotFound || r.Error != seckill.CodeNotQueued {
		t.Fatalf("token of a genuine ticket never queued: %d %s", r.Status, r.Body)
	}

	clk.SetTime(fs.Spec.EndTime.Time)
	if r := s.join("late"); r.Status != http.StatusGone || r.Error != seckill.CodeEnded {
		t.Fatalf("join after the end: %d %s", r.Status, r.Body)
	}
	if r := s.wait("a", a.Ticket); r.Status != http.StatusGone || r.Error != seckill.CodeEnded {
		t.Fatalf("wait after the end: %d %s", r.Status, r.Body)
	}
}

// TestQueueRateLimits: joins and waits are charged to the per-user and
// per-IP read buckets: a bot joining in a loop gets 429, not Redis calls.
func TestQueueRateLimits(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	clk := clocktesting.NewFakeClock(now) // stands still: no refill
	fs := queuedSale(t, rdb, now.Add(time.Minute), v1alpha1.Queue{AdmitPerSecond: 10})
	fs.Spec.RateLimit = v1alpha1.RateLimit{PerUserPerSecond: 2, PerIPPerSecond: 5}
	s := startServer(t, rdb, fs, serverOpts{clock: clk})

	var tk string
	for i := range 2 {
		r := s.join("bot")
		if r.Status/100 != 2 {
			t.Fatalf("join %d: %d %s", i, r.Status, r.Body)
		}
		tk = r.Ticket
	}
	if r := s.join("bot"); r.Status != http.StatusTooManyRequests || r.Error != seckill.CodeRateLimited {
		t.Fatalf("third join in a second: %d %s", r.Status, r.Body)
	}
	if r := s.wait("bot", tk); r.Status != http.StatusTooManyRequests {
		t.Fatalf("wait past the user's rate: %d %s", r.Status, r.Body)
	}
	// Other buyers from the bot's address share its per-IP bucket (5 a
	// second): a few more join, then the address is refused.
	for i := 0; ; i++ {
		r := s.join("other-" + strconv.Itoa(i))
		if r.Status == http.StatusTooManyRequests {
			if !strings.Contains(r.Message, "ip limit") || i > 5 {
				t.Fatalf("buyer %d from the bot's address: %s, want the ip limit within 5", i, r.Body)
			}
			break
		}
		if r.Status != http.StatusCreated || i > 5 {
			t.Fatalf("buyer %d from the bot's address: %d %s", i, r.Status, r.Body)
		}
	}
}

// TestBuyersPage: seckill serves the buyer's page of its own sale (and
// redirects to its slash, keeping the query); other sales' pages are not
// here.
func TestBuyersPage(t *testing.T) {
	rdb := testutil.Redis(t)
	s := startServer(t, rdb, newSale(t, rdb), serverOpts{})
	base := s.root + "/sales/" + s.sale.Namespace + "/sale"
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := noFollow.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != string(page.HTML()) || resp.Header.Get("Cache-Control") != page.CacheControl {
		t.Fatalf("page: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Cache-Control"), len(body))
	}
	resp, err = noFollow.Get(base + "?user=alice")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "/sales/"+s.sale.Namespace+"/sale/?user=alice" {
		t.Fatalf("without the slash: %d Location %q", resp.StatusCode, loc)
	}
	for _, other := range []string{"/sales/" + s.sale.Namespace + "/other/", "/sales/elsewhere/sale/"} {
		resp, err := noFollow.Get(s.root + other)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: %d", other, resp.StatusCode)
		}
	}
	if got := metricSum(t, s.Metrics().Registry, seckill.MetricRequests); got < 4 {
		t.Fatalf("page requests not counted: %v", got)
	}
}

// TestQueueNotWarmed: before warm-up opened the waiting room, a join is
// 503 NOT_READY (retry), not a place in a queue nobody admits from.
func TestQueueNotWarmed(t *testing.T) {
	rdb := testutil.Redis(t)
	now := time.Now()
	fs := queuedSale(t, rdb, now.Add(time.Minute), v1alpha1.Queue{AdmitPerSecond: 10})
	s := startServer(t, rdb, fs, serverOpts{clock: clocktesting.NewFakeClock(now), noWarm: true})
	if r := s.join("a"); r.Status != http.StatusServiceUnavailable || r.Error != seckill.CodeNotReady || r.RetryAfter != "1" {
		t.Fatalf("join before warm-up: %d %s", r.Status, r.Body)
	}
}
