// Package demo runs one whole sale on a laptop: it warms a fresh sale in the
// local Redis, migrates a fresh MySQL database, runs the real seckill API, the
// order pipeline (Redis-only mode) and the rollback in-process, sends a spike
// of buyers at the API over HTTP (token, purchase, poll until durable, pay or
// walk away), adds repeat clickers and bots, waits for unpaid orders to be
// cancelled and their stock returned, and checks the invariants with the
// audit and against MySQL.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
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

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/runtime/tools/loadtest"
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
	// MySQLDSN points at a MySQL/MariaDB server (no database: the demo
	// creates its own and drops it afterwards).
	MySQLDSN string
	// PayShare is the share of buyers who pay; the others let the deadline pass.
	PayShare float64
	// PaymentTimeout is the sale's payment deadline (short, so the rollback
	// shows within the demo).
	PaymentTimeout time.Duration
	// Keep leaves the sale's keys and database for inspection.
	Keep bool
	// QueueBuyers, when > 0, run a second sale afterwards, with a waiting
	// room (spec.queue) and the same stock of phones and cases: they join
	// before its start, wait for admission, then buy (`flashsale loadtest`'s
	// queued flow and checks).
	QueueBuyers int
}

// Report is what happened.
type Report struct {
	SaleKey    string // namespace/name
	Requests   int64
	Elapsed    time.Duration
	Outcomes   map[string]int64 // per endpoint:code
	Admitted   map[string]int64 // per SKU
	Remaining  map[string]int64
	Initial    map[string]int64
	Latencies  []time.Duration  // purchase latencies
	Paid       map[string]int64 // per SKU, answered 200 by the pay endpoint
	MySQL      map[string]*orderdb.Counts
	Audit      *audit.Report
	Violations []string
	// The queued sale's load test and audit (Options.QueueBuyers > 0).
	Queued      *loadtest.Report
	QueuedAudit *audit.Report
}

// Run runs the demo sale against rdb and writes a readable account to out.
func Run(ctx context.Context, rdb redis.UniversalClient, o Options, out io.Writer) (*Report, error) {
	if o.PaymentTimeout <= 0 {
		o.PaymentTimeout = 3 * time.Second
	}
	sale := newSale(o)
	fmt.Fprintf(out, "==> Sale %s: %d phones (1 per buyer), %d cases (3 per buyer), %d stickers (1 per buyer); open now; %s to pay\n",
		sale.SaleKey(), o.PhoneStock, o.CaseStock, o.StickerStock, o.PaymentTimeout)
	if !o.Keep {
		defer func() { _, _ = teardown.DeleteKeys(context.WithoutCancel(ctx), rdb, sale.SaleKey()) }()
	}
	db, dbName, err := createDatabase(ctx, o.MySQLDSN, sale.Name)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if !o.Keep {
		defer dropDatabase(context.WithoutCancel(ctx), db, dbName)
	}
	if _, err := orderdb.Migrate(ctx, db); err != nil {
		return nil, err
	}
	store := orderdb.New(db)
	fmt.Fprintf(out, "==> MySQL: database %s migrated (table seckill_order)\n", dbName)
	if _, err := warm.Warm(ctx, rdb, sale); err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "==> Warmed Redis: stock counters, order streams, purchase script")

	dp, err := startDataPlane(ctx, rdb, db, store, sale)
	if err != nil {
		return nil, err
	}
	defer dp.stop()
	fmt.Fprintf(out, "==> Running in-process: seckill API on %s, order worker (Redis Stream -> MySQL), rollback every 250ms\n", dp.base)

	c := newClient(dp.base, o.Concurrency, "Bearer "+string(dp.paySecret))
	rep, orders := runSpike(ctx, c, o, sale.SaleKey(), out)

	fmt.Fprintf(out, "==> Waiting for every order to be paid or cancelled (deadline %s after purchase) ...\n", o.PaymentTimeout)
	if err := waitSettled(ctx, store, sale.SaleKey(), len(orders), o.PaymentTimeout+20*time.Second); err != nil {
		fmt.Fprintf(out, "    %v\n", err)
	}
	// One more rollback pass makes sure every cancelled unit is back.
	if _, err := dp.rb.RunOnce(ctx); err != nil {
		return nil, err
	}
	rep.MySQL, err = store.CountBySKU(ctx, sale.SaleKey())
	if err != nil {
		return nil, err
	}
	aud, err := audit.New(audit.Config{Sale: sale, Redis: rdb, Orders: store, Logger: quietLogger()})
	if err != nil {
		return nil, err
	}
	if rep.Audit, err = aud.Run(ctx); err != nil {
		return nil, err
	}
	rep.Violations = check(ctx, rdb, sale, orders, c, rep)
	printReport(out, rep, sale)
	if o.QueueBuyers > 0 {
		if rep.Queued, rep.QueuedAudit, err = runQueued(ctx, rdb, o, out); err != nil {
			return rep, err
		}
		for _, name := range rep.Queued.Failed() {
			rep.Violations = append(rep.Violations, "queued sale: "+name)
		}
		if !rep.QueuedAudit.OK {
			rep.Violations = append(rep.Violations, "queued sale: audit not conserved")
		}
	}
	if len(rep.Violations) > 0 {
		return rep, fmt.Errorf("%d invariant violations", len(rep.Violations))
	}
	return rep, nil
}

