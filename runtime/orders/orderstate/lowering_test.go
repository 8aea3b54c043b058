package orderstate_test

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// lot is one SKU warmed by the real warm-up (the operator's own call), sold
// through the real purchase script and rolled back through Release.
type lot struct {
	t      *testing.T
	rdb    redis.UniversalClient
	fs     *v1alpha1.FlashSale
	k      keys.SKU
	script *purchase.Script
	n      int
}

func newLot(t *testing.T, rdb redis.UniversalClient, stock int64) *lot {
	t.Helper()
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns-" + testutil.UniqueName(t), Name: "s"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(time.Now()), EndTime: metav1.NewTime(time.Now().Add(time.Hour)),
			SKUs: []v1alpha1.SKU{{ID: "1001", Stock: stock, Price: "1.00", PerUserLimit: 1}},
		},
	}
	fs.SetDefaults()
	for _, p := range keys.Patterns(fs.SaleKey()) {
		testutil.CleanupKeys(t, rdb, p)
	}
	l := &lot{t: t, rdb: rdb, fs: fs, k: keys.ForSKU(fs.SaleKey(), "1001")}
	var err error
	if l.script, err = purchase.New(rdb, fs.SaleKey(), purchase.Options{}); err != nil {
		t.Fatal(err)
	}
	l.declare(stock)
	return l
}

// declare sets the SKU's stock in the spec and warms, as a reconcile of
// the changed FlashSale does.
func (l *lot) declare(stock int64) warm.SKUResult {
	l.t.Helper()
	l.fs.Spec.SKUs[0].Stock = stock
	res, err := warm.Warm(context.Background(), l.rdb, l.fs)
	if err != nil {
		l.t.Fatal(err)
	}
	return res.SKUs[0]
}

// buy makes a purchase by a new buyer and returns its outcome and order.
func (l *lot) buy() (purchase.Outcome, *order.Order) {
	l.t.Helper()
	l.n++
	user := fmt.Sprintf("buyer-%d", l.n)
	now := time.Now()
	res, err := l.script.Purchase(context.Background(), purchase.Request{
		SKU: "1001", User: user, Limit: 1, Amount: "1.00", Nonce: user,
		Now: now, Deadline: now.Add(time.Minute),
	})
	if err != nil {
		l.t.Fatalf("purchase by %s: %v", user, err)
	}
	return res.Outcome, &order.Order{OrderNo: res.OrderNo, Sale: l.fs.SaleKey(), SKU: "1001", User: user}
}

func (l *lot) mustBuy(n int) []*order.Order {
	l.t.Helper()
	var out []*order.Order
	for range n {
		got, o := l.buy()
		if got != purchase.Admitted {
			l.t.Fatalf("purchase #%d: %s, want admitted", l.n, got)
		}
		out = append(out, o)
	}
	return out
}

// figures are the SKU's keys as Redis holds them, and the units buyers hold.
type figures struct{ stock, initial, debt, held int64 }

func (l *lot) read() figures {
	l.t.Helper()
	ctx := context.Background()
	num := func(key string) int64 {
		v, err := l.rdb.Get(ctx, key).Result()
		if err == redis.Nil {
			return 0
		}
		n, perr := strconv.ParseInt(v, 10, 64)
		if err != nil || perr != nil {
			l.t.Fatalf("GET %s: %q %v %v", key, v, err, perr)
		}
		return n
	}
	f := figures{stock: num(l.k.Stock), initial: num(l.k.Initial), debt: num(l.k.Debt)}
	held, err := l.rdb.HVals(ctx, l.k.Holders).Result()
	if err != nil {
		l.t.Fatal(err)
	}
	for _, h := range held {
		n, _ := strconv.ParseInt(h, 10, 64)
		f.held += n
	}
	if f.initial != f.stock+f.held {
		l.t.Fatalf("%+v: initial ≠ stock + held", f)
	}
	return f
}

func (l *lot) want(what string, want figures) {
	l.t.Helper()
	if got := l.read(); got != want {
		l.t.Fatalf("%s: stock/initial/debt/held %+v, want %+v", what, got, want)
	}
}

func (l *lot) wantSoldOut(what string) {
	l.t.Helper()
	if got, o := l.buy(); got != purchase.SoldOut {
		l.t.Fatalf("%s: a new purchase was %s (order %s), want sold out", what, got, o.OrderNo)
	}
}

func (l *lot) release(o *order.Order, want orderstate.Returned) {
	l.t.Helper()
	got, err := orderstate.ReleaseUnit(context.Background(), l.rdb, o, 1)
	if err != nil || got != want {
		l.t.Fatalf("ReleaseUnit(%s) = %d (%v), want %d", o.OrderNo, got, err, want)
	}
}

