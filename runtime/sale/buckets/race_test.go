package buckets_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestRefillSellsEveryUnit: buyers of 3 buckets (one bucket's buyers far
// more numerous) buy from their home bucket and, told SOLD_OUT, refill it
// from the others, through several Refillers (pods), while other goroutines
// move units at random and some buyers give units back. The law holds at
// the end, exactly the declared stock is held, no bucket has a unit left,
// and no transfer is left in flight: a buyer was told "sold out" (Refill 0)
// only when the SKU was.
func TestRefillSellsEveryUnit(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 40, 40, 40)
		pods := []*buckets.Refiller{buckets.NewRefiller(rdb, s.sale), buckets.NewRefiller(rdb, s.sale)}
		stop := make(chan struct{})
		var movers sync.WaitGroup
		for range 2 {
			movers.Go(func() { randomMoves(t, s, stop) })
		}
		var buyers sync.WaitGroup
		var mu sync.Mutex
		soldOut := 0
		for i := range 24 {
			buyers.Go(func() {
				home := []int{0, 0, 0, 0, 1, 2}[i%6] // bucket 0's buyers come first and most
				pod := pods[i%2]
				for j := 0; ; j++ {
					user := "u" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
					if no := s.buy(t, home, user); no != "" {
						if j%7 == 0 {
							s.giveBack(t, no, user)
						}
						continue
					}
					m, err := pod.Refill(ctx, s.sku, s.n, home)
					if err != nil {
						t.Errorf("refill: %v", err)
						return
					}
					if m == 0 {
						mu.Lock()
						soldOut++
						mu.Unlock()
						return
					}
				}
			})
		}
		buyers.Wait()
		close(stop)
		movers.Wait()
		st := s.checkLaw(t)
		if st.sold() != s.declared || st.stock() != 0 || st.inFlight != 0 {
			t.Fatalf("after the sale: %d held of %d, %d left on sale %+v, %d in flight",
				st.sold(), s.declared, st.stock(), st.figs, st.inFlight)
		}
		if soldOut != 24 {
			t.Fatalf("%d buyers were told sold out, want all 24", soldOut)
		}
	})
}

// randomMoves moves random amounts between random buckets until stop.
func randomMoves(t *testing.T, s *split, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		from := rand.IntN(s.n)
		to := (from + 1 + rand.IntN(s.n-1)) % s.n
		if _, err := buckets.Move(context.Background(), s.rdb, s.sale, s.sku, s.n, from, to, 1+rand.Int64N(20)); err != nil {
			t.Errorf("move: %v", err)
			return
		}
	}
}

// TestRefillSharesOneTransfer: concurrent refills of one bucket in one pod
// make one transfer; each caller hears the units it may now buy.
func TestRefillSharesOneTransfer(t *testing.T) {
	rdb := testRedis(t)
	ctx := context.Background()
	s := seed(t, rdb, 0, 40, 10)
	r := buckets.NewRefiller(rdb, s.sale)
	release := make(chan struct{})
	given := make(chan struct{})
	var once sync.Once
	buckets.SetBetween(t, func(step string) {
		if step == "given" {
			once.Do(func() { close(given) })
			<-release
		}
	})
	var wg sync.WaitGroup
	got := make([]int64, 20)
	wg.Go(func() { got[0], _ = r.Refill(ctx, s.sku, s.n, 0) })
	<-given // the first refill has given and not yet taken in
	for i := 1; i < len(got); i++ {
		wg.Go(func() { got[i], _ = r.Refill(ctx, s.sku, s.n, 0) })
	}
	waitForWaiters(t, r, s.sku, 0, s.n)
	close(release)
	wg.Wait()
	for i, m := range got {
		if m != 20 {
			t.Fatalf("caller %d heard %d, want the 20 moved (half of the richest bucket's 40)", i, m)
		}
	}
	if n, _ := rdb.HLen(ctx, s.keys()[0].Inbox).Result(); n != 1 {
		t.Fatalf("%d transfers for 20 concurrent refills of one bucket, want 1", n)
	}
	s.checkLaw(t)
}

// waitForWaiters waits until 20 refills have reached the group, then lets
// them settle into it.
func waitForWaiters(t *testing.T, r *buckets.Refiller, _ string, _, _ int) {
	t.Helper()
	for r.Joining() < 20 {
		runtime.Gosched()
	}
	for range 1000 {
		runtime.Gosched()
	}
}

func testRedis(t *testing.T) redis.UniversalClient { return testutil.Redis(t) }

// TestRefillSkewedDemand: only bucket 0's buyers come (through two pods);
// every unit of the two cold buckets still reaches them, and the last
// refills answer sold out with nothing left anywhere.
func TestRefillSkewedDemand(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 5, 30, 25)
		pods := []*buckets.Refiller{buckets.NewRefiller(rdb, s.sale), buckets.NewRefiller(rdb, s.sale)}
		var buyers sync.WaitGroup
		for i := range 8 {
			buyers.Go(func() {
				for j := 0; ; j++ {
					if s.buy(t, 0, "u"+strconv.Itoa(i)+"-"+strconv.Itoa(j)) != "" {
						continue
					}
					if m, err := pods[i%2].Refill(ctx, s.sku, s.n, 0); m == 0 || err != nil {
						if err != nil {
							t.Errorf("refill: %v", err)
						}
						return
					}
				}
			})
		}
		buyers.Wait()
		st := s.checkLaw(t)
		if st.held[0] != s.declared || st.stock() != 0 || st.inFlight != 0 {
			t.Fatalf("bucket 0's buyers hold %d of %d; left on sale %+v, %d in flight", st.held[0], s.declared, st.figs, st.inFlight)
		}
	})
}