// quietLogger is the logger of the in-process programs: the demo tells its
// own story.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// dataPlane is the sale's data plane running in this process: the seckill
// API on a free local port, the order worker and the rollback.
type dataPlane struct {
	base      string // the sale's API: http://ADDR/api/v1/sales/NAMESPACE/NAME
	paySecret []byte // what the pay endpoint wants after "Bearer "
	rb        *rollback.Rollback
	stop      func() // stops them all and waits until they have
}

// startDataPlane starts the sale's seckill API (with a fresh token key and
// payment secret), its order worker and its rollback, and returns once the
// API listens.
func startDataPlane(ctx context.Context, rdb redis.UniversalClient, db *sql.DB, store *orderdb.Store, sale *v1alpha1.FlashSale) (*dataPlane, error) {
	quiet := quietLogger()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ring, err := token.NewKeyRing(key)
	if err != nil {
		return nil, err
	}
	paySecret := []byte(hex.EncodeToString(key[:16]))
	srv, err := seckill.New(seckill.Config{
		Sale: sale, Redis: rdb, Signer: token.NewSigner(ring, sale.TokenTTL(), nil),
		Orders: store, PaymentSecret: paySecret,
		AutoPipeline: true, PollInterval: 100 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		return nil, err
	}
	wk, err := worker.New(worker.Config{Sale: sale, Redis: rdb, DB: db, PodID: "demo-worker",
		ClaimMinIdle: 2 * time.Second, Registry: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		return nil, err
	}
	rb, err := rollback.New(rollback.Config{SaleKey: sale.SaleKey(), Redis: rdb, Orders: store, Buckets: orderstate.BucketsOf(sale),
		Interval: 250 * time.Millisecond, Logger: quiet})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	dp := &dataPlane{paySecret: paySecret, rb: rb, stop: func() { cancel(); bg.Wait() }}
	if err := srv.Start(sctx); err != nil {
		dp.stop()
		return nil, err
	}
	bg.Go(func() { _ = wk.Run(sctx) })
	bg.Go(func() { _ = rb.Run(sctx) })
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	bg.Go(func() {
		// One port, metrics and probes beside the API (Listen.Metrics
		// empty): the queued demo's loadtest samples the queue gauges there.
		errc <- srv.Serve(sctx, seckill.Listen{API: "127.0.0.1:0", Ready: func(a, _ net.Addr) { addrc <- a.String() }})
	})
	select {
	case a := <-addrc:
		dp.base = "http://" + a + "/api/v1/sales/" + sale.Namespace + "/" + sale.Name
	case err := <-errc:
		dp.stop()
		return nil, err
	}
	return dp, nil
}

// runSpike sends the spike of o at the API through c and returns the
// report of what it was answered, and the orders admitted.
func runSpike(ctx context.Context, c *client, o Options, saleKey string, out io.Writer) (*Report, []order) {
	rep := &Report{SaleKey: saleKey, Outcomes: map[string]int64{}, Admitted: map[string]int64{},
		Remaining: map[string]int64{}, Initial: map[string]int64{}, Paid: map[string]int64{}}
	fmt.Fprintf(out, "==> Spike: %d buyers, %d repeat clicks, %d bots, %d in flight; %.0f%% of buyers pay, the rest walk away\n",
		o.Buyers, o.Repeats, o.Bots, o.Concurrency, o.PayShare*100)
	start := time.Now()
	orders := c.spike(ctx, o)
	rep.Elapsed = time.Since(start)
	rep.Requests = c.requests.Load()
	c.mu.Lock()
	for k, v := range c.outcomes {
		rep.Outcomes[k] = v
	}
	rep.Latencies = slices.Clone(c.latencies)
	c.mu.Unlock()
	for _, od := range orders {
		rep.Admitted[od.sku]++
		if od.paid {
			rep.Paid[od.sku]++
		}
	}
	return rep, orders
}

// waitSettled waits until MySQL holds every admitted order and none of them
// is still waiting for payment.
func waitSettled(ctx context.Context, store *orderdb.Store, saleKey string, admitted int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		counts, err := store.CountBySKU(ctx, saleKey)
		if err != nil {
			return err
		}
		var total, open int64
		for _, c := range counts {
			total += c.Created + c.Paid + c.Cancelled
			open += c.Created + c.Returning
		}
		if total == int64(admitted) && open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not settled after %s: %d of %d orders in MySQL, %d still open", within, total, admitted, open)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func createDatabase(ctx context.Context, dsn, name string) (*sql.DB, string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("parse --mysql-dsn: %w", err)
	}
	dbName := "flashsale_" + strings.ReplaceAll(name, "-", "_")
	admin := cfg.Clone()
	admin.DBName = ""
	adb, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		return nil, "", err
	}
	defer adb.Close()
	if _, err := adb.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+dbName+"`"); err != nil {
		return nil, "", fmt.Errorf("create demo database on %s (is MariaDB running? `make services`): %w", cfg.Addr, err)
	}
	cfg.DBName = dbName
	db, err := orderdb.Open(cfg.FormatDSN())
	if err != nil {
		return nil, "", err
	}
	return db, dbName, nil
}

