package loadtest_test

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/runtime/tools/loadtest"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const paySecret = "loadtest-payment-secret"

// paymentTimeout is long enough that no unit comes back during the spike
// (so a SKU with more buyers than stock admits exactly its stock) and short
// enough that the test sees the unpaid orders cancelled.
const paymentTimeout = 4 * time.Second

type fixture struct {
	sale *v1alpha1.FlashSale
	url  string
	// metrics is the seckill's metrics listener, apart from url as in a pod.
	metrics string
	rdb     redis.UniversalClient
	db      *sql.DB
	store   *orderdb.Store
}

// startSale runs a sale in-process on rdb (one Redis, or a Redis Cluster)
// and a fresh MariaDB database: warmed, the seckill API on a test server,
// the order worker (Redis-only) and the rollback of unpaid orders. Its
// phone SKU is split into phoneBuckets buckets.
func startSale(t *testing.T, rdb redis.UniversalClient, phoneBuckets int32) *fixture {
	t.Helper()
	return startSaleWith(t, rdb, phoneBuckets, nil)
}

// startSaleWith is startSale with the sale changed by edit first.
func startSaleWith(t *testing.T, rdb redis.UniversalClient, phoneBuckets int32, edit func(*v1alpha1.FlashSale)) *fixture {
	t.Helper()
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/sale") {
		testutil.CleanupKeys(t, rdb, p)
	}
	db, _ := testutil.OrderDB(t)
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sale"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Second)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
			SKUs: []v1alpha1.SKU{
				{ID: "phone", Stock: 30, Price: "3999.00", PerUserLimit: 1, Buckets: phoneBuckets},
				{ID: "case", Stock: 40, Price: "19.90", PerUserLimit: 2},
				{ID: "sticker", Stock: 5000, Price: "0.99", PerUserLimit: 1},
			},
			PaymentTimeout: &metav1.Duration{Duration: paymentTimeout},
			RateLimit:      v1alpha1.RateLimit{PerUserPerSecond: 10},
			Access:         &v1alpha1.Access{TrustedProxies: []string{"127.0.0.1/32", "::1/128"}},
		},
	}
	if edit != nil {
		edit(fs)
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	t.Cleanup(func() { cancel(); bg.Wait() })
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyRing([]byte("0123456789abcdef0123456789abcdef-loadtest"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := orderdb.New(db)
	srv, err := seckill.New(seckill.Config{Sale: fs, Redis: rdb, Signer: token.NewSigner(ring, fs.TokenTTL(), nil),
		Orders: store, PaymentSecret: []byte(paySecret), AutoPipeline: true, PollInterval: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	ops := httptest.NewServer(srv.OpsHandler())
	t.Cleanup(ops.Close)
	wk, err := worker.New(worker.Config{Sale: fs, Redis: rdb, DB: db, PodID: "loadtest", FlushInterval: 20 * time.Millisecond,
		Registry: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := rollback.New(rollback.Config{SaleKey: fs.SaleKey(), Redis: rdb, Orders: store, Buckets: orderstate.BucketsOf(fs), Interval: 200 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	bg.Go(func() { _ = wk.Run(ctx) })
	bg.Go(func() { _ = rb.Run(ctx) })
	return &fixture{sale: fs, url: hs.URL, metrics: ops.URL, rdb: rdb, db: db, store: store}
}

func (f *fixture) options() loadtest.Options {
	return loadtest.Options{
		BaseURL: f.url, MetricsURL: f.metrics, Namespace: f.sale.Namespace, Name: f.sale.Name,
		SKUs: loadtest.SKUsOf(f.sale), Sale: f.sale,
		Profile: loadtest.Spike, Users: 300, SpikeWindow: time.Second, Concurrency: 64,
		RepeatShare: 0.3, RepeatDelay: 100 * time.Millisecond, BotShare: 0.2, HammerRequests: 40,
		PayShare: 0.5, PaymentSecret: paySecret, Seed: 42, ForwardedFor: true,
		PollInterval: 20 * time.Millisecond, PollTimeout: 5 * time.Second,
		Orders: f.store, SettleTimeout: 5 * time.Second,
	}
}

// TestSpikeAgainstRealSale runs the spike profile against the real parts and
// checks the report, then that broken invariants are caught: on one Redis,
// and on a 3-master Redis Cluster with the phone split into three buckets
// (on three shards), where still exactly its stock is sold, to buyers of
// every bucket, and the audit holds.
func TestSpikeAgainstRealSale(t *testing.T) {
	t.Run("redis", func(t *testing.T) { spikeAgainstRealSale(t, startSale(t, testutil.Redis(t), 1)) })
	t.Run("cluster", func(t *testing.T) {
		f := startSale(t, testutil.RedisCluster(t).Client(t), 3)
		spikeAgainstRealSale(t, f)
		phoneBuckets := map[int]bool{}
		rows, err := f.db.Query("SELECT order_no FROM seckill_order WHERE sale = ? AND sku_id = 'phone'", f.sale.SaleKey())
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var no string
			if err := rows.Scan(&no); err != nil {
				t.Fatal(err)
			}
			b, _ := keys.BucketOf(no)
			phoneBuckets[b] = true
		}
		if len(phoneBuckets) != 3 {
			t.Errorf("phone orders came from buckets %v, want all three", phoneBuckets)
		}
	})
}

func spikeAgainstRealSale(t *testing.T, f *fixture) {
	ctx := context.Background()
	o := f.options()
	var progress bytes.Buffer
	o.Progress = &progress
	o.ProgressEvery = 250 * time.Millisecond
	rep, err := loadtest.Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", text.String())
	if !rep.OK {
		t.Fatalf("invariants failed: %v", rep.Failed())
	}
	for _, c := range rep.Checks {
		want := loadtest.Pass
		if c.Name == loadtest.CheckStatusMySQL || c.Name == loadtest.CheckAuditConserv {
			want = loadtest.Skip // no --fs
		}
		if c.Status != want {
			t.Errorf("check %s: %s (%s), want %s", c.Name, c.Status, c.Detail, want)
		}
	}
	if !strings.Contains(progress.String(), "req/s") || !strings.Contains(progress.String(), "admitted") {
		t.Errorf("no progress lines:\n%s", progress.String())
	}

	// More buyers than stock: exactly the stock is admitted.
	by := map[string]loadtest.SKUReport{}
	for _, s := range rep.SKUs {
		by[s.ID] = s
	}
	if by["phone"].Admitted != 30 || by["case"].Admitted != 40 || !by["phone"].SoldOut {
		t.Errorf("admitted phone %d (stock 30), case %d (stock 40)", by["phone"].Admitted, by["case"].Admitted)
	}
	if rep.Orders.Paid == 0 || rep.Orders.WalkedAway == 0 || *rep.Orders.MissingMySQL != 0 {
		t.Errorf("orders: %+v", rep.Orders)
	}
	if rep.Sessions.Buyers != 300 || rep.Sessions.Bots != 60 {
		t.Errorf("sessions: %+v", rep.Sessions)
	}
	// Bots: never admitted; token bots refused BAD_TOKEN; every hammering bot saw 429.
	var badToken int64
	for _, b := range rep.Bots {
		if b.Admitted != 0 {
			t.Errorf("%s bots admitted %d times", b.Kind, b.Admitted)
		}
		badToken += b.Outcomes["403 BAD_TOKEN"]
		if b.Kind == "hammer" && (b.Sessions == 0 || b.Throttled != b.Sessions || b.Outcomes["429 RATE_LIMITED"] == 0) {
			t.Errorf("hammering bots: %+v", b)
		}
	}
	if badToken == 0 {
		t.Errorf("no bot was refused BAD_TOKEN: %+v", rep.Bots)
	}
	// Repeat clickers: the same order for the same token, ALREADY_PURCHASED for a fresh one.
	if rep.Repeats.Retry["202 same order"] == 0 || rep.Repeats.Retry["202 another order"] != 0 ||
		rep.Repeats.Again["purchase 409 ALREADY_PURCHASED"] == 0 {
		t.Errorf("repeats: %+v", rep.Repeats)
	}
	// Latency percentiles and outcomes per step.
	steps := map[string]loadtest.StepReport{}
	for _, s := range rep.Steps {
		steps[s.Name] = s
	}
	for _, name := range []string{"token", "purchase", "poll", "pay", "bot"} {
		s := steps[name]
		if s.Requests == 0 || s.Latency.P50 <= 0 || s.Latency.P50 > s.Latency.P99 || s.Latency.P99 > s.Latency.Max || s.Errors != 0 {
			t.Errorf("step %s: %+v", name, s)
		}
	}
	var json bytes.Buffer
	if err := rep.WriteJSON(&json); err != nil || !strings.Contains(json.String(), `"p99Ms"`) {
		t.Errorf("JSON report: %v\n%s", err, json.String())
	}

	// A checker told a smaller stock sees an oversell.
	small := f.options()
	small.SKUs[0].Stock = 20
	loadtest.Verify(ctx, rep, small)
	if rep.OK || !failed(rep, loadtest.CheckOversell, "SKU phone: 30 orders admitted, stock 20") {
		t.Errorf("smaller stock not caught: %+v", rep.Checks)
	}

	// Wait for the unpaid orders to be cancelled, then check against a
	// FlashSale that has Ended with a status made from MySQL and a real audit.
	waitNoneCreated(t, f.store, f.sale.SaleKey())
	fs := endedFlashSale(t, f)
	o.Kube, o.WaitEnded, o.WaitTimeout = kubeReader(t, fs), true, 5*time.Second
	loadtest.Verify(ctx, rep, o)
	if !rep.OK || rep.Kube == nil || rep.Kube.Phase != v1alpha1.PhaseEnded {
		t.Fatalf("after the sale ended: %+v", rep.Checks)
	}
	for _, name := range []string{loadtest.CheckEnded, loadtest.CheckStatusMySQL, loadtest.CheckAuditConserv, loadtest.CheckLostOrder} {
		if !passed(rep, name) {
			t.Errorf("check %s did not pass: %+v", name, rep.Checks)
		}
	}

	// A status that disagrees with MySQL, and an audit that is not conserved.
	wrong := fs.DeepCopy()
	wrong.Status.SKUs[0].Paid++
	wrong.Status.Audit.Conserved = false
	o.Kube = kubeReader(t, wrong)
	loadtest.Verify(ctx, rep, o)
	if rep.OK || !failed(rep, loadtest.CheckStatusMySQL, "status paid") || !failed(rep, loadtest.CheckAuditConserv, "initial") {
		t.Errorf("wrong status not caught: %+v", rep.Checks)
	}

	// An order row lost, and an unpaid order paid behind the buyer's back.
	var lost string
	if err := f.db.QueryRow("SELECT order_no FROM seckill_order WHERE status = 1 ORDER BY order_no LIMIT 1").Scan(&lost); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec("DELETE FROM seckill_order WHERE order_no = ?", lost); err != nil {
		t.Fatal(err)
	}
	var sneaked string
	if err := f.db.QueryRow("SELECT order_no FROM seckill_order WHERE status = 2 ORDER BY order_no LIMIT 1").Scan(&sneaked); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec("UPDATE seckill_order SET status = 1 WHERE order_no = ?", sneaked); err != nil {
		t.Fatal(err)
	}
	o.Kube, o.WaitEnded = nil, false
	o.SettleTimeout = 300 * time.Millisecond
	loadtest.Verify(ctx, rep, o)
	if rep.OK || !failed(rep, loadtest.CheckLostOrder, lost) || !failed(rep, loadtest.CheckLostOrder, sneaked+": paid in MySQL but this run never paid it") {
		t.Errorf("lost or wrongly paid order not caught (%s, %s): %+v", lost, sneaked, rep.Checks)
	}
	text.Reset()
	_ = rep.WriteText(&text)
	if !strings.Contains(text.String(), "INVARIANTS BROKEN: "+loadtest.CheckLostOrder) {
		t.Errorf("text report does not say what broke:\n%s", text.String())
	}
}

// TestQueuedSaleAgainstRealSale runs the waiting room's flow against a real
// seckill server with a queued sale: 300 buyers join before the start (a
// random place each), are admitted at 200 a second under the budget of
// the remaining stock x 1.5, buy with their ticket; the sale sells out and
// the buyers still waiting are told SOLD_OUT. Every check passes.
func TestQueuedSaleAgainstRealSale(t *testing.T) {
	f := startSaleWith(t, testutil.Redis(t), 1, func(fs *v1alpha1.FlashSale) {
		fs.Spec.StartTime = metav1.NewTime(time.Now().Add(2 * time.Second))
		fs.Spec.SKUs = fs.Spec.SKUs[:2] // phone 30 (1 each), case 40 (2 each): sold out by 300 buyers
		fs.Spec.Queue = &v1alpha1.Queue{PrequeueLead: &metav1.Duration{Duration: time.Minute}, AdmitPerSecond: 200, Overbook: "1.5"}
	})
	o := f.options()
	o.RejoinShare, o.ProbeShare, o.ThinkTime, o.QueueTimeout = 0.3, 0.1, 300*time.Millisecond, 30*time.Second
	rep, err := loadtest.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	_ = rep.WriteText(&text)
	t.Logf("report:\n%s", text.String())
	if !rep.OK {
		t.Fatalf("invariants failed: %v", rep.Failed())
	}
	for _, name := range []string{loadtest.CheckOneTicket, loadtest.CheckNoTokenUnqueued, loadtest.CheckAdmissionBound, loadtest.CheckQueueSoldOut,
		loadtest.CheckOversell, loadtest.CheckBots, loadtest.CheckLostOrder} {
		if !passed(rep, name) {
			t.Errorf("check %s did not pass: %+v", name, rep.Checks)
		}
	}
	q := rep.Queue
	if q == nil || q.Joined != 300 || q.Admitted < 70 || q.ToldSoldOut == 0 || q.GaveUp != 0 || q.Rejoins == 0 || q.Samples == 0 {
		t.Fatalf("waiting room: %+v", q)
	}
	if q.Probes["403 NOT_ADMITTED"] == 0 {
		t.Errorf("no probe was refused NOT_ADMITTED: %v", q.Probes)
	}
	if rep.Orders.Admitted != 70 {
		t.Errorf("%d orders admitted, stock 70", rep.Orders.Admitted)
	}
}

func failed(rep *loadtest.Report, name, detail string) bool {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Status == loadtest.Fail && strings.Contains(c.Detail, detail)
		}
	}
	return false
}

func passed(rep *loadtest.Report, name string) bool {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Status == loadtest.Pass
		}
	}
	return false
}

func waitNoneCreated(t *testing.T, store *orderdb.Store, saleKey string) {
	t.Helper()
	deadline := time.Now().Add(paymentTimeout + 10*time.Second)
	for {
		counts, err := store.CountBySKU(context.Background(), saleKey)
		if err != nil {
			t.Fatal(err)
		}
		open := int64(0)
		for _, c := range counts {
			open += c.Created + c.Returning
		}
		if open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d orders still awaiting payment or their stock", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// endedFlashSale is the FlashSale as the operator leaves it once the sale
// has Ended: per-SKU counts from MySQL and the final audit.
func endedFlashSale(t *testing.T, f *fixture) *v1alpha1.FlashSale {
	t.Helper()
	ctx := context.Background()
	counts, err := f.store.CountBySKU(ctx, f.sale.SaleKey())
	if err != nil {
		t.Fatal(err)
	}
	a, err := audit.New(audit.Config{Sale: f.sale, Redis: f.rdb, Orders: f.store})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := f.sale.DeepCopy()
	fs.Status.Phase = v1alpha1.PhaseEnded
	as := &v1alpha1.AuditStatus{Time: metav1.Now(), Conserved: ar.Conserved, Lost: int64(ar.Lost)}
	for _, s := range ar.SKUs {
		as.Initial += s.Initial
		as.Accounted += s.Accounted
	}
	fs.Status.Audit = as
	for _, s := range fs.Spec.SKUs {
		ss := v1alpha1.SKUStatus{ID: s.ID, Stock: s.Stock}
		if c := counts[s.ID]; c != nil {
			ss.Paid, ss.Cancelled = c.Paid, c.Cancelled
		}
		fs.Status.SKUs = append(fs.Status.SKUs, ss)
	}
	return fs
}

// kubeReader serves one FlashSale, as the API server would.
func kubeReader(t *testing.T, fs *v1alpha1.FlashSale) client.Reader {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(fs.DeepCopy()).WithStatusSubresource(fs).Build()
}
