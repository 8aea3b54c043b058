package worker_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/internal/pipelinetest"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// shop buys through the real purchase script, as the seckill does, and
// remembers every order it was told was admitted (a 202).
type shop struct {
	t      *testing.T
	rdb    redis.UniversalClient
	sale   *v1alpha1.FlashSale
	script *purchase.Script
	mu     sync.Mutex
	told   map[string]order.Order // orderNo -> what the buyer bought
	n      int
}

func newShop(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale) *shop {
	t.Helper()
	ctx := context.Background()
	bk := orderstate.BucketsOf(sale)
	for _, sku := range sale.Spec.SKUs {
		for _, k := range bk.Keys(sale.SaleKey(), sku.ID) {
			if err := rdb.Set(ctx, k.Stock, sku.Stock, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	script, err := purchase.New(rdb, sale.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := script.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return &shop{t: t, rdb: rdb, sale: sale, script: script, told: map[string]order.Order{}}
}

// buy admits n purchases, 8 at a time, at the given price.
func (s *shop) buy(n int, amount string) []string {
	s.t.Helper()
	s.mu.Lock()
	first := s.n
	s.n += n
	s.mu.Unlock()
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 8)
		mu   sync.Mutex
		nos  []string
		errs []error
	)
	for i := first; i < first+n; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			user, sku := fmt.Sprintf("u%d", i), skus[i%len(skus)]
			n := orderstate.BucketsOf(s.sale).Of(sku)
			now := time.Now()
			r, err := s.script.Purchase(context.Background(), purchase.Request{SKU: sku, Bucket: keys.Home(user, n), Buckets: n,
				User: user, Limit: 1, Amount: amount,
				Nonce: "n-" + user, Now: now, Deadline: now.Add(15 * time.Minute)})
			mu.Lock()
			defer mu.Unlock()
			if err != nil || r.Outcome != purchase.Admitted {
				errs = append(errs, fmt.Errorf("purchase by %s: %+v %v", user, r, err))
				return
			}
			nos = append(nos, r.OrderNo)
			s.mu.Lock()
			s.told[r.OrderNo] = order.Order{OrderNo: r.OrderNo, SKU: sku, User: user, Amount: amount}
			s.mu.Unlock()
		})
	}
	wg.Wait()
	for _, err := range errs {
		s.t.Fatal(err)
	}
	return nos
}

// stored maps the sale's order numbers in MySQL to how many rows each has.
func stored(t *testing.T, db *sql.DB, saleKey string) map[string]int {
	t.Helper()
	rows, err := db.Query(`SELECT order_no, COUNT(*) FROM seckill_order WHERE sale = ? GROUP BY order_no`, saleKey)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var no string
		var n int
		if err := rows.Scan(&no, &n); err != nil {
			t.Fatal(err)
		}
		out[no] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// deadLetters reads the dead-letter streams of every bucket of the sale's SKUs.
func deadLetters(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale) []redis.XMessage {
	t.Helper()
	var out []redis.XMessage
	for _, k := range orderstate.BucketsOf(sale).All(sale.SaleKey(), skus) {
		msgs, err := rdb.XRange(context.Background(), k.DeadLetters, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msgs...)
	}
	return out
}

// TestRedisOnlyMySQLDownMidSale is the Redis-only twin of the Kafka mode's
// MySQL outage test: MySQL is cut away (its connections dropped) while
// buyers keep buying; the orders admitted meanwhile stay in the streams,
// nothing is acknowledged or dead-lettered for the outage, and once MySQL is
// back every order told 202 is one row, shows "created", and the streams
// are empty.
func TestRedisOnlyMySQLDownMidSale(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	direct, dsn := testutil.OrderDB(t)
	proxy, wdb := testutil.ProxiedOrderDB(t, dsn, 2*time.Second)
	sale := newSale(t, rdb, 0)
	saleKey := sale.SaleKey()
	s := newShop(t, rdb, sale)
	cfg := config(sale, rdb, wdb, nil)
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, w.Run)
	testutil.Eventually(t, 5*time.Second, "ready", w.Ready)

	s.buy(300, "19.90")
	testutil.Eventually(t, 30*time.Second, "300 rows before the outage", func() bool { return pipelinetest.Rows(t, direct, saleKey) == 300 })
	testutil.Eventually(t, 10*time.Second, "their entries acknowledged", func() bool {
		n, p := pipelinetest.LeftIn(t, rdb, orderstate.BucketsOf(sale), saleKey, skus...)
		return n == 0 && p == 0
	})

	proxy.Cut()
	s.buy(300, "19.90")
	testutil.Eventually(t, 20*time.Second, "the sink retrying MySQL", func() bool {
		return pipelinetest.Counter(t, reg, "flashsale_worker_retries_total", "transient") >= 3
	})
	s.buy(100, "19.90") // the sale goes on during the outage
	time.Sleep(500 * time.Millisecond)
	if n := pipelinetest.Rows(t, direct, saleKey); n != 300 {
		t.Fatalf("%d rows while MySQL was cut away, want 300", n)
	}
	if n, _ := pipelinetest.LeftIn(t, rdb, orderstate.BucketsOf(sale), saleKey, skus...); n != 400 {
		t.Fatalf("%d orders left in the streams during the outage, want the 400 admitted since", n)
	}
	if dl := deadLetters(t, rdb, sale); len(dl) != 0 {
		t.Fatalf("%d orders dead-lettered for a MySQL outage", len(dl))
	}

	proxy.Restore()
	testutil.Eventually(t, 60*time.Second, "700 rows after MySQL came back", func() bool { return pipelinetest.Rows(t, direct, saleKey) == 700 })
	testutil.Eventually(t, 10*time.Second, "streams drained", func() bool {
		n, p := pipelinetest.LeftIn(t, rdb, orderstate.BucketsOf(sale), saleKey, skus...)
		return n == 0 && p == 0
	})
	rows := stored(t, direct, saleKey)
	for no, o := range s.told {
		if rows[no] != 1 {
			t.Errorf("order %s told 202 has %d rows", no, rows[no])
		}
		rec, ok, err := orderstate.Lookup(context.Background(), rdb, saleKey, o.SKU, orderstate.BucketsOf(sale).Of(o.SKU), no)
		if err != nil || !ok || rec.Status != order.Created {
			t.Errorf("order %s shows %+v (%v, %v), want created", no, rec, ok, err)
		}
	}
	if len(rows) != len(s.told) {
		t.Errorf("%d orders in MySQL, %d told 202", len(rows), len(s.told))
	}
	if dl := deadLetters(t, rdb, sale); len(dl) != 0 {
		t.Fatalf("%d orders dead-lettered", len(dl))
	}
}

