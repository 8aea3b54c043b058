package rollback_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestPaymentAndRollbackRace: 1,000 orders whose deadline falls in the
// middle of a stream of payments through the real pay endpoint, while two
// rollback loops cancel what expires. Every order ends paid or cancelled,
// never both; stock comes back for exactly the cancelled ones; every payment
// answer matches the order's final status. On a Redis Cluster, with a SKU
// split into three buckets beside one that is not, each unit goes back to
// the bucket its order came from and the audit (per bucket) agrees.
func TestPaymentAndRollbackRace(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		const n = 1000
		deadline := time.Now().Add(3 * time.Second)
		paymentAndRollbackRace(t, setup(t, n, deadline), deadline)
	})
	t.Run("cluster", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		f := setupSale(t, testutil.RedisCluster(t).Client(t), deadline,
			v1alpha1.SKU{ID: "1001", Stock: 600, Price: "3999.00", PerUserLimit: 1, Buckets: 3},
			v1alpha1.SKU{ID: "1002", Stock: 400, Price: "19.90", PerUserLimit: 1})
		paymentAndRollbackRace(t, f, deadline)
	})
}

func paymentAndRollbackRace(t *testing.T, f *fixture, deadline time.Time) {
	n := len(f.orders)
	// Payments run from 1 s before the deadline to 1 s after it.
	start := deadline.Add(-time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The seckill API with payments on.
	ring, err := token.NewKeyRing([]byte("0123456789abcdef0123456789abcdef-test-key"))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "race-secret"
	srv, err := seckill.New(seckill.Config{Sale: f.fs, Redis: f.rdb, Signer: token.NewSigner(ring, f.fs.TokenTTL(), nil),
		Orders: f.store, PaymentSecret: []byte(secret), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	base := hs.URL + "/api/v1/sales/" + f.fs.Namespace + "/" + f.fs.Name + "/orders/"

	// Two rollback processes' loops.
	var loops sync.WaitGroup
	var rbs []*rollback.Rollback
	for range 2 {
		rb, err := rollback.New(rollback.Config{SaleKey: f.fs.SaleKey(), Redis: f.rdb, Orders: f.store, Buckets: f.bk,
			Interval: 5 * time.Millisecond, Concurrency: 4, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		rbs = append(rbs, rb)
		loops.Add(1)
		go func() { defer loops.Done(); _ = rb.Run(ctx) }()
	}

	// Payers: 80% of the orders get one payment each, spread over 0-2 s so
	// that the deadline (1.2 s) falls in the middle of them.
	type answer struct {
		status int
		code   string
	}
	answers := map[string]answer{}
	var mu sync.Mutex
	perm := rand.Perm(n)[:n*8/10]
	client := &http.Client{Timeout: 10 * time.Second}
	var payers sync.WaitGroup
	work := make(chan int)
	for range 8 {
		payers.Add(1)
		go func() {
			defer payers.Done()
			for i := range work {
				no := f.orders[i].OrderNo
				req, _ := http.NewRequest(http.MethodPost, base+no+"/pay", nil)
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					continue
				}
				var body struct{ Error, Status string }
				_ = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				code := body.Error
				if resp.StatusCode == 200 {
					code = body.Status
				}
				mu.Lock()
				answers[no] = answer{resp.StatusCode, code}
				mu.Unlock()
			}
		}()
	}
	for j, i := range perm {
		time.Sleep(time.Until(start.Add(time.Duration(j) * 2 * time.Second / time.Duration(len(perm)))))
		work <- i
	}
	close(work)
	payers.Wait()

	// Wait for the rollbacks to finish everything past the deadline.
	for end := time.Now().Add(15 * time.Second); ; {
		c := f.counts(t)
		if c.Created == 0 && c.Returning == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("rollback did not finish: %+v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	loops.Wait()

	c := f.counts(t)
	if c.Paid+c.Cancelled != int64(n) {
		t.Fatalf("paid %d + cancelled %d != %d", c.Paid, c.Cancelled, n)
	}
	if c.Paid < 50 || c.Cancelled-int64(n-len(perm)) < 50 {
		t.Logf("note: the race was lopsided (a slow setup?): paid %d, cancelled %d", c.Paid, c.Cancelled)
	}
	var both int
	if err := f.store.DB().QueryRow(`SELECT COUNT(*) FROM seckill_order WHERE paid_at IS NOT NULL AND cancelled_at IS NOT NULL`).Scan(&both); err != nil || both != 0 {
		t.Fatalf("%d orders both paid and cancelled (%v)", both, err)
	}
	ok200, refused := 0, 0
	for _, o := range f.orders {
		r, err := f.store.Get(context.Background(), o.OrderNo)
		if err != nil {
			t.Fatal(err)
		}
		a, paid := answers[o.OrderNo]
		switch {
		case !paid && r.Status != order.Cancelled:
			t.Fatalf("order %s never paid but %s", o.OrderNo, r.Status)
		case paid && a.status == 200:
			ok200++
			if r.Status != order.Paid || a.code != "paid" {
				t.Fatalf("order %s: payment answered 200 %s but the order is %s", o.OrderNo, a.code, r.Status)
			}
		case paid && a.status == 409:
			refused++
			if r.Status != order.Cancelled || (a.code != "EXPIRED" && a.code != "CANCELLED") {
				t.Fatalf("order %s: payment answered 409 %s but the order is %s", o.OrderNo, a.code, r.Status)
			}
		case paid:
			t.Fatalf("order %s: payment answered %d %s", o.OrderNo, a.status, a.code)
		}
	}
	if int64(ok200) != c.Paid {
		t.Fatalf("%d payments answered 200 but %d orders are paid", ok200, c.Paid)
	}
	f.checkRedis(t)

	var cancelled, returned float64
	for _, rb := range rbs {
		cancelled += sumMetric(t, rb.Metrics().Registry, rollback.MetricCancelled)
		returned += sumMetric(t, rb.Metrics().Registry, rollback.MetricReturned)
	}
	if int64(cancelled) != c.Cancelled || int64(returned) != c.Cancelled {
		t.Fatalf("metrics: cancelled %v, returned %v; want %d", cancelled, returned, c.Cancelled)
	}

	// The audit agrees.
	a, err := audit.New(audit.Config{Sale: f.fs, Redis: f.rdb, Orders: f.store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Findings) != 0 {
		var b strings.Builder
		_ = rep.WriteText(&b)
		t.Fatalf("audit after the race:\n%s", b.String())
	}
	t.Logf("paid %d (200s %d), cancelled %d (409s %d, never paid %d); the two loops cancelled %v between them",
		c.Paid, ok200, c.Cancelled, refused, n-len(perm), cancelled)
}
