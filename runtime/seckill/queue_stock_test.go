package seckill_test

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestQueueAdmitsByStock: 100 units, 5,000 buyers queued, overbook 1.5.
// The admitter admits floor(100 x 1.5) = 150 at once (the rate allows
// 1,000) and no more while they buy: each purchase takes a unit and frees
// one admission, so the budget floor(remaining x 1.5) - outstanding only
// shrinks; the stock it uses is read from Redis after the used admissions
// were freed, so it is never behind them, and the figure is exact: no
// slack. Every admitted buyer buys: 100 orders, 50 SOLD_OUT. The waiting
// room then answers SOLD_OUT. Units returned by the rollback's release
// (orderstate.Release) reopen it: 3 units admit floor(3 x 1.5) = 4 more, who
// buy the 3 units. No oversell, and the stock is conserved.
func TestQueueAdmitsByStock(t *testing.T) {
	const stockN, queued, rate = 100, 5000, 1000
	rdb := testutil.Redis(t)
	now := time.Now().Truncate(time.Millisecond)
	start := now.Add(time.Minute)
	fs := queuedSale(t, rdb, start, v1alpha1.Queue{AdmitPerSecond: rate, Overbook: "1.5"},
		v1alpha1.SKU{ID: "1001", Stock: stockN, Price: "5.00", PerUserLimit: 1})
	clk := clocktesting.NewFakeClock(now)
	s := startServer(t, rdb, fs, serverOpts{clock: clk})

	tickets := make([]string, queued)
	parallel(queued, 8, func(i int) {
		if r := s.join(userName(i)); r.Status == http.StatusCreated {
			tickets[i] = r.Ticket
		}
	})
	for i, tk := range tickets {
		if tk == "" {
			t.Fatalf("%s could not join", userName(i))
		}
	}
	clk.SetTime(start.Add(time.Second))
	waitAdmitted(t, s, 150)

	admitted, waiting := sortByPlace(t, s, tickets)
	if len(admitted) != 150 {
		t.Fatalf("%d admitted, want 150 = 100 x 1.5", len(admitted))
	}
	accepted, soldOut := buyAdmitted(t, s, admitted, tickets)
	t.Logf("first wave: %d admitted, %d bought, %d told SOLD_OUT", len(admitted), len(accepted), soldOut)
	if len(accepted) != stockN || soldOut != 50 {
		t.Fatalf("admitted buyers got %d orders and %d SOLD_OUT, want %d and 50", len(accepted), soldOut, stockN)
	}
	testutil.Eventually(t, 20*time.Second, "used admissions freed", func() bool { return figures(t, s).Outstanding == 0 })
	time.Sleep(50 * time.Millisecond) // a few more admitter ticks: nobody more comes in
	if f := figures(t, s); f.Admitted != 150 {
		t.Fatalf("admitted %d while the stock sold out, want 150", f.Admitted)
	}
	next := waiting[0]
	if r := s.wait(userName(next), tickets[next]); r.Status != http.StatusGone || r.Error != seckill.CodeSoldOut {
		t.Fatalf("wait once sold out: %d %s, want 410 SOLD_OUT", r.Status, r.Body)
	}
	if r := s.join("late-comer"); r.Status != http.StatusGone || r.Error != seckill.CodeSoldOut {
		t.Fatalf("join once sold out: %d %s, want 410 SOLD_OUT", r.Status, r.Body)
	}

	returned := returnUnits(t, s, 3)
	testutil.Eventually(t, 20*time.Second, "the waiting room reopens", func() bool {
		return s.wait(userName(next), tickets[next]).Status == http.StatusOK
	})
	waitAdmitted(t, s, 154)
	reopened := waiting[:4]
	for _, i := range reopened {
		if r := s.wait(userName(i), tickets[i]); r.State != "admitted" || r.Place == nil || *r.Place != int64(151+indexOf(waiting, i)) {
			t.Fatalf("after the return, %s: %d %s, want admitted at place %d", userName(i), r.Status, r.Body, 151+indexOf(waiting, i))
		}
	}
	more, soldOut2 := buyAdmitted(t, s, reopened, tickets)
	t.Logf("after %d units came back: %d more admitted, %d bought, %d told SOLD_OUT", len(returned), len(reopened), len(more), soldOut2)
	if len(more) != 3 || soldOut2 != 1 {
		t.Fatalf("after the return: %d orders and %d SOLD_OUT, want 3 and 1", len(more), soldOut2)
	}
	if r := s.wait(userName(waiting[4]), tickets[waiting[4]]); r.Error != seckill.CodeSoldOut {
		t.Fatalf("wait once sold out again: %d %s, want 410 SOLD_OUT", r.Status, r.Body)
	}
	checkConservation(t, s, append(accepted, more...), returned)
}

