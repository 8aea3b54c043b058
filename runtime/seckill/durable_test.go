package seckill_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// startDurable warms fs on rdb and serves it with durability d (and the
// autopipeliner on, as in production: durability must bypass it).
func startDurable(t testing.TB, rdb redis.UniversalClient, fs *v1alpha1.FlashSale, d seckill.Durability) (*testServer, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyRing(testKey)
	if err != nil {
		t.Fatal(err)
	}
	signer := token.NewSigner(ring, fs.TokenTTL(), nil)
	srv, err := seckill.New(seckill.Config{
		Sale: fs, Redis: rdb, Signer: signer, PollInterval: testPoll, AutoPipeline: true, Durability: d,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &testServer{Server: srv, t: t, root: hs.URL, url: hs.URL + "/api/v1/sales/" + fs.Namespace + "/" + fs.Name,
		signer: signer, rdb: rdb, sale: fs}, nil
}

// durableOf reads the "durable" field of a purchase's answer: nil when absent.
func durableOf(t testing.TB, r reply) *bool {
	t.Helper()
	var body struct {
		Durable *bool `json:"durable"`
	}
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("answer %q: %v", r.Body, err)
	}
	return body.Durable
}

// linkedReplica is a private primary and a replica that reaches it through
// a proxy, so the test can cut the replication link.
type linkedReplica struct {
	primary, replica *testutil.RedisServer
	link             *testutil.Proxy
	rdb              *redis.Client // the primary
}

func startLinkedReplica(t *testing.T) *linkedReplica {
	t.Helper()
	primary := testutil.StartRedisServer(t)
	link := testutil.TCPProxy(t, primary.Addr)
	host, port, _ := net.SplitHostPort(link.Addr())
	replica := testutil.StartRedisServer(t, "--replicaof", host, port)
	testutil.WaitReplicaOnline(t, primary, 1)
	return &linkedReplica{primary: primary, replica: replica, link: link, rdb: primary.Client(t)}
}

// TestDurablePurchase: with durability replicas=1, a 202 says "durable":
// true and the order is on the replica the moment the buyer has the answer;
// with the replication link cut, the buyer still gets 202 (the order exists
// on the primary and stays findable by result polling) with "durable":
// false, counted in the metric; refusals are not held by the wait.
func TestDurablePurchase(t *testing.T) {
	lr := startLinkedReplica(t)
	fs := privateSale(t, 100)
	const timeout = 700 * time.Millisecond
	s, err := startDurable(t, lr.rdb, fs, seckill.Durability{Replicas: 1, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	onReplica := lr.replica.Client(t)
	ordersKey := keys.ForSKU(fs.SaleKey(), "1001").Orders

	r := s.buy("u1", "1001")
	if r.Status != http.StatusAccepted {
		t.Fatalf("purchase: %d %s", r.Status, r.Body)
	}
	if d := durableOf(t, r); d == nil || !*d {
		t.Fatalf(`a purchase acknowledged by the replica must say "durable": true; got %s`, r.Body)
	}
	if ok, err := onReplica.HExists(context.Background(), ordersKey, r.OrderNo).Result(); err != nil || !ok {
		t.Fatalf("order %s answered durable is not on the replica (%v, %v)", r.OrderNo, ok, err)
	}

	lr.link.Cut()
	start := time.Now()
	r = s.buy("u2", "1001")
	took := time.Since(start)
	if r.Status != http.StatusAccepted {
		t.Fatalf("purchase with the replica gone: %d %s", r.Status, r.Body)
	}
	if d := durableOf(t, r); d == nil || *d {
		t.Fatalf(`a purchase no replica acknowledged must say "durable": false; got %s`, r.Body)
	}
	if took < timeout-50*time.Millisecond {
		t.Errorf("the purchase was answered in %s, before the %s wait ran out", took, timeout)
	}
	if got := counter(t, s.Metrics().Registry, seckill.MetricDurabilityTimeouts); got != 1 {
		t.Errorf("%s = %v, want 1", seckill.MetricDurabilityTimeouts, got)
	}
	if o := s.call(http.MethodGet, "/orders/"+r.OrderNo, "", "X-User-ID", "u2"); o.Status != http.StatusOK {
		t.Errorf("the not-durable order %s is not findable by result polling: %d %s", r.OrderNo, o.Status, o.Body)
	}

	// A refusal wrote nothing: it is answered without waiting.
	start = time.Now()
	r = s.buy("u2", "1001")
	if r.Status != http.StatusConflict {
		t.Fatalf("second purchase of u2: %d %s, want 409", r.Status, r.Body)
	}
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("a refusal took %s: it waited for the replicas", took)
	}

	lr.link.Restore()
	testutil.WaitReplicaOnline(t, lr.primary, 1)
	r = s.buy("u3", "1001")
	if d := durableOf(t, r); r.Status != http.StatusAccepted || d == nil || !*d {
		t.Fatalf("after the link is back: %d %s, want 202 durable", r.Status, r.Body)
	}
}

// TestDurablePurchaseCoalesces: a storm of concurrent buyers is served with
// far fewer WAITs than purchases (one per pipelined batch), every one of them
// durable, and nothing oversold.
func TestDurablePurchaseCoalesces(t *testing.T) {
	lr := startLinkedReplica(t)
	const stockN, buyers = 300, 600
	fs := privateSale(t, stockN)
	s, err := startDurable(t, lr.rdb, fs, seckill.Durability{Replicas: 1, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		ok, bad int
		wg      sync.WaitGroup
		sem     = make(chan struct{}, 100)
	)
	for i := range buyers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			r := s.buy("u"+strconv.Itoa(i), "1001")
			mu.Lock()
			defer mu.Unlock()
			if r.Status == http.StatusAccepted {
				if d := durableOf(t, r); d == nil || !*d {
					bad++
				}
				ok++
			}
		})
	}
	wg.Wait()
	if ok != stockN || bad != 0 {
		t.Fatalf("%d admitted (want %d), %d of them not durable", ok, stockN, bad)
	}
	waits := commandCalls(t, lr.rdb, "wait")
	t.Logf("%d purchases admitted with %d WAITs", ok, waits)
	if waits == 0 || waits >= int64(ok) {
		t.Errorf("%d WAITs for %d purchases: concurrent purchases should share a WAIT", waits, ok)
	}
}

