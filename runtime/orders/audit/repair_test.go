package audit_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// inMySQL counts the orders of the fixture's SKU that MySQL holds.
func (f *fixture) inMySQL() int {
	f.t.Helper()
	st, err := f.store.States(context.Background(), f.fs.SaleKey(), "1001")
	if err != nil {
		f.t.Fatal(err)
	}
	return len(st)
}

// TestRepairWaitsForReplicas: a private primary and its replica, linked
// through a proxy that is cut before the orders are admitted, so only the
// primary has them; two sit stuck in the stream, one in the dead-letter
// stream. With WaitReplicas=1 the repair stores none of them (a failover
// now would sell their units again) and says why; once the link is back
// and the replica has them, the same repair stores all three.
func TestRepairWaitsForReplicas(t *testing.T) {
	ctx := context.Background()
	primary := testutil.StartRedisServer(t)
	link := testutil.TCPProxy(t, primary.Addr)
	host, port, _ := net.SplitHostPort(link.Addr())
	testutil.StartRedisServer(t, "--replicaof", host, port)
	testutil.WaitReplicaOnline(t, primary, 1)
	f := setupOn(t, primary.Client(t))
	f.stuckAfter = time.Millisecond
	f.waitReplicas = 1

	link.Cut()
	testutil.Eventually(t, 10*time.Second, "the primary to see its replica gone", func() bool {
		info, err := f.rdb.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:0")
	})
	orders := f.buy(3)
	f.deadLetterEntry(orders[2], "Error 1406: Data too long")
	time.Sleep(10 * time.Millisecond) // older than StuckAfter

	a := f.auditor()
	repairs, err := a.Repair(ctx, f.run(a))
	var short *audit.ReplicasShort
	if !errors.As(err, &short) || short.Acked != 0 || short.Want != 1 {
		t.Fatalf("repair with the replica cut off: err %v, want a ReplicasShort (0 of 1)", err)
	}
	if len(repairs) != 3 {
		t.Fatalf("repairs %+v, want 3 failed inserts", repairs)
	}
	for _, r := range repairs {
		if r.Action != audit.ActionInsert || !r.Failed || !strings.Contains(r.Detail, "only 0 of 1 replica(s) acknowledged") {
			t.Fatalf("repair %+v, want a failed insert saying the replica did not acknowledge", r)
		}
	}
	if n := f.inMySQL(); n != 0 {
		t.Fatalf("%d orders stored in MySQL while no replica had them", n)
	}
	if n, _ := f.rdb.XLen(ctx, f.k.Stream).Result(); n != 2 {
		t.Fatalf("order stream holds %d entries, want 2 (untouched)", n)
	}
	if n, _ := f.rdb.XLen(ctx, f.k.DeadLetters).Result(); n != 1 {
		t.Fatalf("dead-letter stream holds %d entries, want 1 (untouched)", n)
	}

	link.Restore()
	testutil.WaitReplicaOnline(t, primary, 1)
	repairs, err = a.Repair(ctx, f.run(a))
	if err != nil {
		t.Fatalf("repair with the replica back: %v %+v", err, repairs)
	}
	if n := f.inMySQL(); n != 3 {
		t.Fatalf("%d orders in MySQL after the replica caught up, want 3", n)
	}
	rep := f.run(a)
	if rep.StrandedOrders() != 0 || rep.SKUs[0].InFlight.Total != 0 || rep.SKUs[0].MySQL.Created != 3 {
		t.Fatalf("after repair:\n%s", text(rep))
	}
}

// TestRepairStoresAroundARefusedRow: three dead-lettered orders, one of which
// MySQL refuses for good (a CHECK constraint). The two others are stored and
// their entries deleted; the refused one is reported with MySQL's error and
// its entry stays.
func TestRepairStoresAroundARefusedRow(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	orders := f.buy(3)
	refused := orders[1]
	db := f.store.DB()
	if _, err := db.ExecContext(ctx, "ALTER TABLE seckill_order ADD CONSTRAINT refuse_one CHECK (user_id <> '"+refused.User+"')"); err != nil {
		t.Fatal(err)
	}
	for _, o := range orders {
		f.deadLetterEntry(o, "Error 4025: CONSTRAINT failed")
	}
	a := f.auditor()
	repairs, err := a.Repair(ctx, f.run(a))
	if err == nil {
		t.Fatal("repair reported no failure for the refused order")
	}
	byOrder := map[string]audit.Repair{}
	deleted := map[string]bool{}
	for _, r := range repairs {
		switch r.Action {
		case audit.ActionInsert:
			byOrder[r.OrderNo] = r
		case audit.ActionDeleteDeadLetter:
			deleted[r.OrderNo] = !r.Failed
		}
	}
	for _, o := range orders {
		r, ok := byOrder[o.OrderNo]
		if o == refused {
			if !ok || !r.Failed || !strings.Contains(r.Detail, "CONSTRAINT") || deleted[o.OrderNo] {
				t.Fatalf("refused order: %+v (entry deleted: %v), want a failed insert with MySQL's error", r, deleted[o.OrderNo])
			}
			continue
		}
		if !ok || r.Failed || !deleted[o.OrderNo] {
			t.Fatalf("order %s: %+v (entry deleted: %v), want stored and its entry deleted", o.OrderNo, r, deleted[o.OrderNo])
		}
	}
	st, err := f.store.States(ctx, f.fs.SaleKey(), "1001")
	if err != nil {
		t.Fatal(err)
	}
	if _, in := st[refused.OrderNo]; in || len(st) != 2 {
		t.Fatalf("MySQL holds %v, want the two accepted orders", st)
	}
	left, _ := f.rdb.XRange(ctx, f.k.DeadLetters, "-", "+").Result()
	if len(left) != 1 || left[0].Values["f:order"] != refused.OrderNo {
		t.Fatalf("dead-letter stream after repair: %v, want only the refused order", left)
	}
	shown, _ := f.rdb.HGetAll(ctx, f.k.Orders).Result()
	for _, o := range []order.Order{orders[0], orders[2]} {
		if shown[o.OrderNo] != "created "+o.User {
			t.Fatalf("stored order %s shown as %q", o.OrderNo, shown[o.OrderNo])
		}
	}
}
