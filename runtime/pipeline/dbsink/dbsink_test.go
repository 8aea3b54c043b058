package dbsink_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/dbsink"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/internal/pipelinetest"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var fast = backoff.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}

func items(orders ...order.Order) []dbsink.Item {
	out := make([]dbsink.Item, len(orders))
	for i, o := range orders {
		out[i] = dbsink.Item{Order: o}
	}
	return out
}

// noDeadLetters fails the test when called.
func noDeadLetters(t *testing.T) dbsink.DeadLetter {
	return func(_ context.Context, idx int, reason string, _ int) error {
		t.Errorf("item %d dead-lettered: %s", idx, reason)
		return nil
	}
}

// TestWriteIsIdempotent writes a batch twice, as a redelivery after a crash
// does: every order is stored once, the second write succeeds too, and the
// metrics tell new rows from duplicates.
func TestWriteIsIdempotent(t *testing.T) {
	t.Parallel()
	db, _ := testutil.OrderDB(t)
	saleKey := testutil.UniqueName(t) + "/sale"
	reg := prometheus.NewRegistry()
	w := dbsink.New(dbsink.Config{Store: orderdb.New(db), SaleKey: saleKey, Backoff: fast, Metrics: dbsink.NewMetrics(reg)})
	var batch []dbsink.Item
	for i := range 20 {
		batch = append(batch, items(pipelinetest.Order(saleKey, "1001", fmt.Sprintf("u%d", i), "9.90"))...)
	}
	ctx := context.Background()
	for range 2 {
		if err := w.Write(ctx, batch, noDeadLetters(t)); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if n := pipelinetest.Rows(t, db, saleKey); n != 20 {
		t.Fatalf("%d rows, want 20", n)
	}
	if n, d := pipelinetest.Counter(t, reg, "flashsale_worker_orders_inserted_total", "new"), pipelinetest.Counter(t, reg, "flashsale_worker_orders_inserted_total", "duplicate"); n != 20 || d != 20 {
		t.Fatalf("inserted new=%v duplicate=%v, want 20 and 20", n, d)
	}
}

// TestWriteDeadLettersWhatCanNeverBeStored mixes good orders with an entry
// that did not decode, an order of another sale, and a row MySQL refuses
// for its data: the good ones are stored, each bad one is dead-lettered
// once with its reason (the refused row after MaxAttempts tries), and a
// dead letter that fails to be recorded is retried.
func TestWriteDeadLettersWhatCanNeverBeStored(t *testing.T) {
	t.Parallel()
	db, _ := testutil.OrderDB(t)
	saleKey := testutil.UniqueName(t) + "/sale"
	reg := prometheus.NewRegistry()
	w := dbsink.New(dbsink.Config{
		Store: orderdb.New(db), SaleKey: saleKey, MaxAttempts: 2, Backoff: fast, Metrics: dbsink.NewMetrics(reg),
	})
	batch := items(
		pipelinetest.Order(saleKey, "1001", "alice", "1.00"),
		order.Order{},
		pipelinetest.Order("other/sale", "1001", "mallory", "1.00"),
		pipelinetest.Order(saleKey, "1001", "carol", "1e20"), // out of DECIMAL(14,2)'s range
		pipelinetest.Order(saleKey, "1001", "dave", "3.00"),
	)
	batch[1].Err = errors.New("not an order")
	type dead struct {
		reason   string
		attempts int
	}
	var (
		mu    sync.Mutex
		got   = map[int]dead{}
		fails = 1
	)
	// Bounded: a refused row retried as if MySQL were away would never end.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := w.Write(ctx, batch, func(_ context.Context, idx int, reason string, attempts int) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return errors.New("dead-letter stream away")
		}
		if _, dup := got[idx]; dup {
			t.Errorf("item %d dead-lettered twice", idx)
		}
		got[idx] = dead{reason, attempts}
		return nil
	})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if n := pipelinetest.Rows(t, db, saleKey); n != 2 {
		t.Fatalf("%d rows, want the 2 good orders", n)
	}
	for idx, want := range map[int]dead{1: {"decode: not an order", 1}, 2: {`belongs to sale "other/sale"`, 1}, 3: {"mysql: ", 2}} {
		g, ok := got[idx]
		if !ok || !strings.Contains(g.reason, want.reason) || g.attempts != want.attempts {
			t.Errorf("item %d: dead letter %+v (%v), want reason containing %q after %d attempts", idx, g, ok, want.reason, want.attempts)
		}
	}
	if len(got) != 3 {
		t.Errorf("dead letters %v, want items 1, 2 and 3", got)
	}
	if n := pipelinetest.Counter(t, reg, "flashsale_worker_dead_letters_total", ""); n != 3 {
		t.Errorf("dead letters counted: %v, want 3", n)
	}
}

