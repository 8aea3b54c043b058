package seckill_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// stallPurchases holds every purchase script call until its gate closes,
// counting the calls sent before and after.
type stallPurchases struct {
	gate          chan struct{}
	released      atomic.Bool
	before, after atomic.Int64
}

// hold counts k purchases sent and stalls them.
func (s *stallPurchases) hold(k int64) {
	if s.released.Load() {
		s.after.Add(k)
	} else {
		s.before.Add(k)
	}
	<-s.gate
}

func isPurchase(cmd redis.Cmder) bool {
	a := cmd.Args()
	return cmd.Name() == "evalsha" && len(a) > 1 && a[1] == purchase.SHA()
}

func (s *stallPurchases) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (s *stallPurchases) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isPurchase(cmd) {
			s.hold(1)
		}
		return next(ctx, cmd)
	}
}

func (s *stallPurchases) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var k int64
		for _, cmd := range cmds {
			if isPurchase(cmd) {
				k++
			}
		}
		if k > 0 {
			s.hold(k)
		}
		return next(ctx, cmds)
	}
}

// TestStalledRedisRefusesPastTheQueueCap: while Redis stalls, purchases of
// one SKU queue in the pod up to the batcher's cap; the ones past it are
// answered at once with a retryable 503 UNAVAILABLE (they were never sent),
// and such a buyer buys with the same token once Redis is back.
func TestStalledRedisRefusesPastTheQueueCap(t *testing.T) {
	t.Run("batched", func(t *testing.T) {
		refusesPastTheCap(t, purchase.MaxQueued, func(rdb redis.UniversalClient, fs *v1alpha1.FlashSale) *testServer {
			return startServer(t, rdb, fs, serverOpts{autoOff: true})
		})
	})
	// The durable client batches per node itself, with its own cap.
	t.Run("durable", func(t *testing.T) {
		refusesPastTheCap(t, seckill.DurableMaxQueued, func(rdb redis.UniversalClient, fs *v1alpha1.FlashSale) *testServer {
			s, err := startDurable(t, rdb, fs, seckill.Durability{Replicas: 1, Timeout: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

func refusesPastTheCap(t *testing.T, limit int, start func(redis.UniversalClient, *v1alpha1.FlashSale) *testServer) {
	base := testutil.Redis(t)
	rdb := redis.NewClient(base.Options())
	t.Cleanup(func() { rdb.Close() })
	stall := &stallPurchases{gate: make(chan struct{})}
	rdb.AddHook(stall)
	var release sync.Once
	open := func() { release.Do(func() { stall.released.Store(true); close(stall.gate) }) }
	t.Cleanup(open) // a failing test does not leave purchases hanging
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "x", Stock: 10000, Price: "1.00", PerUserLimit: 1})
	s := start(rdb, fs)
	n := limit + 1200 // past what the calls on the wire can carry (8 × 128 durable)
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = s.token("u"+strconv.Itoa(i), "x").Token
	}
	var mu sync.Mutex
	busy := -1 // a buyer refused at the cap
	var refused atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := s.purchase("u"+strconv.Itoa(i), "x", tokens[i])
			// Not the 503 of a purchase sent whose outcome is unknown (a
			// timeout): the one of a purchase never sent.
			if r.Status == http.StatusServiceUnavailable && r.Error == "UNAVAILABLE" && r.RetryAfter != "" &&
				strings.Contains(r.Message, "nothing was done") {
				refused.Add(1)
				mu.Lock()
				if busy < 0 {
					busy = i
				}
				mu.Unlock()
			}
		})
	}
	testutil.Eventually(t, 10*time.Second, "a purchase refused at the queue cap while Redis stalls", func() bool {
		return refused.Load() > 0
	})
	open()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if r := s.purchase("u"+strconv.Itoa(busy), "x", tokens[busy]); r.Status != http.StatusAccepted {
		t.Fatalf("the refused buyer retrying with the same token once Redis is back: %d %s; want 202", r.Status, r.Body)
	}
}

// TestDurableStallBacklogOfGoneBuyersIsNotSent: Redis stalls under a sale
// with durability (its own per-node batching); every buyer's purchase times
// out (503, outcome unknown). Once Redis is back only the purchases already
// on the wire are admitted: the backlog of buyers who were told to retry is
// not sent. A buyer arriving after the release, queued behind that backlog,
// is the only purchase sent after it.
func TestDurableStallBacklogOfGoneBuyersIsNotSent(t *testing.T) {
	base := testutil.Redis(t)
	rdb := redis.NewClient(base.Options())
	t.Cleanup(func() { rdb.Close() })
	stall := &stallPurchases{gate: make(chan struct{})}
	rdb.AddHook(stall)
	var release sync.Once
	open := func() { release.Do(func() { stall.released.Store(true); close(stall.gate) }) }
	t.Cleanup(open)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "x", Stock: 10000, Price: "1.00", PerUserLimit: 1})
	s, err := startDurable(t, rdb, fs, seckill.Durability{Replicas: 1, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	tokens := make([]string, n+1)
	for i := range tokens {
		tokens[i] = s.token("u"+strconv.Itoa(i), "x").Token
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if r := s.purchase("u"+strconv.Itoa(i), "x", tokens[i]); r.Status != http.StatusServiceUnavailable {
				t.Errorf("buyer %d while Redis stalls: %d %s; want 503", i, r.Status, r.Body)
			}
		})
	}
	wg.Wait() // every buyer was told the outcome is unknown
	open()
	if r := s.purchase("u"+strconv.Itoa(n), "x", tokens[n]); r.Status != http.StatusAccepted {
		t.Fatalf("a buyer after the stall: %d %s; want 202", r.Status, r.Body)
	}
	left, err := rdb.Get(context.Background(), keys.ForSKU(fs.SaleKey(), "x").Stock).Int64()
	if err != nil {
		t.Fatal(err)
	}
	// The calls held in the hook are "on the wire"; whether Redis runs them
	// depends on whether their deadline passed while held (go-redis does not
	// send a call whose context is done), which depends on the machine's
	// load. What must hold: nothing queued behind them was sent after the
	// stall but the new buyer's, and nothing sold but what was on the wire.
	if sold := 10000 - left; stall.after.Load() != 1 || sold < 1 || sold > stall.before.Load()+1 {
		t.Errorf("%d sold, %d purchases on the wire during the stall, %d sent after it; want only those on the wire and the new buyer's",
			sold, stall.before.Load(), stall.after.Load())
	}
}
