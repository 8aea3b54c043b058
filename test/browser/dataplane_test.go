package browser_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
)

// saleSpec is what a scenario's sale looks like, relative to the moment
// the sales are created.
type saleSpec struct {
	name     string
	startIn  time.Duration // negative: started already
	stock    int64
	queue    bool
	prequeue time.Duration // how long before the start the queue opens
	overbook string
	ttl      time.Duration // spec.queue.admissionTTL; zero: the default
}

func newSale(ns string, s saleSpec, now time.Time) *v1alpha1.FlashSale {
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: s.name},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(s.startIn).Truncate(time.Millisecond)),
			EndTime:   metav1.NewTime(now.Add(s.startIn + 10*time.Minute)),
			SKUs:      []v1alpha1.SKU{{ID: "phone", Stock: s.stock, Price: "3999.00", PerUserLimit: 1}},
			// Generous: the buyers, bots and rivals of a scenario all come
			// from 127.0.0.1 and poll.
			RateLimit: v1alpha1.RateLimit{PerUserPerSecond: 50, PerIPPerSecond: 500},
		},
	}
	if s.queue {
		fs.Spec.Queue = &v1alpha1.Queue{AdmitPerSecond: 1, Overbook: s.overbook,
			PrequeueLead: &metav1.Duration{Duration: s.prequeue}}
		if s.ttl > 0 {
			fs.Spec.Queue.AdmissionTTL = &metav1.Duration{Duration: s.ttl}
		}
	}
	fs.SetDefaults()
	return fs
}

// saleClock is a sale's server clock (seckill's Config.Clock), which the
// scenarios move forward: the countdowns run for minutes, so a slow
// machine never misses them, and the scenario moves the sale to the queue's
// opening or its start once the page has been seen counting down. Frozen,
// it stands still (no admissions accrue: a buyer's place is shown before
// anyone is admitted past them). Everything else runs on real time.
type saleClock struct {
	clock.RealClock
	mu     sync.Mutex
	base   time.Time // the sale's time at anchor
	anchor time.Time // real time
	frozen bool
}

func newSaleClock() *saleClock {
	now := time.Now()
	return &saleClock{base: now, anchor: now}
}

func (c *saleClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen {
		return c.base
	}
	return c.base.Add(time.Since(c.anchor))
}

func (c *saleClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// set moves the clock to at (never back: the sale's records assume time
// goes forward) and freezes or releases it there.
func (c *saleClock) set(at time.Time, frozen bool) {
	now := c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.base, c.anchor, c.frozen = maxTime(at, now), time.Now(), frozen
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// tokenCounter counts POST …/token requests per X-User-ID: a Buy button
// that fires twice shows as two.
type tokenCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *tokenCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/token") {
			c.mu.Lock()
			c.n[r.Header.Get("X-User-ID")]++
			c.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (c *tokenCounter) of(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[user]
}

// plane is one sale's data plane in this process: the seckill API (which
// serves the page) and the order worker that makes orders "created".
type plane struct {
	sale   *v1alpha1.FlashSale
	clock  *saleClock
	url    string // the buyer's page
	api    string // the sale's API
	tokens *tokenCounter
}

// startPlane warms the sale in Redis and starts its seckill server and
// worker until the test ends (as runtime/tools/demo does).
func startPlane(t *testing.T, rdb redis.UniversalClient, db *sql.DB, sale *v1alpha1.FlashSale) *plane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	t.Cleanup(func() { cancel(); bg.Wait() })
	if _, err := warm.Warm(ctx, rdb, sale); err != nil {
		t.Fatalf("warm %s: %v", sale.SaleKey(), err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ring, err := token.NewKeyRing(key)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	clk := newSaleClock()
	srv, err := seckill.New(seckill.Config{Sale: sale, Redis: rdb, Signer: token.NewSigner(ring, sale.TokenTTL(), nil),
		Clock: clk, PollInterval: 100 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatalf("seckill for %s: %v", sale.SaleKey(), err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("start seckill for %s: %v", sale.SaleKey(), err)
	}
	wk, err := worker.New(worker.Config{Sale: sale, Redis: rdb, DB: db, PodID: "browser-test",
		FlushInterval: 20 * time.Millisecond, Registry: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		t.Fatalf("worker for %s: %v", sale.SaleKey(), err)
	}
	bg.Go(func() { _ = wk.Run(ctx) })
	p := &plane{sale: sale, clock: clk, tokens: &tokenCounter{n: map[string]int{}}}
	hs := httptest.NewServer(p.tokens.wrap(srv.Handler()))
	t.Cleanup(hs.Close)
	p.url = hs.URL + "/sales/" + sale.Namespace + "/" + sale.Name + "/"
	p.api = hs.URL + "/api/v1/sales/" + sale.Namespace + "/" + sale.Name
	return p
}

// servesPage fails the test unless the sale's server serves the buyer's
// page at its address (seckill mounts runtime/seckill/page there).
func servesPage(t *testing.T, p *plane) {
	t.Helper()
	res, err := http.Get(p.url)
	if err != nil {
		t.Fatalf("GET %s: %v", p.url, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="buy"`) {
		t.Fatalf("GET %s: %d %q…: seckill does not serve the buyer's page there", p.url, res.StatusCode, firstLine(body))
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
