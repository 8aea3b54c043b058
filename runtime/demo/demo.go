// Package demo runs one whole sale on a laptop: it warms a fresh sale in the
// local Redis, serves the real seckill API in-process, sends a spike of buyers
// at it over HTTP (token, purchase, poll), adds repeat clickers and bots, and
// checks the invariants against Redis afterwards.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/token"
	"github.com/flashsale-dev/flashsale-operator/runtime/warm"
)

// Options shape the spike.
type Options struct {
	// Buyers are distinct users, each trying once, all within the first second.
	Buyers int
	// Repeats are extra attempts by buyers who already tried (double clicks).
	Repeats int
	// Bots send forged tokens, no token, or hammer as fast as they can.
	Bots int
	// Stock per SKU: the demo sells a scarce phone (limit 1), a case (limit 3)
	// and a plentiful sticker (limit 1), so every refusal shows up.
	PhoneStock, CaseStock, StickerStock int64
	// Concurrency is how many requests are in flight at once.
	Concurrency int
	// Keep leaves the sale's keys in Redis for inspection.
	Keep bool
}

// Report is what happened.
type Report struct {
	Sale       string
	Requests   int64
	Elapsed    time.Duration
	Outcomes   map[string]int64 // per endpoint:code
	Admitted   map[string]int64 // per SKU
	Remaining  map[string]int64
	Initial    map[string]int64
	Latencies  []time.Duration // purchase latencies
	Violations []string
}

// Run runs the demo sale against rdb and writes a readable account to out.
func Run(ctx context.Context, rdb redis.UniversalClient, o Options, out io.Writer) (*Report, error) {
	sale := newSale(o)
	fmt.Fprintf(out, "==> Sale %s: %d phones (1 per buyer), %d cases (3 per buyer), %d stickers (1 per buyer), open now for 10 minutes\n",
		sale.SaleKey(), o.PhoneStock, o.CaseStock, o.StickerStock)
	if !o.Keep {
		defer cleanup(context.WithoutCancel(ctx), rdb, sale.SaleKey())
	}
	if _, err := warm.Warm(ctx, rdb, sale); err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "==> Warmed Redis: stock counters, order streams, purchase script")

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ring, err := token.NewKeyRing(key)
	if err != nil {
		return nil, err
	}
	srv, err := seckill.New(seckill.Config{
		Sale: sale, Redis: rdb, Signer: token.NewSigner(ring, sale.TokenTTL(), nil),
		AutoPipeline: true, PollInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := srv.Start(sctx); err != nil {
		return nil, err
	}
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- srv.ListenAndServe(sctx, "127.0.0.1:0", func(a net.Addr) { addrc <- a.String() })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a + "/api/v1/sales/" + sale.Namespace + "/" + sale.Name
	case err := <-errc:
		return nil, err
	}
	fmt.Fprintf(out, "==> Seckill API listening on %s\n", base)

	c := newClient(base, o.Concurrency)
	rep := &Report{Sale: sale.SaleKey(), Outcomes: map[string]int64{}, Admitted: map[string]int64{},
		Remaining: map[string]int64{}, Initial: map[string]int64{}}
	fmt.Fprintf(out, "==> Spike: %d buyers, %d repeat clicks, %d bots, %d in flight\n", o.Buyers, o.Repeats, o.Bots, o.Concurrency)
	start := time.Now()
	orders := c.spike(ctx, o)
	rep.Elapsed = time.Since(start)
	rep.Requests = c.requests.Load()
	c.mu.Lock()
	maps := c.outcomes
	rep.Latencies = slices.Clone(c.latencies)
	c.mu.Unlock()
	for k, v := range maps {
		rep.Outcomes[k] = v
	}
	for _, o := range orders {
		rep.Admitted[o.sku]++
	}
	rep.Violations = check(ctx, rdb, sale, orders, c, rep)
	printReport(out, rep, sale)
	if len(rep.Violations) > 0 {
		return rep, fmt.Errorf("%d invariant violations", len(rep.Violations))
	}
	return rep, nil
}

func newSale(o Options) *v1alpha1.FlashSale {
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "demo-" + hex.EncodeToString(suffix)},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Second)),
			EndTime:   metav1.NewTime(now.Add(10 * time.Minute)),
			SKUs: []v1alpha1.SKU{
				{ID: "phone", Stock: o.PhoneStock, Price: "3999.00", PerUserLimit: 1},
				{ID: "case", Stock: o.CaseStock, Price: "19.90", PerUserLimit: 3},
				{ID: "sticker", Stock: o.StickerStock, Price: "0.99", PerUserLimit: 1},
			},
			// The demo's buyers all connect from 127.0.0.1 and carry their own
			// address in X-Forwarded-For, as they would behind a gateway.
			RateLimit: v1alpha1.RateLimit{PerUserPerSecond: 5, PerIPPerSecond: 20},
			Access:    &v1alpha1.Access{TrustedProxies: []string{"127.0.0.1/32", "::1/128"}},
		},
	}
	fs.SetDefaults()
	return fs
}

