package seckill_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// serving is a seckill Server serving a warmed sale on real listeners.
type serving struct {
	api, metrics string // base URLs; metrics is "" on one port
	sale         string // the sale's API path
}

// serve warms a sale and serves it with Serve on loopback listeners: the
// metrics and probes on a listener of their own unless onePort.
func serve(t *testing.T, onePort bool) serving {
	t.Helper()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyRing(testKey)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := seckill.New(seckill.Config{Sale: fs, Redis: rdb, Signer: token.NewSigner(ring, fs.TokenTTL(), nil),
		PollInterval: testPoll, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	l := seckill.Listen{API: "127.0.0.1:0", Metrics: "127.0.0.1:0"}
	if onePort {
		l.Metrics = ""
	}
	type addrs struct{ api, metrics net.Addr }
	ready := make(chan addrs, 1)
	l.Ready = func(api, metrics net.Addr) { ready <- addrs{api, metrics} }
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	var s serving
	select {
	case a := <-ready:
		s.api = "http://" + a.api.String()
		if a.metrics != nil {
			s.metrics = "http://" + a.metrics.String()
		}
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	s.sale = "/api/v1/sales/" + fs.Namespace + "/" + fs.Name
	return s
}

// get answers GET url's status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsAndProbesOffTheBuyersPort: with a metrics address, the buyers'
// listener answers 404 for /metrics, /healthz and /readyz (an Ingress in
// front of it cannot expose them), and the metrics listener answers them,
// and nothing of the buyers' API.
func TestMetricsAndProbesOffTheBuyersPort(t *testing.T) {
	s := serve(t, false)
	if s.metrics == "" || s.metrics == s.api {
		t.Fatalf("no metrics listener of its own: api %s metrics %s", s.api, s.metrics)
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, body := get(t, s.api+path); code != http.StatusNotFound || !strings.Contains(body, `"NOT_FOUND"`) {
			t.Errorf("buyers' port: GET %s = %d %s, want 404 NOT_FOUND", path, code, body)
		}
	}
	if code, body := get(t, s.metrics+"/metrics"); code != http.StatusOK || !strings.Contains(body, "flashsale_") {
		t.Errorf("metrics port: GET /metrics = %d, want 200 with the flashsale_ series:\n%.300s", code, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, s.metrics+path); code != http.StatusOK {
			t.Errorf("metrics port: GET %s = %d %s, want 200", path, code, body)
		}
	}
	if code, _ := get(t, s.api+s.sale); code != http.StatusOK {
		t.Errorf("buyers' port: GET %s = %d, want 200", s.sale, code)
	}
	if code, _ := get(t, s.metrics+s.sale); code != http.StatusNotFound {
		t.Errorf("metrics port: GET %s = %d, want 404 (no buyer API there)", s.sale, code)
	}
}

// TestOnePortServesMetricsBesideTheAPI: without a metrics address (a local
// run, flashsale demo), the one listener answers the API, the metrics and
// the probes.
func TestOnePortServesMetricsBesideTheAPI(t *testing.T) {
	s := serve(t, true)
	if s.metrics != "" {
		t.Fatalf("a metrics listener was opened: %s", s.metrics)
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz", s.sale} {
		if code, body := get(t, s.api+path); code != http.StatusOK {
			t.Errorf("one port: GET %s = %d %.200s, want 200", path, code, body)
		}
	}
}
