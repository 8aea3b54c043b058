package orderdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func newStore(t *testing.T) *orderdb.Store {
	t.Helper()
	db, _ := testutil.OrderDB(t)
	return orderdb.New(db)
}

func mkOrder(user string, n int64, deadline time.Time) order.Order {
	return order.Order{
		OrderNo: purchase.OrderNo("shop/sale", "1001", user, n, 0), Sale: "shop/sale", SKU: "1001", User: user, N: n,
		Amount: "3999.00", AdmittedAt: deadline.Add(-15 * time.Minute), Deadline: deadline,
	}
}

func TestMigrateTwiceIsNoop(t *testing.T) {
	_, dsn := testutil.MySQL(t)
	db, err := orderdb.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	first, err := orderdb.Migrate(ctx, db)
	if err != nil || len(first) == 0 {
		t.Fatalf("first migrate: %v %v", first, err)
	}
	second, err := orderdb.Migrate(ctx, db)
	if err != nil || len(second) != 0 {
		t.Fatalf("second migrate applied %v, err %v", second, err)
	}
	if v, err := orderdb.Version(ctx, db); err != nil || v != first[len(first)-1] {
		t.Fatalf("version %d %v", v, err)
	}
}

func TestInsertBatchIdempotent(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	dl := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	batch := []order.Order{mkOrder("a", 1, dl), mkOrder("a", 2, dl), mkOrder("b", 1, dl)}
	if n, err := s.InsertBatch(ctx, batch); err != nil || n != 3 {
		t.Fatalf("first insert: %d %v", n, err)
	}
	// A redelivery, with one new order in it.
	batch = append(batch, mkOrder("c", 1, dl))
	if n, err := s.InsertBatch(ctx, batch); err != nil || n != 1 {
		t.Fatalf("redelivery: %d new rows, err %v; want 1", n, err)
	}
	r, err := s.Get(ctx, batch[0].OrderNo)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != order.Created || r.User != "a" || r.N != 1 || !r.Deadline.Equal(dl) || r.Amount != "3999.00" {
		t.Fatalf("row %+v", r)
	}
}

func TestPayAndCancelAreExclusive(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	live, late := mkOrder("a", 1, now.Add(time.Minute)), mkOrder("b", 1, now.Add(-time.Second))
	if _, err := s.InsertBatch(ctx, []order.Order{live, late}); err != nil {
		t.Fatal(err)
	}
	if res, _, err := s.Pay(ctx, "shop/sale", live.OrderNo, now); err != nil || res != orderdb.PaidNow {
		t.Fatalf("pay: %v %v", res, err)
	}
	if res, _, _ := s.Pay(ctx, "shop/sale", live.OrderNo, now); res != orderdb.AlreadyPaid {
		t.Fatalf("repeat pay: %v", res)
	}
	if won, _ := s.Cancel(ctx, live.OrderNo, now.Add(time.Hour)); won {
		t.Fatal("cancelled a paid order")
	}
	if res, _, _ := s.Pay(ctx, "shop/sale", late.OrderNo, now); res != orderdb.Expired {
		t.Fatalf("pay after deadline: %v", res)
	}
	exp, err := s.Expired(ctx, "shop/sale", now, 10)
	if err != nil || len(exp) != 1 || exp[0].OrderNo != late.OrderNo {
		t.Fatalf("expired: %v %v", exp, err)
	}
	if won, _ := s.Cancel(ctx, late.OrderNo, now); !won {
		t.Fatal("cancel lost")
	}
	if won, _ := s.Cancel(ctx, late.OrderNo, now); won {
		t.Fatal("cancelled twice")
	}
	if res, _, _ := s.Pay(ctx, "shop/sale", late.OrderNo, now); res != orderdb.AlreadyCancelled {
		t.Fatalf("pay after cancel: %v", res)
	}
	un, _ := s.Unreturned(ctx, "shop/sale", 10)
	if len(un) != 1 {
		t.Fatalf("unreturned %d", len(un))
	}
	if err := s.MarkReturned(ctx, late.OrderNo); err != nil {
		t.Fatal(err)
	}
	c, err := s.CountBySKU(ctx, "shop/sale")
	if err != nil || c["1001"].Paid != 1 || c["1001"].Cancelled != 1 || c["1001"].Returning != 0 {
		t.Fatalf("counts %+v %v", c["1001"], err)
	}
	if _, err := s.Get(ctx, "nope"); err != orderdb.ErrNotFound {
		t.Fatalf("get unknown: %v", err)
	}
}
