package seckill_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
)

// queuedSale is newSale with a waiting room, starting at start and
// running for an hour.
func queuedSale(t testing.TB, rdb redis.UniversalClient, start time.Time, q v1alpha1.Queue, skus ...v1alpha1.SKU) *v1alpha1.FlashSale {
	t.Helper()
	fs := newSale(t, rdb, skus...)
	fs.Spec.StartTime = metav1.NewTime(start)
	fs.Spec.EndTime = metav1.NewTime(start.Add(time.Hour))
	fs.Spec.Queue = &q
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

func (s *testServer) join(user string) reply {
	s.t.Helper()
	return s.call(http.MethodPost, "/queue", "", "X-User-ID", user)
}

func (s *testServer) wait(user, ticket string) reply {
	s.t.Helper()
	return s.call(http.MethodGet, "/queue/"+ticket, "", "X-User-ID", user)
}

// tokenWith asks for a path token with a queue ticket.
func (s *testServer) tokenWith(user, sku, ticket string) reply {
	s.t.Helper()
	return s.call(http.MethodPost, "/token", `{"sku":"`+sku+`","ticket":"`+ticket+`"}`, "X-User-ID", user)
}

// buyQueued has admitted buyer i fetch a token for sku with their ticket
// and buy it; both steps must succeed.
func (s *testServer) buyQueued(i int, sku string, tickets []string) {
	s.t.Helper()
	tok := s.tokenWith(userName(i), sku, tickets[i])
	if tok.Status != http.StatusOK {
		s.t.Fatalf("%s buys %s: token %d %s", userName(i), sku, tok.Status, tok.Body)
	}
	if p := s.purchase(userName(i), sku, tok.Token); p.Status != http.StatusAccepted {
		s.t.Fatalf("%s buys %s: purchase %d %s", userName(i), sku, p.Status, p.Body)
	}
}

// figures reads the queue's figures from Redis.
func figures(t testing.TB, s *testServer) queue.Figures {
	t.Helper()
	f, ok, err := queue.Read(context.Background(), s.rdb, s.sale.SaleKey())
	if err != nil || !ok {
		t.Fatalf("read queue figures: exists %v, %v", ok, err)
	}
	return f
}

// waitAdmitted waits until the admitter has admitted n in all.
func waitAdmitted(t testing.TB, s *testServer, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second) // generous: a loaded 2-core CI machine
	for {
		f := figures(t, s)
		if f.Admitted == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %d admitted; the queue's figures: %+v", n, f)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func userName(i int) string { return fmt.Sprintf("u%05d", i) }

// parallel runs fn(i) for i in [0, n) on a few goroutines.
func parallel(n, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// metricSum is the sum of a metric's values over its series.
func metricSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}