// sortByPlace asks every buyer's place: the admitted (by place) and the
// waiting (by place), as indexes of userName.
func sortByPlace(t *testing.T, s *testServer, tickets []string) (admitted, waiting []int) {
	t.Helper()
	got := make([]reply, len(tickets))
	parallel(len(tickets), 8, func(i int) { got[i] = s.wait(userName(i), tickets[i]) })
	for i, r := range got {
		if r.Status != http.StatusOK || r.Place == nil {
			t.Fatalf("wait of %s: %d %s", userName(i), r.Status, r.Body)
		}
		if r.State == "admitted" {
			admitted = append(admitted, i)
		} else {
			waiting = append(waiting, i)
		}
	}
	byPlace := func(xs []int) {
		sort.Slice(xs, func(a, b int) bool { return *got[xs[a]].Place < *got[xs[b]].Place })
	}
	byPlace(admitted)
	byPlace(waiting)
	for k, i := range admitted {
		if *got[i].Place != int64(k+1) {
			t.Fatalf("admitted %s has place %d, want the first places", userName(i), *got[i].Place)
		}
	}
	return admitted, waiting
}

// buyAdmitted has each buyer fetch a token with their ticket and purchase with
// it, a few at a time: the orders made and how many were told SOLD_OUT.
func buyAdmitted(t *testing.T, s *testServer, buyers []int, tickets []string) (orders []string, soldOut int) {
	t.Helper()
	var mu sync.Mutex
	parallel(len(buyers), 8, func(k int) {
		i := buyers[k]
		u := userName(i)
		r := s.tokenWith(u, "1001", tickets[i])
		if r.Status == http.StatusOK {
			r = s.purchase(u, "1001", r.Token)
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Status == http.StatusAccepted:
			orders = append(orders, r.OrderNo)
		case r.Status == http.StatusGone && r.Error == seckill.CodeSoldOut:
			soldOut++
		default:
			t.Errorf("%s buying: %d %s", u, r.Status, r.Body)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	return orders, soldOut
}

// returnUnits cancels n orders the way the rollback does: orderstate.Release
// puts each unit back on sale and frees its buyer's slot, once.
func returnUnits(t *testing.T, s *testServer, n int) []order.Order {
	t.Helper()
	all := admittedOrders(t, s)
	sort.Slice(all, func(a, b int) bool { return all[a].OrderNo < all[b].OrderNo })
	for _, o := range all[:n] {
		back, err := orderstate.Release(context.Background(), s.rdb, &o, 1)
		if err != nil || !back {
			t.Fatalf("release %s: %v %v", o.OrderNo, back, err)
		}
	}
	return all[:n]
}

func admittedOrders(t *testing.T, s *testServer) []order.Order {
	t.Helper()
	var out []order.Order
	for _, o := range admitted(t, s.rdb, s.sale, "1001") {
		out = append(out, o)
	}
	return out
}

// checkConservation: every 202 is an order in the stream, no buyer holds
// two, and the declared stock is what is left plus the orders not returned.
func checkConservation(t *testing.T, s *testServer, accepted []string, returned []order.Order) {
	t.Helper()
	orders := admitted(t, s.rdb, s.sale, "1001")
	if len(orders) != len(accepted) {
		t.Fatalf("%d orders in the stream, %d answered 202", len(orders), len(accepted))
	}
	gone := map[string]bool{}
	for _, o := range returned {
		gone[o.OrderNo] = true
	}
	holders := map[string]bool{}
	for _, no := range accepted {
		o, ok := orders[no]
		if !ok {
			t.Fatalf("order %s answered 202 is not in the stream", no)
		}
		if gone[no] {
			continue
		}
		if holders[o.User] {
			t.Fatalf("%s holds two units (per-user limit 1)", o.User)
		}
		holders[o.User] = true
	}
	left := stock(t, s.rdb, s.sale, "1001")
	held := int64(len(accepted) - len(returned))
	t.Logf("stock %d = %d remaining + %d orders held (%d made, %d returned)", s.sale.Spec.SKUs[0].Stock, left, held, len(accepted), len(returned))
	if left < 0 || left+held != int64(s.sale.Spec.SKUs[0].Stock) {
		t.Fatalf("conservation: %d remaining + %d held != stock %d", left, held, s.sale.Spec.SKUs[0].Stock)
	}
}

func indexOf(xs []int, x int) int {
	for k, v := range xs {
		if v == x {
			return k
		}
	}
	return -1
}