// TestWriteWaitsOutAMySQLOutage cuts MySQL away during a write: Write keeps
// retrying (it neither returns nor skips an order) and completes once MySQL
// is back.
func TestWriteWaitsOutAMySQLOutage(t *testing.T) {
	t.Parallel()
	direct, dsn := testutil.OrderDB(t)
	proxy, db := testutil.ProxiedOrderDB(t, dsn, 2*time.Second)
	saleKey := testutil.UniqueName(t) + "/sale"
	reg := prometheus.NewRegistry()
	w := dbsink.New(dbsink.Config{Store: orderdb.New(db), SaleKey: saleKey, Backoff: fast, Metrics: dbsink.NewMetrics(reg)})
	proxy.Cut()
	done := make(chan error, 1)
	go func() {
		batch := items(pipelinetest.Order(saleKey, "1001", "a", "1.00"), pipelinetest.Order(saleKey, "1001", "b", "2.00"))
		done <- w.Write(context.Background(), batch, noDeadLetters(t))
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Write returned %v while MySQL was away", err)
	default:
	}
	if pipelinetest.Counter(t, reg, "flashsale_worker_retries_total", "transient") == 0 {
		t.Fatal("no transient retry counted while MySQL was away")
	}
	proxy.Restore()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Write did not finish within 15s of MySQL coming back")
	}
	if n := pipelinetest.Rows(t, direct, saleKey); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
}

// TestWriteStopsWithItsContext ends the context of a write that cannot
// reach MySQL: Write returns the context's error, so the caller leaves its
// source unacknowledged, and nothing is dead-lettered for it.
func TestWriteStopsWithItsContext(t *testing.T) {
	t.Parallel()
	_, dsn := testutil.OrderDB(t)
	proxy, db := testutil.ProxiedOrderDB(t, dsn, 2*time.Second)
	saleKey := testutil.UniqueName(t) + "/sale"
	w := dbsink.New(dbsink.Config{Store: orderdb.New(db), SaleKey: saleKey, Backoff: fast})
	proxy.Cut()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := w.Write(ctx, items(pipelinetest.Order(saleKey, "1001", "a", "1.00")), noDeadLetters(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Write: %v, want the context's deadline", err)
	}
}

// TestWriteMarksOrdersCreated gives the writer a Redis: after the commit,
// result polling sees the orders "created" instead of "queued".
func TestWriteMarksOrdersCreated(t *testing.T) {
	t.Parallel()
	db, _ := testutil.OrderDB(t)
	rdb := testutil.Redis(t)
	saleKey := pipelinetest.SaleKey(t, rdb)
	// SKU 1001 is split into three buckets: each order shows created in its
	// buyer's home bucket. An order naming a bucket the SKU lacks was never
	// admitted and could never show created: it is dead-lettered, not
	// retried for ever.
	bk := orderstate.Buckets{"1001": 3}
	a, b := pipelinetest.OrderIn(saleKey, "1001", "a", "1.00", 3), pipelinetest.OrderIn(saleKey, "1001", "b", "2.00", 3)
	pipelinetest.AdmitIn(t, rdb, bk, a, b) // "queued" to result polling
	bogus := pipelinetest.Order(saleKey, "1001", "c", "3.00")
	bogus.OrderNo = purchase.OrderNo(saleKey, "1001", "c", 1, 5)
	w := dbsink.New(dbsink.Config{Store: orderdb.New(db), Redis: rdb, Buckets: bk, SaleKey: saleKey, Backoff: fast})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var dead []int
	if err := w.Write(ctx, items(a, bogus, b), func(_ context.Context, idx int, reason string, _ int) error {
		if !strings.Contains(reason, "has 3 bucket(s)") {
			t.Errorf("item %d dead-lettered: %s", idx, reason)
		}
		dead = append(dead, idx)
		return nil
	}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(dead) != 1 || dead[0] != 1 {
		t.Fatalf("dead letters %v, want the order of bucket 5", dead)
	}
	for _, o := range []order.Order{a, b} {
		rec, ok, err := orderstate.Lookup(ctx, rdb, saleKey, "1001", 3, o.OrderNo)
		if err != nil || !ok || rec.Status != order.Created {
			t.Fatalf("order %s: %+v (found %v, %v), want created", o.OrderNo, rec, ok, err)
		}
	}
}

// TestIsPermanent tells the errors no retry can cure (a row's data) from
// the ones a retry can (everything else, including unknown errors).
func TestIsPermanent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&mysql.MySQLError{Number: 1264}, true},                           // out of range
		{fmt.Errorf("insert: %w", &mysql.MySQLError{Number: 1406}), true}, // too long, wrapped
		{&mysql.MySQLError{Number: 4025}, true},                           // MariaDB check constraint
		{&mysql.MySQLError{Number: 1213}, false},                          // deadlock
		{&mysql.MySQLError{Number: 1205}, false},                          // lock wait timeout
		{&mysql.MySQLError{Number: 1290}, false},                          // read-only
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		{mysql.ErrInvalidConn, false},
		{context.DeadlineExceeded, false},
	} {
		if got := dbsink.IsPermanent(tc.err); got != tc.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
