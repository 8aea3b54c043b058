package streamsink_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/internal/pipelinetest"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/streamsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var fast = backoff.Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}

// start runs a sink until the test ends or the returned stop is called.
func start(t *testing.T, cfg streamsink.Config) (stop func() (time.Duration, error)) {
	t.Helper()
	s, err := streamsink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pipelinetest.Start(t, s.Run)
}

func config(saleKey string, rdb redis.UniversalClient, db *sql.DB, consumer string) streamsink.Config {
	return streamsink.Config{
		SaleKey: saleKey, SKUs: []string{"1001", "1002"}, Redis: rdb, Consumer: consumer,
		Writer:    dbsink.New(dbsink.Config{Store: orderdb.New(db), Redis: rdb, SaleKey: saleKey, Backoff: fast}),
		BatchSize: 50, Block: 100 * time.Millisecond, Backoff: fast,
	}
}

func orders(saleKey string, n int) []order.Order {
	out := make([]order.Order, n)
	for i := range out {
		out[i] = pipelinetest.Order(saleKey, fmt.Sprint(1001+i%2), fmt.Sprintf("u%d", i), "19.90")
	}
	return out
}

// TestSinkStoresEveryOrderOnce moves orders from two SKU streams, some
// waiting before the sink starts and some admitted while it runs, with a
// corrupt entry among them: every order is a row in MySQL once and shows
// "created", the streams are empty, and the corrupt entry is in the SKU's
// dead-letter stream with its reason.
func TestSinkStoresEveryOrderOnce(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	db, _ := testutil.OrderDB(t)
	saleKey := pipelinetest.SaleKey(t, rdb)
	all := orders(saleKey, 600)
	pipelinetest.Admit(t, rdb, all[:300]...)
	k := keys.ForSKU(saleKey, "1001")
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: k.Stream, Values: []any{"order", "garbage"}}).Err(); err != nil {
		t.Fatal(err)
	}
	start(t, config(saleKey, rdb, db, "pod-a"))
	pipelinetest.Admit(t, rdb, all[300:]...)

	testutil.Eventually(t, 30*time.Second, "600 rows", func() bool { return pipelinetest.Rows(t, db, saleKey) >= 600 })
	testutil.Eventually(t, 10*time.Second, "streams drained", func() bool {
		n, p := pipelinetest.Left(t, rdb, saleKey, "1001", "1002")
		return n == 0 && p == 0
	})
	if n := pipelinetest.Rows(t, db, saleKey); n != 600 {
		t.Fatalf("%d rows, want 600", n)
	}
	for _, o := range all {
		rec, ok, err := orderstate.Lookup(context.Background(), rdb, saleKey, o.SKU, 1, o.OrderNo)
		if err != nil || !ok || rec.Status != order.Created {
			t.Fatalf("order %s shows %+v (%v, %v), want created", o.OrderNo, rec, ok, err)
		}
	}
	dl, err := rdb.XRange(context.Background(), k.DeadLetters, "-", "+").Result()
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %v (%v), want 1", dl, err)
	}
	if r, _ := dl[0].Values["error"].(string); !strings.Contains(r, "stream entry") || dl[0].Values["f:order"] != "garbage" {
		t.Fatalf("dead letter %v", dl[0].Values)
	}
}

// TestSinkLeavesOrdersPendingWhileMySQLIsDown cuts MySQL away: nothing is
// acknowledged, so the orders stay in Redis; stopping the sink gives up
// after its ShutdownGrace and leaves them pending; a sink of another pod
// claims them and stores them once MySQL is back.
func TestSinkLeavesOrdersPendingWhileMySQLIsDown(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	direct, dsn := testutil.OrderDB(t)
	proxy, db := testutil.ProxiedOrderDB(t, dsn, 2*time.Second)
	saleKey := pipelinetest.SaleKey(t, rdb)
	proxy.Cut()
	pipelinetest.Admit(t, rdb, orders(saleKey, 100)...)

	first := config(saleKey, rdb, db, "pod-a")
	first.ShutdownGrace = 300 * time.Millisecond
	stop := start(t, first)
	testutil.Eventually(t, 10*time.Second, "orders delivered to the sink", func() bool {
		_, p := pipelinetest.Left(t, rdb, saleKey, "1001", "1002")
		return p == 100
	})
	time.Sleep(300 * time.Millisecond)
	if n, _ := pipelinetest.Left(t, rdb, saleKey, "1001", "1002"); n != 100 {
		t.Fatalf("%d orders left in Redis while MySQL is down, want all 100", n)
	}
	if took, _ := stop(); took < 250*time.Millisecond || took > 5*time.Second {
		t.Fatalf("Run returned %v after its context ended, want about its grace (300ms)", took)
	}
	if n, p := pipelinetest.Left(t, rdb, saleKey, "1001", "1002"); n != 100 || p != 100 {
		t.Fatalf("after the stop: %d orders, %d pending; want 100 pending", n, p)
	}

	proxy.Restore()
	next := config(saleKey, rdb, direct, "pod-b")
	next.MinIdle = 100 * time.Millisecond
	start(t, next)
	testutil.Eventually(t, 30*time.Second, "claimed and stored", func() bool {
		n, p := pipelinetest.Left(t, rdb, saleKey, "1001", "1002")
		return n == 0 && p == 0
	})
	if n := pipelinetest.Rows(t, direct, saleKey); n != 100 {
		t.Fatalf("%d rows, want 100", n)
	}
}