func dropDatabase(ctx context.Context, db *sql.DB, name string) {
	_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`")
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
				// The hot SKU is split into buckets, as a sale would split it
				// to spread its purchases over the shards of a Redis Cluster.
				{ID: "phone", Stock: o.PhoneStock, Price: "3999.00", PerUserLimit: 1, Buckets: 3},
				{ID: "case", Stock: o.CaseStock, Price: "19.90", PerUserLimit: 3},
				{ID: "sticker", Stock: o.StickerStock, Price: "0.99", PerUserLimit: 1},
			},
			// The demo's buyers all connect from 127.0.0.1 and carry their own
			// address in X-Forwarded-For, as they would behind a gateway.
			PaymentTimeout: &metav1.Duration{Duration: o.PaymentTimeout},
			// Generous enough for a buyer's token, purchase, polls and payment.
			RateLimit: v1alpha1.RateLimit{PerUserPerSecond: 20, PerIPPerSecond: 50},
			Access:    &v1alpha1.Access{TrustedProxies: []string{"127.0.0.1/32", "::1/128"}},
		},
	}
	fs.SetDefaults()
	return fs
}

// forgedToken has the shape of a token and a signature by no known key.
var forgedToken = "v1.00000000.zz." + strings.Repeat("A", 22) + "." + strings.Repeat("A", 43)

type order struct {
	user, sku, orderNo string
	paid               bool
}

type client struct {
	base     string
	payAuth  string
	http     *http.Client
	sem      chan struct{}
	requests atomic.Int64

	mu        sync.Mutex
	outcomes  map[string]int64
	latencies []time.Duration
}

func newClient(base string, concurrency int, payAuth string) *client {
	if concurrency < 1 {
		concurrency = 64
	}
	tr := &http.Transport{MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2, IdleConnTimeout: 30 * time.Second}
	return &client{base: base, payAuth: payAuth, http: &http.Client{Transport: tr, Timeout: 10 * time.Second},
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
	if endpoint == "pay" {
		req.Header.Set("Authorization", c.payAuth)
	}
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

// buy is one buyer's flow: token, purchase, poll until the order is
// durable, then pay (the shop's payment service calls the pay endpoint) or
// walk away and let the deadline pass.
func (c *client) buy(ctx context.Context, user, ip, sku string, pays bool) (order, bool) {
	t := c.do(ctx, "token", http.MethodPost, "/token", user, ip, map[string]string{"sku": sku})
	if t.status != http.StatusOK {
		return order{}, false
	}
	p := c.do(ctx, "purchase", http.MethodPost, "/purchase", user, ip, map[string]string{"sku": sku, "token": t.token})
	if p.status != http.StatusAccepted {
		return order{}, false
	}
	od := order{user: user, sku: sku, orderNo: p.orderNo}
	for range 100 {
		if a := c.do(ctx, "poll", http.MethodGet, "/orders/"+p.orderNo, user, ip, nil); a.state != "queued" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pays {
		a := c.do(ctx, "pay", http.MethodPost, "/orders/"+p.orderNo+"/pay", "", ip, nil)
		od.paid = a.status == http.StatusOK
	}
	return od, true
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
	pays := func(i int) bool { return float64(i%100) < o.PayShare*100 }
	for i := range o.Buyers {
		wg.Go(func() { add(c.buy(ctx, "buyer-"+strconv.Itoa(i), ipOf(i), skuOf(i), pays(i))) })
	}
	// Repeat clickers: buyers who try again (a second phone or sticker is
	// refused; a case buyer may hold up to 3).
	for j := range o.Repeats {
		i := j % max(o.Buyers, 1)
		wg.Go(func() { add(c.buy(ctx, "buyer-"+strconv.Itoa(i), ipOf(i), skuOf(i), pays(i))) })
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
				for range 40 {
					c.do(ctx, "token", http.MethodPost, "/token", user, ip, map[string]string{"sku": "case"})
				}
			}
		})
	}
	wg.Wait()
	return orders
}

// check verifies the invariants once the sale has settled: no oversell,
// every admitted order in MySQL exactly once, paid ones kept, unpaid ones
// cancelled with their unit back in stock, nobody over their limit, nothing
// left in flight, the audit's conservation law holding, and each order
// visible to its buyer only.
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
		bad = append(bad, checkSKU(ctx, rdb, sale.SaleKey(), sku, rep)...)
	}
	if rep.Audit != nil && !rep.Audit.OK {
		for _, f := range rep.Audit.Failures() {
			bad = append(bad, "audit: "+f)
		}
	}
	return append(bad, checkVisibility(ctx, c, orders)...)
}

// skuFigures are a SKU's Redis figures, summed over its buckets.
type skuFigures struct {
	left, initial, streamed, expiring int64
	// holders are the units each buyer holds (a buyer buys in one bucket).
	holders map[string]int64
}

// readSKU reads the figures of every bucket of sku (one bucket's keys at a
// time: the buckets sit on different shards of a cluster).
func readSKU(ctx context.Context, rdb redis.UniversalClient, saleKey string, sku v1alpha1.SKU) skuFigures {
	f := skuFigures{holders: map[string]int64{}}
	for _, k := range keys.Buckets(saleKey, sku.ID, sku.BucketCount()) {
		left, _ := rdb.Get(ctx, k.Stock).Int64()
		initial, _ := rdb.Get(ctx, k.Initial).Int64()
		streamed, _ := rdb.XLen(ctx, k.Stream).Result()
		expiring, _ := rdb.ZCard(ctx, k.Expiry).Result()
		f.left, f.initial, f.streamed, f.expiring = f.left+left, f.initial+initial, f.streamed+streamed, f.expiring+expiring
		holders, _ := rdb.HGetAll(ctx, k.Holders).Result()
		for user, v := range holders {
			n, _ := strconv.ParseInt(v, 10, 64)
			f.holders[user] += n
		}
	}
	return f
}

// checkSKU checks one SKU of the settled sale saleKey against Redis and
// MySQL, and records its remaining and initial stock in rep.
func checkSKU(ctx context.Context, rdb redis.UniversalClient, saleKey string, sku v1alpha1.SKU, rep *Report) []string {
	var bad []string
	r := readSKU(ctx, rdb, saleKey, sku)
	left, initial := r.left, r.initial
	rep.Remaining[sku.ID], rep.Initial[sku.ID] = left, initial
	admitted, paid := rep.Admitted[sku.ID], rep.Paid[sku.ID]
	db := rep.MySQL[sku.ID]
	if db == nil {
		db = &orderdb.Counts{}
	}
	if left < 0 {
		bad = append(bad, fmt.Sprintf("SKU %s oversold: stock is %d", sku.ID, left))
	}
	if got := db.Created + db.Paid + db.Cancelled; got != admitted {
		bad = append(bad, fmt.Sprintf("SKU %s: MySQL holds %d orders, %d admitted", sku.ID, got, admitted))
	}
	if db.Paid != paid || db.Cancelled != admitted-paid || db.Created != 0 || db.Returning != 0 {
		bad = append(bad, fmt.Sprintf("SKU %s: MySQL paid %d cancelled %d created %d returning %d; buyers paid %d of %d",
			sku.ID, db.Paid, db.Cancelled, db.Created, db.Returning, paid, admitted))
	}
	if initial-left != paid {
		bad = append(bad, fmt.Sprintf("SKU %s: %d units out of stock but %d paid (cancelled units must come back)", sku.ID, initial-left, paid))
	}
	if r.streamed != 0 {
		bad = append(bad, fmt.Sprintf("SKU %s: %d orders still in the stream", sku.ID, r.streamed))
	}
	if r.expiring != 0 {
		bad = append(bad, fmt.Sprintf("SKU %s: %d orders still awaiting payment in Redis", sku.ID, r.expiring))
	}
	var held int64
	for user, n := range r.holders {
		held += n
		if n > int64(sku.PerUserLimit) {
			bad = append(bad, fmt.Sprintf("SKU %s: %s holds %d, limit %d", sku.ID, user, n, sku.PerUserLimit))
		}
	}
	if held != paid {
		bad = append(bad, fmt.Sprintf("SKU %s: buyers hold %d units, %d paid", sku.ID, held, paid))
	}
	return bad
}

// checkVisibility checks that (the first 50) orders show their final status
// to their buyer, and to nobody else.
func checkVisibility(ctx context.Context, c *client, orders []order) []string {
	var bad []string
	for i, o := range orders {
		if i >= 50 {
			break
		}
		want := "cancelled"
		if o.paid {
			want = "paid"
		}
		// One address per poll: result polling is rate limited per user and
		// per IP like a buyer's own polling would be.
		a := c.do(ctx, "poll", http.MethodGet, "/orders/"+o.orderNo, o.user, fmt.Sprintf("10.255.1.%d", i), nil)
		if a.status != http.StatusOK || a.state != want {
			bad = append(bad, fmt.Sprintf("order %s: poll answered %d %s %s, want %s", o.orderNo, a.status, a.code, a.state, want))
		}
		if a := c.do(ctx, "poll", http.MethodGet, "/orders/"+o.orderNo, "someone-else-"+strconv.Itoa(i), fmt.Sprintf("10.255.2.%d", i), nil); a.status != http.StatusNotFound {
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
	fmt.Fprintf(out, "\n    %-8s %6s %9s %6s %10s %6s   %s\n", "SKU", "stock", "admitted", "paid", "cancelled", "left", "(MySQL: paid/cancelled rows)")
	for _, sku := range sale.Spec.SKUs {
		db := r.MySQL[sku.ID]
		if db == nil {
			db = &orderdb.Counts{}
		}
		fmt.Fprintf(out, "    %-8s %6d %9d %6d %10d %6d   %d/%d\n", sku.ID, r.Initial[sku.ID], r.Admitted[sku.ID],
			r.Paid[sku.ID], r.Admitted[sku.ID]-r.Paid[sku.ID], r.Remaining[sku.ID], db.Paid, db.Cancelled)
	}
	if r.Audit != nil {
		fmt.Fprintln(out, "\n==> Audit (Redis vs MySQL):")
		var b strings.Builder
		_ = r.Audit.WriteText(&b)
		for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
			fmt.Fprintln(out, "    "+line)
		}
	}
	if len(r.Violations) == 0 {
		fmt.Fprintln(out, "\n==> Invariants hold: no oversell; every admitted order is in MySQL exactly once; paid orders kept,"+
			" unpaid ones cancelled with their unit back in stock; nobody over their limit; orders visible only to their buyer")
		return
	}
	fmt.Fprintln(out, "\n==> INVARIANTS BROKEN:")
	for _, v := range r.Violations {
		fmt.Fprintln(out, "    "+v)
	}
}
