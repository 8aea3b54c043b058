package audit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
)

// TestDebtKeepsTheLaw: a lowering the stock could not take back in full
// leaves a debt; the returned units pay it off and leave the sale. The Redis
// keys are set the way the scripts set them (initial = remaining + held
// stays true throughout): the law holds, and the report shows the debt and
// the declared stock (initial − debt) beside it; a debt beyond the units
// held is Redis disagreeing with itself.
func TestDebtKeepsTheLaw(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	orders := f.buy(15)
	f.deliver(orders[:10]...) // 5 stay in the stream
	for _, o := range orders[:2] {
		if _, _, err := f.store.Pay(ctx, o.Sale, o.OrderNo, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// Declared 20, 15 held, 5 left: lowered to 8, the 5 left are taken
	// back (initial 15) and 7 units are owed.
	if _, err := f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, f.k.Stock, 0, 0)
		p.Set(ctx, f.k.Initial, 15, 0)
		p.Set(ctx, f.k.Debt, 7, 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rep := f.run(f.auditor())
	s := rep.SKUs[0]
	if !rep.OK || s.Initial != 15 || s.Debt != 7 || s.Declared != 8 || s.Remaining != 0 || s.Accounted != 15 ||
		s.InFlight.Stream != 5 || s.Durable.Created != 8 || s.Durable.Paid != 2 || !strings.Contains(text(rep), "declared stock 8 = initial 15 − debt 7") {
		t.Fatalf("after the lowering:\n%s", text(rep))
	}

	// Three unpaid orders expire: two are cancelled and their units pay off
	// the debt (as release.lua does), the third is cancelled in MySQL and
	// its unit not returned yet.
	for i, o := range orders[2:5] {
		if won, err := f.store.Cancel(ctx, o.OrderNo, time.Now().Add(2*time.Hour)); err != nil || !won {
			t.Fatalf("cancel: %v %v", won, err)
		}
		if i == 2 {
			break
		}
		payOffDebt(t, f, o)
		if err := f.store.MarkReturned(ctx, o.OrderNo); err != nil {
			t.Fatal(err)
		}
	}
	rep = f.run(f.auditor())
	s = rep.SKUs[0]
	if !rep.OK || s.Initial != 13 || s.Debt != 5 || s.Declared != 8 || s.Remaining != 0 || s.Accounted != 13 ||
		s.Durable.Created != 5 || s.Durable.Paid != 2 || s.Durable.Returning != 1 || s.InFlight.Stream != 5 {
		t.Fatalf("after two units paid the debt off:\n%s", text(rep))
	}

	// A debt no returned unit can pay off: Redis disagrees with itself,
	// though every unit is accounted for.
	if err := f.rdb.Set(ctx, f.k.Debt, 100, 0).Err(); err != nil {
		t.Fatal(err)
	}
	rep = f.run(f.auditor())
	if rep.OK || rep.SKUs[0].Imbalance != 0 || kinds(rep)[audit.KindRedisInconsistent] != 1 || !strings.Contains(text(rep), "the stock debt is 100") {
		t.Fatalf("with an impossible debt:\n%s", text(rep))
	}
}

// payOffDebt returns the unit of cancelled order o against the debt, as
// the release script does while a debt is owed: the order leaves the expiry
// set and its buyer's holding, shows cancelled, and debt and initial go
// down together (the stock counter does not move).
func payOffDebt(t *testing.T, f *fixture, o order.Order) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, f.k.Expiry, o.OrderNo)
		p.HDel(ctx, f.k.Holders, o.User) // each buyer of the fixture holds one unit
		p.HSet(ctx, f.k.Orders, o.OrderNo, "cancelled "+o.User)
		p.Decr(ctx, f.k.Debt)
		p.Decr(ctx, f.k.Initial)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