// TestDurabilityStartupChecks: a seckill asked for durability.aof refuses to
// start on a server that cannot give it, saying what to configure.
func TestDurabilityStartupChecks(t *testing.T) {
	srv := testutil.StartRedisServer(t) // appendonly no
	rdb := srv.Client(t)
	version, _ := rdb.Info(context.Background(), "server").Result()
	fs := privateSale(t, 100)
	_, err := startDurable(t, rdb, fs, seckill.Durability{AOF: true, Timeout: time.Second})
	if err == nil {
		t.Fatal("a seckill with durability.aof started on a server without WAITAOF/appendonly")
	}
	want := "appendonly yes"
	if strings.Contains(version, "redis_version:7.0.") || strings.Contains(version, "redis_version:7.1.") {
		want = "WAITAOF (Redis 7.2 or later)"
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("start-up error %q does not say %q", err, want)
	}
	// Too few replicas is not fatal at start-up (a replica restarting must
	// not keep pods from starting mid-sale): the answers say durable false.
	if _, err := startDurable(t, rdb, privateSale(t, 100), seckill.Durability{Replicas: 1, Timeout: 100 * time.Millisecond}); err != nil {
		t.Errorf("a seckill asked for a replica refused to start without one: %v", err)
	}
}

// commandCalls reads how many times cmd ran on the server (INFO commandstats).
func commandCalls(t testing.TB, rdb *redis.Client, cmd string) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		return n
	}
	return 0
}

// counter sums the samples of the counter name in reg.
func counter(t testing.TB, reg prometheus.Gatherer, name string) float64 {
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
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestDurablePurchaseCluster: on a Redis Cluster each purchase runs, and
// waits, on the master of its SKU's hash slot (SKUs spread over masters).
// The test cluster has no replicas, so every 202 says "durable": false and
// is counted with reason replicas; nothing is refused or lost.
func TestDurablePurchaseCluster(t *testing.T) {
	cc := testutil.RedisCluster(t).Client(t)
	skus := []v1alpha1.SKU{}
	for i := range 6 {
		skus = append(skus, v1alpha1.SKU{ID: strconv.Itoa(2001 + i), Stock: 50, Price: "1.00", PerUserLimit: 1})
	}
	fs := newSale(t, cc, skus...)
	s, err := startDurable(t, cc, fs, seckill.Durability{Replicas: 1, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, sku := range skus {
		for u := range 5 {
			r := s.buy("u"+strconv.Itoa(u), sku.ID)
			if d := durableOf(t, r); r.Status != http.StatusAccepted || d == nil || *d {
				t.Fatalf("SKU %s: %d %s, want 202 durable false", sku.ID, r.Status, r.Body)
			}
		}
		if got := stock(t, cc, fs, sku.ID); got != 45 {
			t.Errorf("SKU %s: stock %d after 5 purchases of 50", sku.ID, got)
		}
	}
	if got := counter(t, s.Metrics().Registry, seckill.MetricDurabilityTimeouts); got != 30 {
		t.Errorf("%s = %v, want 30", seckill.MetricDurabilityTimeouts, got)
	}
}