// forgedToken has the shape of a token and a signature by no known key.
var forgedToken = "v1.00000000.zz." + strings.Repeat("A", 22) + "." + strings.Repeat("A", 43)

type order struct{ user, sku, orderNo string }

type client struct {
	base     string
	http     *http.Client
	sem      chan struct{}
	requests atomic.Int64

	mu        sync.Mutex
	outcomes  map[string]int64
	latencies []time.Duration
}

func newClient(base string, concurrency int) *client {
	if concurrency < 1 {
		concurrency = 64
	}
	tr := &http.Transport{MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2, IdleConnTimeout: 30 * time.Second}
	return &client{base: base, http: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		sem: make(chan struct{}, concurrency), outcomes: map[string]int64{}}
}

type answer struct {
	status  int
	code    string
	token   string
	orderNo string
	state   string
}

func (c *client) do(ctx context.Context, endpoint, method, path, user, ip string, body any) answer {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.Header.Set("X-User-ID", user)
	}
	req.Header.Set("X-Forwarded-For", ip)
	start := time.Now()
	resp, err := c.http.Do(req)
	c.requests.Add(1)
	if err != nil {
		c.count(endpoint, "transport_error", 0)
		return answer{code: "transport_error"}
	}
	defer resp.Body.Close()
	var v struct {
		Error, Token, OrderNo, Status string
	}
	_ = json.NewDecoder(resp.Body).Decode(&v)
	a := answer{status: resp.StatusCode, code: v.Error, token: v.Token, orderNo: v.OrderNo, state: v.Status}
	if a.code == "" {
		a.code = strconv.Itoa(resp.StatusCode)
	}
	var lat time.Duration
	if endpoint == "purchase" {
		lat = time.Since(start)
	}
	c.count(endpoint, a.code, lat)
	return a
}

func (c *client) count(endpoint, code string, lat time.Duration) {
	c.mu.Lock()
	c.outcomes[endpoint+" "+code]++
	if lat > 0 {
		c.latencies = append(c.latencies, lat)
	}
	c.mu.Unlock()
}

// buy is one buyer's flow: token, purchase, poll until the order is visible.
func (c *client) buy(ctx context.Context, user, ip, sku string) (order, bool) {
	t := c.do(ctx, "token", http.MethodPost, "/token", user, ip, map[string]string{"sku": sku})
	if t.status != http.StatusOK {
		return order{}, false
	}
	p := c.do(ctx, "purchase", http.MethodPost, "/purchase", user, ip, map[string]string{"sku": sku, "token": t.token})
	if p.status != http.StatusAccepted {
		return order{}, false
	}
	c.do(ctx, "poll", http.MethodGet, "/orders/"+p.orderNo, user, ip, nil)
	return order{user: user, sku: sku, orderNo: p.orderNo}, true
}

func (c *client) spike(ctx context.Context, o Options) []order {
	var (
		mu     sync.Mutex
		orders []order
		wg     sync.WaitGroup
	)
	add := func(od order, ok bool) {
		if ok {
			mu.Lock()
			orders = append(orders, od)
			mu.Unlock()
		}
	}
	ipOf := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255) }
	skuOf := func(i int) string { return [...]string{"phone", "case", "sticker"}[i%3] }
	for i := range o.Buyers {
		wg.Go(func() { add(c.buy(ctx, "buyer-"+strconv.Itoa(i), ipOf(i), skuOf(i))) })
	}
	// Repeat clickers: buyers who try again (a second phone or sticker is
	// refused; a case buyer may hold up to 3).
	for j := range o.Repeats {
		i := j % max(o.Buyers, 1)
		wg.Go(func() { add(c.buy(ctx, "buyer-"+strconv.Itoa(i), ipOf(i), skuOf(i))) })
	}
	for j := range o.Bots {
		user := "bot-" + strconv.Itoa(j)
		ip := "192.0.2." + strconv.Itoa(j%250)
		wg.Go(func() {
			switch j % 3 {
			case 0: // forged token
				c.do(ctx, "purchase", http.MethodPost, "/purchase", user, ip, map[string]string{"sku": "sticker", "token": forgedToken})
			case 1: // no token at all
				c.do(ctx, "purchase", http.MethodPost, "/purchase", user, ip, map[string]string{"sku": "sticker"})
			default: // hammering: far over the per-user limit
				for range 10 {
					c.do(ctx, "token", http.MethodPost, "/token", user, ip, map[string]string{"sku": "case"})
				}
			}
		})
	}
	wg.Wait()
	return orders
}

