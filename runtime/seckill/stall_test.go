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
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// stallPurchases holds every purchase script call until its gate closes.
type stallPurchases struct{ gate chan struct{} }

func (s *stallPurchases) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (s *stallPurchases) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "evalsha" && len(a) > 1 && a[1] == purchase.SHA() {
			<-s.gate
		}
		return next(ctx, cmd)
	}
}

func (s *stallPurchases) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestStalledRedisRefusesPastTheQueueCap: while Redis stalls, purchases of
// one SKU queue in the pod up to the batcher's cap; the ones past it are
// answered at once with a retryable 503 UNAVAILABLE (they were never sent),
// and such a buyer buys with the same token once Redis is back.
func TestStalledRedisRefusesPastTheQueueCap(t *testing.T) {
	base := testutil.Redis(t)
	rdb := redis.NewClient(base.Options())
	t.Cleanup(func() { rdb.Close() })
	stall := &stallPurchases{gate: make(chan struct{})}
	rdb.AddHook(stall)
	var release sync.Once
	open := func() { release.Do(func() { close(stall.gate) }) }
	t.Cleanup(open) // a failing test does not leave purchases hanging
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "x", Stock: 10000, Price: "1.00", PerUserLimit: 1})
	s := startServer(t, rdb, fs, serverOpts{autoOff: true})
	n := purchase.MaxQueued + 100
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
