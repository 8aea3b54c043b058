package purchase_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// stalled is a Redis whose script calls hang until released (a stall): it
// counts the purchases each call carries, before and after the release.
type stalled struct {
	redis.UniversalClient
	gate          chan struct{}
	released      atomic.Bool
	before, after atomic.Int64 // purchases sent
	callsAfter    atomic.Int64
}

func (s *stalled) EvalSha(ctx context.Context, sha string, ks []string, args ...any) *redis.Cmd {
	n := int64(len(args)-3) / 7 // purchase.Call: 3 arguments, then 7 per purchase
	if s.released.Load() {
		s.after.Add(n)
		s.callsAfter.Add(1)
	} else {
		s.before.Add(n)
	}
	<-s.gate
	return s.UniversalClient.EvalSha(context.Background(), sha, ks, args...)
}

// TestStallBacklogOfGoneCallersIsNotSent: Redis stalls while MaxQueued+300
// buyers purchase one SKU through the batcher, and every buyer gives up. Only the
// purchases already on the wire when the stall began are admitted once Redis
// is back: none of the backlog of buyers who left is sent (before: all of
// them were admitted). The backlog is capped: purchases past MaxQueued are
// refused at once with ErrBusy, never sent.
func TestStallBacklogOfGoneCallersIsNotSent(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	saleKey := testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	s, err := purchase.New(rdb, saleKey, purchase.Options{Batch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	st := &stalled{UniversalClient: rdb, gate: make(chan struct{})}
	s.SetExec(st)
	k := keys.ForSKU(saleKey, "x")
	const n = purchase.MaxQueued + 300
	const stock = 2 * n
	rdb.Set(ctx, k.Stock, stock, 0)
	buyers, giveUp := context.WithCancel(ctx)
	var busy, gaveUp atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			now := time.Now()
			_, err := s.Purchase(buyers, purchase.Request{SKU: "x", User: fmt.Sprintf("u%d", i), Limit: 1, Amount: "1",
				Nonce: fmt.Sprintf("n%d", i), Now: now, Deadline: now.Add(time.Minute)})
			switch {
			case errors.Is(err, purchase.ErrBusy):
				busy.Add(1)
			case errors.Is(err, context.Canceled):
				gaveUp.Add(1)
			default:
				t.Errorf("buyer %d during the stall: %v; want ErrBusy or their own give-up", i, err)
			}
		})
	}
	testutil.Eventually(t, 10*time.Second, "every purchase sent, queued or refused", func() bool {
		waiting, _ := s.Queued()
		return st.before.Load()+int64(waiting)+busy.Load() == n
	})
	if waiting, _ := s.Queued(); waiting != purchase.MaxQueued || busy.Load() != n-purchase.MaxQueued-st.before.Load() {
		t.Errorf("%d waiting, %d refused, %d sent; want the queue capped at %d and the rest refused", waiting, busy.Load(),
			st.before.Load(), purchase.MaxQueued)
	}
	giveUp() // every waiting buyer gives up
	wg.Wait()
	st.released.Store(true)
	close(st.gate)
	testutil.Eventually(t, 10*time.Second, "the batcher idle", func() bool {
		waiting, running := s.Queued()
		return waiting == 0 && running == 0
	})
	left, _ := rdb.Get(ctx, k.Stock).Int64()
	if sold := stock - left; sold != st.before.Load() || st.after.Load() != 0 {
		t.Errorf("%d orders admitted, %d purchases sent before the stall, %d (in %d calls) after it, for buyers who had left; want only the %d on the wire",
			sold, st.before.Load(), st.after.Load(), st.callsAfter.Load(), st.before.Load())
	}
	t.Logf("%d on the wire, %d gave up, %d refused at the cap", st.before.Load(), gaveUp.Load(), busy.Load())
}