// check verifies the invariants against Redis: no oversell, every admitted
// order in the stream exactly once, nobody over their limit, polling works.
func check(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, orders []order, c *client, rep *Report) []string {
	var bad []string
	seen := map[string]bool{}
	for _, o := range orders {
		if seen[o.orderNo] {
			bad = append(bad, "order "+o.orderNo+" admitted twice")
		}
		seen[o.orderNo] = true
	}
	for _, sku := range sale.Spec.SKUs {
		k := keys.ForSKU(sale.SaleKey(), sku.ID)
		left, _ := rdb.Get(ctx, k.Stock).Int64()
		initial, _ := rdb.Get(ctx, k.Initial).Int64()
		rep.Remaining[sku.ID], rep.Initial[sku.ID] = left, initial
		admitted := rep.Admitted[sku.ID]
		if left < 0 {
			bad = append(bad, fmt.Sprintf("SKU %s oversold: stock is %d", sku.ID, left))
		}
		if initial-left != admitted {
			bad = append(bad, fmt.Sprintf("SKU %s: %d taken from stock but %d orders admitted", sku.ID, initial-left, admitted))
		}
		if n, _ := rdb.XLen(ctx, k.Stream).Result(); n != admitted {
			bad = append(bad, fmt.Sprintf("SKU %s: stream holds %d orders, %d admitted", sku.ID, n, admitted))
		}
		if n, _ := rdb.ZCard(ctx, k.Expiry).Result(); n != admitted {
			bad = append(bad, fmt.Sprintf("SKU %s: expiry set holds %d orders, %d admitted", sku.ID, n, admitted))
		}
		holders, _ := rdb.HGetAll(ctx, k.Holders).Result()
		var held int64
		for user, v := range holders {
			n, _ := strconv.ParseInt(v, 10, 64)
			held += n
			if n > int64(sku.PerUserLimit) {
				bad = append(bad, fmt.Sprintf("SKU %s: %s holds %d, limit %d", sku.ID, user, n, sku.PerUserLimit))
			}
		}
		if held != admitted {
			bad = append(bad, fmt.Sprintf("SKU %s: buyers hold %d units, %d admitted", sku.ID, held, admitted))
		}
	}
	// Every admitted order is visible to its buyer, and to nobody else.
	for i, o := range orders {
		if i >= 50 {
			break
		}
		a := c.do(ctx, "poll", http.MethodGet, "/orders/"+o.orderNo, o.user, "10.255.0.1", nil)
		if a.status != http.StatusOK || a.state != "queued" {
			bad = append(bad, fmt.Sprintf("order %s: poll answered %d %s", o.orderNo, a.status, a.code))
		}
		if a := c.do(ctx, "poll", http.MethodGet, "/orders/"+o.orderNo, "someone-else", "10.255.0.2", nil); a.status != http.StatusNotFound {
			bad = append(bad, fmt.Sprintf("order %s: visible to another user (%d)", o.orderNo, a.status))
		}
	}
	return bad
}

func printReport(out io.Writer, r *Report, sale *v1alpha1.FlashSale) {
	fmt.Fprintf(out, "\n==> %d requests in %s (%.0f req/s)\n", r.Requests, r.Elapsed.Round(time.Millisecond), float64(r.Requests)/r.Elapsed.Seconds())
	if len(r.Latencies) > 0 {
		slices.Sort(r.Latencies)
		q := func(p float64) time.Duration { return r.Latencies[int(p*float64(len(r.Latencies)-1))] }
		fmt.Fprintf(out, "    purchase latency p50 %s  p95 %s  p99 %s\n", q(.5).Round(time.Microsecond), q(.95).Round(time.Microsecond), q(.99).Round(time.Microsecond))
	}
	fmt.Fprintln(out, "\n    outcome                               count")
	names := make([]string, 0, len(r.Outcomes))
	for k := range r.Outcomes {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(out, "    %-36s %6d\n", k, r.Outcomes[k])
	}
	fmt.Fprintf(out, "\n    %-8s %6s  %8s  %5s\n", "SKU", "stock", "admitted", "left")
	for _, sku := range sale.Spec.SKUs {
		fmt.Fprintf(out, "    %-8s %6d  %8d  %5d\n", sku.ID, r.Initial[sku.ID], r.Admitted[sku.ID], r.Remaining[sku.ID])
	}
	if len(r.Violations) == 0 {
		fmt.Fprintln(out, "\n==> Invariants hold: no oversell, stock taken = orders admitted = orders in the stream, nobody over their limit, orders visible only to their buyer")
		return
	}
	fmt.Fprintln(out, "\n==> INVARIANTS BROKEN:")
	for _, v := range r.Violations {
		fmt.Fprintln(out, "    "+v)
	}
}

func cleanup(ctx context.Context, rdb redis.UniversalClient, sale string) {
	for _, p := range keys.Patterns(sale) {
		iter := rdb.Scan(ctx, 0, p, 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Unlink(ctx, iter.Val())
		}
	}
}