// TestRedisOnlyDeadLettersARefusedRow is the Redis-only twin of the Kafka
// mode's poison test: among real purchases, one whose row MySQL refuses for
// good (an amount out of DECIMAL(14,2)'s range) and an entry that is no
// order at all. Each lands in its SKU's dead-letter stream with its reason,
// its attempts and every field of the original entry (nothing of the order
// is lost), and the orders before and after it flow on into MySQL. On one
// Redis and on a 3-master Redis Cluster, SKU 1001 split into three buckets.
func TestRedisOnlyDeadLettersARefusedRow(t *testing.T) {
	t.Parallel()
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		redisOnlyDeadLettersARefusedRow(t, testutil.Redis(t))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		redisOnlyDeadLettersARefusedRow(t, testutil.RedisCluster(t).Client(t))
	})
}

func redisOnlyDeadLettersARefusedRow(t *testing.T, rdb redis.UniversalClient) {
	db, _ := testutil.OrderDB(t)
	sale := newSale(t, rdb, 0)
	saleKey := sale.SaleKey()
	s := newShop(t, rdb, sale)
	w, err := worker.New(config(sale, rdb, db, nil))
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, w.Run)
	testutil.Eventually(t, 5*time.Second, "ready", w.Ready)

	s.buy(100, "19.90")
	refused := s.buy(1, "1e20")[0]
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: keys.ForSKU(saleKey, skus[0]).Stream,
		Values: []any{"order", "garbage"}}).Err(); err != nil {
		t.Fatal(err)
	}
	s.buy(100, "19.90")

	testutil.Eventually(t, 30*time.Second, "200 good rows", func() bool { return pipelinetest.Rows(t, db, saleKey) == 200 })
	testutil.Eventually(t, 30*time.Second, "streams drained", func() bool {
		n, p := pipelinetest.LeftIn(t, rdb, orderstate.BucketsOf(sale), saleKey, skus...)
		return n == 0 && p == 0
	})
	rows := stored(t, db, saleKey)
	for no := range s.told {
		want := 1
		if no == refused {
			want = 0
		}
		if rows[no] != want {
			t.Errorf("order %s has %d rows, want %d", no, rows[no], want)
		}
	}
	dl := deadLetters(t, rdb, sale)
	if len(dl) != 2 {
		t.Fatalf("dead letters %v, want 2", dl)
	}
	byOrder := map[string]map[string]any{}
	for _, m := range dl {
		byOrder[fmt.Sprint(m.Values["f:order"])] = m.Values
	}
	r := byOrder[refused]
	o := s.told[refused]
	if r == nil || !strings.Contains(fmt.Sprint(r["error"]), "Out of range") || r["attempts"] != "3" ||
		r["f:user"] != o.User || r["f:sku"] != o.SKU || r["f:amount"] != "1e20" || r["f:sale"] != saleKey ||
		r["f:n"] != "1" || r["f:at"] == nil || r["f:deadline"] == nil || r["source-id"] == nil {
		t.Errorf("the refused row's dead letter: %v", r)
	}
	if g := byOrder["garbage"]; g == nil || !strings.HasPrefix(fmt.Sprint(g["error"]), "decode: ") || g["attempts"] != "1" {
		t.Errorf("the garbage entry's dead letter: %v", g)
	}
	// The refused order is still the buyer's: it shows queued, not lost.
	if rec, ok, err := orderstate.Lookup(context.Background(), rdb, saleKey, o.SKU, orderstate.BucketsOf(sale).Of(o.SKU), refused); err != nil || !ok || rec.User != o.User {
		t.Errorf("the refused order's record: %+v %v %v", rec, ok, err)
	}
}
