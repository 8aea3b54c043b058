package audit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
)

// TestOrderRedisNeverAdmittedIsOversell: an order in MySQL that Redis never
// admitted (a failover to a replica that missed the purchase, whose order
// the relay had already read) holds a unit that Redis still offers. It is
// not taken for an order admitted after the snapshot: the law breaks by
// one unit, negative (oversold), and stays so after the worker's
// MarkCreated, which writes no record for an order the orders hash lacks.
func TestOrderRedisNeverAdmittedIsOversell(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.deliver(f.buy(3)...)
	now := time.Now().UTC().Truncate(time.Millisecond)
	ghost := order.Order{OrderNo: purchase.OrderNo(f.fs.SaleKey(), "1001", "ghost", 1, 0), Sale: f.fs.SaleKey(), SKU: "1001",
		User: "ghost", N: 1, Amount: "9.99", AdmittedAt: now, Deadline: now.Add(time.Hour)}
	if _, err := f.store.InsertBatch(ctx, []order.Order{ghost}); err != nil {
		t.Fatal(err)
	}
	rep := f.run(f.auditor())
	s := rep.SKUs[0]
	if rep.OK || rep.Conserved || s.Imbalance != -1 || s.UnknownToRedis != 1 || s.AfterSnapshot != 0 || s.Durable.Created != 4 ||
		kinds(rep)[audit.KindUnknownToRedis] != 1 || !strings.Contains(text(rep), "-1 sold to orders Redis never admitted") {
		t.Fatalf("an order Redis never admitted:\n%s", text(rep))
	}
	if err := orderstate.MarkCreated(ctx, f.rdb, nil, []order.Order{ghost}); err != nil {
		t.Fatal(err)
	}
	rep = f.run(f.auditor())
	s = rep.SKUs[0]
	if rep.OK || s.Imbalance != -1 || s.UnknownToRedis != 1 || kinds(rep)[audit.KindUnknownToRedis] != 1 {
		t.Fatalf("after MarkCreated of the order:\n%s", text(rep))
	}
}