// TestLoweringHoldsAgainstRollbacks is issue 11's sequence: declared 10,
// sold 9, lowered to 5, then 4 orders are cancelled. Their units pay off
// what the lowering could not take back instead of going back on sale, so
// buyers never hold more than the declared 5.
func TestLoweringHoldsAgainstRollbacks(t *testing.T) {
	t.Run("standalone", func(t *testing.T) { loweringScenario(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { loweringScenario(t, testutil.RedisCluster(t).Client(t)) })
}

func loweringScenario(t *testing.T, rdb redis.UniversalClient) {
	l := newLot(t, rdb, 10)
	orders := l.mustBuy(9)
	l.want("9 of 10 sold", figures{stock: 1, initial: 10, held: 9})

	got := l.declare(5)
	want := warm.SKUResult{SKU: "1001", Action: "lowered", Delta: -1, Remaining: 0, Initial: 9, Debt: 4, From: 10, DebtDelta: 4}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("lowering 10 → 5 with 9 sold: %+v, want %+v", got, want)
	}
	if got.Declared() != 5 {
		t.Fatalf("declared %d after the lowering, want 5", got.Declared())
	}
	l.want("lowered to 5", figures{stock: 0, initial: 9, debt: 4, held: 9})
	l.wantSoldOut("lowered to 5 with 9 held")

	// Four unpaid orders expire: each unit pays off the debt and leaves.
	for _, o := range orders[:4] {
		l.release(o, orderstate.PaidDebt)
	}
	l.want("4 orders cancelled", figures{stock: 0, initial: 5, debt: 0, held: 5})
	if n, err := rdb.Exists(context.Background(), l.k.Debt).Result(); err != nil || n != 0 {
		t.Fatalf("a paid-off debt leaves its key behind (%d, %v)", n, err)
	}
	l.wantSoldOut("debt paid off, 5 held of 5 declared")

	// Retried releases (a crash, a second rollback) change nothing.
	for _, o := range orders[:4] {
		l.release(o, orderstate.NotReturned)
	}
	l.want("releases retried", figures{stock: 0, initial: 5, debt: 0, held: 5})

	// A re-warm of the same spec is a no-op; the next cancellation goes
	// back on sale, once.
	if got := l.declare(5); got.Action != "unchanged" || got.Declared() != 5 || got.Remaining != 0 {
		t.Fatalf("re-warm at 5: %+v", got)
	}
	l.release(orders[4], orderstate.BackOnSale)
	l.want("a fifth order cancelled", figures{stock: 1, initial: 5, held: 4})
	l.mustBuy(1)
	l.wantSoldOut("the returned unit sold again")
	l.want("end", figures{stock: 0, initial: 5, held: 5})
}

// TestRaiseCancelsDebt: a raise while a lowering is still owed cancels the
// debt before it puts any unit on sale; a lowering while in debt owes more.
func TestRaiseCancelsDebt(t *testing.T) {
	l := newLot(t, testutil.Redis(t), 10)
	orders := l.mustBuy(9)
	l.declare(5)
	l.want("lowered to 5", figures{stock: 0, initial: 9, debt: 4, held: 9})

	steps := []struct {
		declare int64
		result  warm.SKUResult
		after   figures
	}{
		// 5 → 7: two of the four owed units are simply not taken back.
		{7, warm.SKUResult{Action: "raised", Delta: 0, Remaining: 0, Initial: 9, Debt: 2, From: 5, DebtDelta: -2},
			figures{stock: 0, initial: 9, debt: 2, held: 9}},
		// 7 → 6: nothing unsold to take back, so one more is owed.
		{6, warm.SKUResult{Action: "lowered", Delta: 0, Remaining: 0, Initial: 9, Debt: 3, From: 7, DebtDelta: 1}, figures{stock: 0, initial: 9, debt: 3, held: 9}},
		// 6 → 12: the 3 owed are cancelled, the other 3 go on sale.
		{12, warm.SKUResult{Action: "raised", Delta: 3, Remaining: 3, Initial: 12, Debt: 0, From: 6, DebtDelta: -3},
			figures{stock: 3, initial: 12, debt: 0, held: 9}},
		{12, warm.SKUResult{Action: "unchanged", Remaining: 3, Initial: 12, From: 12}, figures{stock: 3, initial: 12, held: 9}},
		// 12 → 10: the 3 unsold cover the cut of 2.
		{10, warm.SKUResult{Action: "lowered", Delta: -2, Remaining: 1, Initial: 10, From: 12}, figures{stock: 1, initial: 10, held: 9}},
	}
	for _, s := range steps {
		got := l.declare(s.declare)
		s.result.SKU = "1001"
		if !reflect.DeepEqual(got, s.result) {
			t.Fatalf("declare %d: %+v, want %+v", s.declare, got, s.result)
		}
		if got.Declared() != s.declare {
			t.Fatalf("declare %d: Redis keeps %d", s.declare, got.Declared())
		}
		l.want(fmt.Sprintf("declared %d", s.declare), s.after)
	}
	// No debt: a cancelled order's unit is back on sale at once.
	l.release(orders[0], orderstate.BackOnSale)
	l.want("one cancelled", figures{stock: 2, initial: 10, held: 8})
}
