package controllers_test

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// TestLoweredStockHoldsThroughRollbacks is issue 11's lowering through the
// operator: a SKU declared 10 sells 9, its stock is patched down to 5, then
// the 4 unpaid orders expire. The 4 units pay off the lowering instead of
// going back on sale, so buyers end up holding the declared 5, and the
// status and the Events say so at each step, once.
func TestLoweredStockHoldsThroughRollbacks(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.SKUs = []v1alpha1.SKU{{ID: "1001", Stock: 10, Price: "3999.00", PerUserLimit: 1}}
	})
	warmAndOpen(t, e, false)
	e.startWorker()
	shop := e.startSeckill()
	k := keys.ForSKU(e.ns+"/"+saleName, "1001")

	var orders []string
	for _, u := range users("buyer", 9) {
		a := shop.buy(u, "1001")
		if a.Status != http.StatusAccepted {
			t.Fatalf("purchase by %s: %d %s", u, a.Status, a.Error)
		}
		orders = append(orders, a.OrderNo)
	}
	e.eventually("9 orders stored", func() bool {
		st := e.get().Status
		return st.Sold == 9 && st.QueueLag == 0 && e.created() == 9
	})
	e.wantSKU("9 of 10 sold", v1alpha1.SKUStatus{ID: "1001", Stock: 10, Remaining: 1, Sold: 9})

	// Lowered to 5 mid-sale: the one unsold unit is taken back at once,
	// the other 4 are owed.
	e.setStock(5)
	e.reconcile()
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonStockLowered,
		"SKU 1001 stock lowered from 10 to 5: took back 1 unsold unit; 4 units held by buyers will be taken back as their orders are cancelled (debt 4)")
	e.wantSKU("lowered to 5", v1alpha1.SKUStatus{ID: "1001", Stock: 5, Remaining: 0, Sold: 9, SoldOut: true, Debt: 4})
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonSoldOut, "SKU 1001 sold out", "debt 4")
	shop.waitAnswer(t, "late-1", http.StatusGone, "SOLD_OUT")

	// Five buyers pay; the other four let their payment window pass.
	for _, o := range orders[4:] {
		if a := shop.pay(o); a.Status != http.StatusOK {
			t.Fatalf("pay %s: %d %s", o, a.Status, a.Error)
		}
	}
	e.clk.SetTime(e.t0.Add(12 * time.Minute))
	if p := e.rollbackOnce(); p.Cancelled != 4 || p.Returned != 4 {
		t.Fatalf("rollback pass %+v, want the 4 unpaid orders cancelled and returned", p)
	}
	for range 3 {
		e.reconcile()
	}
	e.wantSKU("4 orders cancelled", v1alpha1.SKUStatus{ID: "1001", Stock: 5, Remaining: 0, Sold: 5, Paid: 5, Cancelled: 4, SoldOut: true})
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonStockDebt, "SKU 1001: the stock lowering is paid off", "buyers hold 5 units of the declared 5")
	if got := e.rdb.Get(e.ctx, k.Stock).Val(); got != "0" {
		t.Fatalf("stock %s after the debt was paid off, want 0", got)
	}
	// Before the fix the 4 returned units were on sale again here.
	for _, u := range users("late-buyer", 3) {
		if a := shop.buy(u, "1001"); a.Status != http.StatusGone || a.Error != "SOLD_OUT" {
			t.Fatalf("purchase by %s after the rollback: %d %s %s, want 410 SOLD_OUT", u, a.Status, a.Error, a.OrderNo)
		}
	}
	e.wantHeld(5)

	// A raise reopens the SKU; selling it out again is told again, once.
	e.setStock(6)
	e.reconcile()
	e.wantEvent(corev1.EventTypeNormal, v1alpha1.ReasonStockRaised, "SKU 1001 stock raised by 1 (from 5 to 6): 1 unit added to the sale, 1 remaining")
	e.wantSKU("raised to 6", v1alpha1.SKUStatus{ID: "1001", Stock: 6, Remaining: 1, Sold: 5, Paid: 5, Cancelled: 4})
	// The pods learn of the raise at their next poll (50 ms here): until
	// then the token endpoint still refuses from memory, creating nothing.
	shop.waitAnswer(t, "after-raise", http.StatusAccepted, "")
	for range 3 {
		e.reconcile()
	}
	e.wantHeld(6)
	e.wantSKU("raised to 6 and sold out again", v1alpha1.SKUStatus{ID: "1001", Stock: 6, Remaining: 0, Sold: 6, Paid: 5, Cancelled: 4, SoldOut: true})
	if n := e.countEvents(v1alpha1.ReasonSoldOut); n != 2 {
		t.Fatalf("%d SoldOut Events, want 2 (lowered, sold again after the raise):\n  %s", n, strings.Join(e.seen, "\n  "))
	}
	for _, r := range []string{v1alpha1.ReasonStockLowered, v1alpha1.ReasonStockDebt, v1alpha1.ReasonStockRaised} {
		if n := e.countEvents(r); n != 1 {
			t.Fatalf("%d %s Events, want 1:\n  %s", n, r, strings.Join(e.seen, "\n  "))
		}
	}
}

func (e *env) setStock(n int64) {
	e.t.Helper()
	fs := e.get()
	fs.Spec.SKUs[0].Stock = n
	if err := e.k8s.Update(e.ctx, fs); err != nil {
		e.t.Fatal(err)
	}
}

// wantSKU fails unless the first SKU's status is want, and its figures add
// up: stock = remaining + sold − debt.
func (e *env) wantSKU(what string, want v1alpha1.SKUStatus) {
	e.t.Helper()
	st := e.get().Status
	if len(st.SKUs) != 1 || !reflect.DeepEqual(st.SKUs[0], want) {
		e.t.Fatalf("%s: status.skus %+v, want [%+v]", what, st.SKUs, want)
	}
	if s := st.SKUs[0]; s.Stock != s.Remaining+s.Sold-s.Debt {
		e.t.Fatalf("%s: %+v does not add up", what, s)
	}
}

// created is how many of the sale's orders MySQL holds as created or paid.
func (e *env) created() int64 {
	e.t.Helper()
	c, err := orderdb.New(e.db).CountBySKU(e.ctx, e.ns+"/"+saleName)
	if err != nil {
		e.t.Fatal(err)
	}
	if c["1001"] == nil {
		return 0
	}
	return c["1001"].Created + c["1001"].Paid
}

// wantHeld fails unless buyers hold n units in Redis and MySQL holds n
// live (created or paid) orders, never more than the declared stock.
func (e *env) wantHeld(n int64) {
	e.t.Helper()
	k := keys.ForSKU(e.ns+"/"+saleName, "1001")
	vals, err := e.rdb.HVals(e.ctx, k.Holders).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var held int64
	for _, v := range vals {
		h, _ := strconv.ParseInt(v, 10, 64)
		held += h
	}
	e.eventually("the orders stored", func() bool { return e.get().Status.QueueLag == 0 })
	declared := e.get().Spec.SKUs[0].Stock
	if live := e.created(); held != n || live != n || held > declared {
		e.t.Fatalf("buyers hold %d units in Redis, MySQL %d live orders; want %d, declared %d", held, live, n, declared)
	}
}

func (e *env) countEvents(reason string) int {
	e.drainEvents()
	n := 0
	for _, ev := range e.seen {
		if strings.HasPrefix(ev, corev1.EventTypeNormal+" "+reason+" ") || strings.HasPrefix(ev, corev1.EventTypeWarning+" "+reason+" ") {
			n++
		}
	}
	return n
}
