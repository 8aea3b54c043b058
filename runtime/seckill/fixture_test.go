package seckill_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// testPoll is how often the test servers re-read the switches and stock.
const testPoll = 50 * time.Millisecond

var testKey = []byte("0123456789abcdef0123456789abcdef-test-key")

// newSale returns a sale in a fresh namespace (so its keys are the test's
// own), open from a second ago for an hour, without rate limits.
func newSale(t testing.TB, rdb redis.UniversalClient, skus ...v1alpha1.SKU) *v1alpha1.FlashSale {
	t.Helper()
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/sale") {
		testutil.CleanupKeys(t, rdb, p)
	}
	if len(skus) == 0 {
		skus = []v1alpha1.SKU{{ID: "1001", Stock: 100, Price: "3999.00", PerUserLimit: 1}}
	}
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: "flashsale.dev/v1alpha1", Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sale"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Second)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
			SKUs:      skus,
		},
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

type testServer struct {
	*seckill.Server
	t      testing.TB
	url    string // base URL of the sale's API
	root   string
	signer *token.Signer
	rdb    redis.UniversalClient
	sale   *v1alpha1.FlashSale
}

type serverOpts struct {
	clock   clock.Clock
	signer  *token.Signer
	risk    seckill.RiskChecker
	noWarm  bool
	autoOff bool
	// batchOff turns off the purchase batching the servers have by default.
	batchOff bool
	// orders and paySecret turn the pay endpoint on.
	orders    *orderdb.Store
	paySecret []byte
	// admitEvery is the admitter's interval of a queued sale (default 10 ms
	// in tests).
	admitEvery time.Duration
}

// startServer warms the sale (unless noWarm) and serves it on a test server.
func startServer(t testing.TB, rdb redis.UniversalClient, fs *v1alpha1.FlashSale, o serverOpts) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if !o.noWarm {
		if _, err := warm.Warm(ctx, rdb, fs); err != nil {
			t.Fatal(err)
		}
	}
	if o.signer == nil {
		ring, err := token.NewKeyRing(testKey)
		if err != nil {
			t.Fatal(err)
		}
		var pc clock.PassiveClock
		if o.clock != nil {
			pc = o.clock
		}
		o.signer = token.NewSigner(ring, fs.TokenTTL(), pc)
	}
	if o.admitEvery == 0 {
		o.admitEvery = 10 * time.Millisecond
	}
	srv, err := seckill.New(seckill.Config{
		Sale: fs, Redis: rdb, Signer: o.signer, Risk: o.risk, Clock: o.clock,
		PollInterval: testPoll, AutoPipeline: !o.autoOff, Batch: !o.batchOff,
		Orders: o.orders, PaymentSecret: o.paySecret, AdmitInterval: o.admitEvery,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &testServer{Server: srv, t: t, root: hs.URL, url: hs.URL + "/api/v1/sales/" + fs.Namespace + "/" + fs.Name,
		signer: o.signer, rdb: rdb, sale: fs}
}

type reply struct {
	Status     int
	Error      string `json:"error"`
	Message    string `json:"message"`
	Token      string `json:"token"`
	OrderNo    string `json:"orderNo"`
	SKU        string `json:"sku"`
	State      string `json:"status"`
	Remaining  int64  `json:"remaining"`
	SoldOut    bool   `json:"soldOut"`
	RetryAfter string
	Body       string
	// The waiting room's answers (join, wait; place and ahead also come
	// with NOT_ADMITTED).
	Ticket           string `json:"ticket"`
	Place            *int64 `json:"place"`
	Ahead            *int64 `json:"ahead"`
	EstimatedWait    int64  `json:"estimatedWaitSeconds"`
	PollAfterSeconds int64  `json:"pollAfterSeconds"`
	Next             string `json:"next"`
}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 10 * time.Second}

// call sends one request; headers alternate name, value.
func (s *testServer) call(method, path, body string, headers ...string) reply {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r); err != nil {
			s.t.Fatalf("%s %s answered %d with a non-JSON body %q", method, path, resp.StatusCode, raw)
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			s.t.Fatalf("%s %s: Content-Type %q", method, path, resp.Header.Get("Content-Type"))
		}
	}
	r.Status = resp.StatusCode
	return r
}

func (s *testServer) token(user, sku string) reply {
	s.t.Helper()
	return s.call(http.MethodPost, "/token", `{"sku":"`+sku+`"}`, "X-User-ID", user)
}

func (s *testServer) purchase(user, sku, tok string) reply {
	s.t.Helper()
	return s.call(http.MethodPost, "/purchase", `{"sku":"`+sku+`","token":"`+tok+`"}`, "X-User-ID", user)
}

// buy fetches a token and purchases with it.
func (s *testServer) buy(user, sku string) reply {
	s.t.Helper()
	tk := s.token(user, sku)
	if tk.Status != http.StatusOK {
		return tk
	}
	return s.purchase(user, sku, tk.Token)
}

// snapshot renders every key of the sale's SKUs (bucket 0), the tokens'
// records included, to prove a refusal changed nothing.
func snapshot(t testing.TB, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) string {
	t.Helper()
	ctx := context.Background()
	var b bytes.Buffer
	for _, sku := range fs.Spec.SKUs {
		k := keys.ForSKU(fs.SaleKey(), sku.ID)
		stock, _ := rdb.Get(ctx, k.Stock).Result()
		initial, _ := rdb.Get(ctx, k.Initial).Result()
		b.WriteString(sku.ID + " stock=" + stock + " initial=" + initial)
		for _, h := range []string{k.Holders, k.Seq, k.Orders, k.Tokens} {
			m, _ := rdb.HGetAll(ctx, h).Result()
			b.WriteString(" " + h + "=" + sortedMap(m))
		}
		xl, _ := rdb.XLen(ctx, k.Stream).Result()
		zc, _ := rdb.ZCard(ctx, k.Expiry).Result()
		b.WriteString(" stream=" + strconv.FormatInt(xl, 10) + " expiry=" + strconv.FormatInt(zc, 10) + "\n")
	}
	return b.String()
}

func sortedMap(m map[string]string) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k+":"+m[k])
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// stock reads a SKU's stock counter.
func stock(t testing.TB, rdb redis.UniversalClient, fs *v1alpha1.FlashSale, sku string) int64 {
	t.Helper()
	n, err := rdb.Get(context.Background(), keys.ForSKU(fs.SaleKey(), sku).Stock).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
