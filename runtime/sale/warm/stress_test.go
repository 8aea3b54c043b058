package warm_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

// TestLoweringAmidBuyersAndReturns: buyers of 3 buckets (refilling as pods
// do) and cancellations run while the stock is lowered below what buyers
// hold. Afterwards the SKU obeys an unsplit SKU's law: only bucket 0 owes,
// nothing is on sale while it owes; and once every unit held is returned,
// exactly the declared stock is on sale, nothing is owed and the Holds go.
func TestLoweringAmidBuyersAndReturns(t *testing.T) {
	bothRedis(t, func(t *testing.T, rdb redis.UniversalClient) {
		for trial := range 8 {
			lowerAmidTraffic(t, rdb, trial)
		}
	})
}

func lowerAmidTraffic(t *testing.T, rdb redis.UniversalClient, trial int) {
	ctx := context.Background()
	fs := splitSale(t, rdb, 60, 3)
	warmOK(t, rdb, fs)
	ps, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	refill := buckets.NewRefiller(rdb, fs.SaleKey())
	var mu sync.Mutex
	var held []*order.Order
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for b := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("t%d-b%d-%d", trial, b, i)
				now := time.Now()
				res, err := ps.Purchase(ctx, purchase.Request{SKU: "a", Bucket: b, Buckets: 3, User: user, Limit: 10,
					Amount: "1.00", Nonce: user, Now: now, Deadline: now.Add(time.Hour)})
				switch {
				case err != nil:
					t.Error(err)
					return
				case res.Outcome == purchase.Admitted:
					mu.Lock()
					held = append(held, &order.Order{OrderNo: res.OrderNo, Sale: fs.SaleKey(), SKU: "a", User: user})
					mu.Unlock()
				default:
					_, _ = refill.Refill(ctx, "a", 3, b)
				}
			}
		})
	}
	release := func() {
		mu.Lock()
		if len(held) == 0 {
			mu.Unlock()
			return
		}
		o := held[0]
		held = held[1:]
		mu.Unlock()
		if _, err := orderstate.ReleaseUnit(ctx, rdb, o, 3); err != nil {
			t.Error(err)
		}
	}
	for { // 30 of the 60 units sold before the returns start
		mu.Lock()
		n := len(held)
		mu.Unlock()
		if n >= 30 {
			break
		}
		runtime.Gosched()
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				release()
			}
		}
	})
	fs.Spec.SKUs[0].Stock = 20
	_, err = warm.Warm(ctx, rdb, fs)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := buckets.Recover(ctx, rdb, fs.SaleKey(), "a", 3); err != nil {
		t.Fatal(err)
	}
	checkSplit(t, warmOK(t, rdb, fs), 20)
	for len(held) > 0 {
		release()
	}
	if ok, err := buckets.ClearHold(ctx, rdb, fs.SaleKey(), "a", 3); err != nil || !ok {
		t.Fatalf("trial %d: ClearHold with everything returned: %t, %v", trial, ok, err)
	}
	got := warmOK(t, rdb, fs)
	checkSplit(t, got, 20)
	if got.Remaining != 20 || got.Debt != 0 || got.Held {
		t.Fatalf("trial %d: every unit returned: %+v, want exactly 20 on sale, nothing owed, no Holds", trial, got)
	}
}
