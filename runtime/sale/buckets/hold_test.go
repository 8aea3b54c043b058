package buckets_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
)

// TestHeldBucketsGiveOnlyToBucketZero: while the SKU is held, no unit
// leaves bucket 0 and none moves between two other buckets; units still
// move into bucket 0, and a refill of another bucket answers ErrHeld (units
// are on sale: not a sell-out).
func TestHeldBucketsGiveOnlyToBucketZero(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 5, 5, 5)
		if err := buckets.Hold(ctx, rdb, s.sale, s.sku, s.n); err != nil {
			t.Fatal(err)
		}
		for _, mv := range [][2]int{{0, 1}, {1, 2}, {2, 1}} {
			if m, err := buckets.Move(ctx, rdb, s.sale, s.sku, s.n, mv[0], mv[1], 2); !errors.Is(err, buckets.ErrHeld) || m != 0 {
				t.Fatalf("move %d -> %d while held: %d, %v; want ErrHeld", mv[0], mv[1], m, err)
			}
		}
		if m, err := buckets.Move(ctx, rdb, s.sale, s.sku, s.n, 2, 0, 2); err != nil || m != 2 {
			t.Fatalf("move 2 -> 0 while held: %d, %v; want 2", m, err)
		}
		for _, u := range []string{"ua", "ub", "uc", "ud", "ue"} {
			if s.buy(t, 1, u) == "" {
				t.Fatalf("buyer %s of bucket 1 refused with stock left", u)
			}
		}
		// Units are on sale (bucket 0 has 7): not a sell-out, a wait.
		if m, err := buckets.NewRefiller(rdb, s.sale).Refill(ctx, s.sku, s.n, 1); !errors.Is(err, buckets.ErrHeld) || m != 0 {
			t.Fatalf("refill of bucket 1 while held with stock in bucket 0: %d, %v; want 0, ErrHeld (not sold out)", m, err)
		}
		st := s.checkLaw(t)
		if st.figs[0].Stock != 7 || st.figs[1].Stock != 0 || st.figs[2].Stock != 3 {
			t.Fatalf("%+v", st.figs)
		}
	})
}

// TestHeldOwingNothingOnSaleIsSoldOut: after a lowering bucket 0 owes debt
// and keeps the Holds, and no bucket has stock: the SKU really is sold out,
// so Refill answers 0 with no error (SOLD_OUT), not ErrHeld (endless
// retries).
func TestHeldOwingNothingOnSaleIsSoldOut(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 1, 1, 0)
		k := s.keys()
		s.buy(t, 0, "u0")
		s.buy(t, 1, "u1")
		if err := buckets.Hold(ctx, rdb, s.sale, s.sku, s.n); err != nil {
			t.Fatal(err)
		}
		rdb.Set(ctx, k[0].Debt, 1, 0) // a lowering by 1 with nothing unsold
		s.declared--
		if ok, err := buckets.EndLowering(ctx, rdb, s.sale, s.sku, s.n); err != nil || ok {
			t.Fatalf("EndLowering with 1 owed: %t, %v; want the Holds kept", ok, err)
		}
		for to := range s.n {
			if m, err := buckets.NewRefiller(rdb, s.sale).Refill(ctx, s.sku, s.n, to); err != nil || m != 0 {
				t.Fatalf("refill of bucket %d, held, owing, nothing on sale: %d, %v; want 0, nil (sold out)", to, m, err)
			}
		}
		s.checkLaw(t)
	})
}

// failAfter fails every command once armed: a process that died right
// after the release script.
type failAfter struct{ armed atomic.Bool }

func (f *failAfter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (f *failAfter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.armed.Load() {
			return errors.New("the process died")
		}
		err := next(ctx, cmd)
		if err == nil && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			f.armed.Store(true) // the release script ran: die before completing
		}
		return err
	}
}

func (f *failAfter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestForwardedReturnRecoveredOnce: bucket 0 owes 1 (a lowering) and the
// SKU is held; a unit returned to bucket 1 is forwarded to bucket 0 by the
// release script, and the process dies before completing the transfer.
// The unit counts as in flight; Recover, run twice at once and then once
// more (and CompleteReturn after), pays bucket 0's debt with it exactly
// once, and the Holds can then go.
func TestForwardedReturnRecoveredOnce(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 1, 1)
		k := s.keys()
		s.buy(t, 0, "u0")
		no := s.buy(t, 1, "u1")
		// A lowering by 1 with nothing unsold: bucket 0 owes 1, as warm leaves it.
		if err := buckets.Hold(ctx, rdb, s.sale, s.sku, s.n); err != nil {
			t.Fatal(err)
		}
		rdb.Set(ctx, k[0].Debt, 1, 0)
		s.declared--
		if ok, err := buckets.EndLowering(ctx, rdb, s.sale, s.sku, s.n); err != nil || ok {
			t.Fatalf("EndLowering with 1 owed: %t, %v; want the Holds kept", ok, err)
		}
		dying := clone(rdb)
		t.Cleanup(func() { dying.Close() })
		dying.AddHook(&failAfter{})
		o := &order.Order{OrderNo: no, Sale: s.sale, SKU: s.sku, User: "u1"}
		if r, err := orderstate.ReleaseUnit(ctx, dying, o, s.n); err != nil || r != orderstate.Forwarded {
			t.Fatalf("return with the process dying after the script: %v, %v; want Forwarded", r, err)
		}
		if st := s.checkLaw(t); st.inFlight != 1 || st.figs[0].Debt != 1 || st.figs[1].Stock != 0 {
			t.Fatalf("after the forward: %+v in flight %d; want 1 in flight, still owed", st.figs, st.inFlight)
		}
		var wg sync.WaitGroup
		var took atomic.Int64
		for range 2 {
			wg.Go(func() {
				n, err := buckets.Recover(ctx, rdb, s.sale, s.sku, s.n)
				if err != nil {
					t.Error(err)
				}
				took.Add(int64(n))
			})
		}
		wg.Wait()
		if n, err := buckets.Recover(ctx, rdb, s.sale, s.sku, s.n); err != nil || n != 0 || took.Load() != 1 {
			t.Fatalf("recovered %d at once, then %d (%v); want 1, then 0", took.Load(), n, err)
		}
		if r, err := buckets.CompleteReturn(ctx, rdb, s.sale, s.sku, s.n, 1, no); err != nil || r.PaidDebt || r.OnSale {
			t.Fatalf("completing the recovered return again: %+v, %v; want nothing", r, err)
		}
		st := s.checkLaw(t)
		if st.inFlight != 0 || st.figs[0].Debt != 0 || st.stock() != 0 {
			t.Fatalf("after recovery: %+v in flight %d; want the debt paid, nothing on sale", st.figs, st.inFlight)
		}
		if ok, err := buckets.ClearHold(ctx, rdb, s.sale, s.sku, s.n); err != nil || !ok {
			t.Fatalf("ClearHold with the debt paid: %t, %v", ok, err)
		}
	})
}

// clone is a new client to the same Redis as rdb (a standalone or cluster
// client), for a test to break alone.
func clone(rdb redis.UniversalClient) redis.UniversalClient {
	if c, ok := rdb.(*redis.ClusterClient); ok {
		return redis.NewClusterClient(c.Options())
	}
	return redis.NewClient(rdb.(*redis.Client).Options())
}
