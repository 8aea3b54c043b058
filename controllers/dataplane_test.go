package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
)

const paySecret = "pay-secret"

// shop is the sale's data plane run in-process, configured exactly as the
// operator configures the pods: the rendered sale.yaml and the token key
// from the Secret the operator generated.
type shop struct {
	e   *env
	url string
}

func (e *env) startSeckill() *shop {
	e.t.Helper()
	sale := e.renderedSale()
	var sec corev1.Secret
	if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: saleName + "-token"}, &sec); err != nil {
		e.t.Fatalf("token Secret: %v", err)
	}
	ring, err := token.ParseKeyFile(sec.Data["keys"])
	if err != nil {
		e.t.Fatalf("the generated token key does not parse: %v", err)
	}
	srv, err := seckill.New(seckill.Config{
		Sale: sale, Redis: e.uc, Signer: token.NewSigner(ring, sale.TokenTTL(), e.clk), Clock: e.clk,
		PollInterval: 50 * time.Millisecond, AutoPipeline: true, Logger: quiet(),
		Orders: orderdb.New(e.db), PaymentSecret: []byte(paySecret),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	if err := srv.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	e.t.Cleanup(hs.Close)
	return &shop{e: e, url: hs.URL + "/api/v1/sales/" + e.ns + "/" + saleName}
}

// startWorker runs the order pipeline until stop is called or the test ends.
func (e *env) startWorker() (stop func()) {
	e.t.Helper()
	w, err := worker.New(worker.Config{
		Sale: e.renderedSale(), Redis: e.uc, DB: e.db, Brokers: e.brokers(), PodID: "w-" + e.ns,
		ClaimMinIdle: time.Second, SessionTimeout: time.Second,
		Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}, Logger: quiet(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			e.t.Errorf("worker: %v", err)
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	e.t.Cleanup(stop)
	return stop
}

// rollbackOnce runs one pass of the rollback at the fake clock's time.
func (e *env) rollbackOnce() rollback.Pass {
	e.t.Helper()
	rb, err := rollback.New(rollback.Config{SaleKey: e.ns + "/" + saleName, Redis: e.uc, Orders: orderdb.New(e.db),
		Buckets: orderstate.BucketsOf(e.get()), Clock: e.clk, Logger: quiet()})
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := rb.RunOnce(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

type answer struct {
	Status  int
	Error   string `json:"error"`
	Token   string `json:"token"`
	OrderNo string `json:"orderNo"`
	Order   string `json:"status"`
}

func (s *shop) post(path, user string, body any, hdr map[string]string) answer {
	s.e.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(b))
	if err != nil {
		s.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-User-ID", user)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	a.Status = resp.StatusCode
	return a
}

// buy runs token → purchase for one user and returns the purchase answer
// (or the token refusal).
func (s *shop) buy(user, sku string) answer {
	s.e.t.Helper()
	tok := s.post("/token", user, map[string]string{"sku": sku}, nil)
	if tok.Status != http.StatusOK {
		return tok
	}
	return s.post("/purchase", user, map[string]string{"sku": sku, "token": tok.Token}, nil)
}

func (s *shop) pay(orderNo string) answer {
	s.e.t.Helper()
	return s.post("/orders/"+orderNo+"/pay", "payment-service", struct{}{}, map[string]string{"Authorization": "Bearer " + paySecret})
}

// waitAnswer retries until the sale answers status/code, for up to a second:
// the pods poll the switches every 50 ms here (250 ms in production).
func (s *shop) waitAnswer(t *testing.T, user string, status int, code string) time.Duration {
	t.Helper()
	start := time.Now()
	var last answer
	for time.Since(start) < time.Second {
		if status == http.StatusAccepted {
			last = s.buy(user, "1001")
		} else {
			// Refusals are awaited on the token endpoint, which refuses for
			// the same reasons but never creates an order: a purchase sent
			// in the instant before the switch reached the pod would.
			last = s.post("/token", user, map[string]string{"sku": "1001"}, nil)
		}
		if last.Status == status && last.Error == code {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %d %s within a second; last answer %d %s", status, code, last.Status, last.Error)
	return 0
}

func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
