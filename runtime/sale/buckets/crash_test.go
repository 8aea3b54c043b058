package buckets_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// proxied returns a client that reaches Redis only through TCP proxies (one
// per server), and a function that cuts them all.
func proxied(t *testing.T, rdb redis.UniversalClient) (redis.UniversalClient, func()) {
	t.Helper()
	var mu sync.Mutex
	proxies := map[string]*testutil.Proxy{}
	proxyFor := func(addr string) string {
		mu.Lock()
		defer mu.Unlock()
		if proxies[addr] == nil {
			proxies[addr] = testutil.TCPProxy(t, addr)
		}
		return proxies[addr].Addr()
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, proxyFor(addr))
	}
	cut := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range proxies {
			p.Cut()
		}
	}
	var c redis.UniversalClient
	switch r := rdb.(type) {
	case *redis.ClusterClient:
		// A proxy for every primary now, so a cut leaves none to dial.
		err := r.ForEachMaster(context.Background(), func(_ context.Context, n *redis.Client) error {
			proxyFor(n.Options().Addr)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The cluster's own node addresses are dialled through the proxies,
		// so every connection the client opens can be cut. No redirects:
		// retrying a cut node would only wait.
		o := r.Options()
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Addrs, Dialer: dial, MaxRedirects: -1, DialTimeout: time.Second})
	case *redis.Client:
		c = redis.NewClient(&redis.Options{Addr: r.Options().Addr, Dialer: dial, MaxRetries: 1, DialTimeout: time.Second})
	default:
		t.Fatalf("unexpected client %T", rdb)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, cut
}

// TestCrashBetweenGiveAndTake: the connection dies right after the give
// (every proxy is cut): the move fails, the units are in flight in an
// outbox record (counted by InFlight, so the law holds), and Recover
// completes the transfer exactly once, however many recoveries race.
func TestCrashBetweenGiveAndTake(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		s := seed(t, rdb, 10, 0, 2)
		crashMove(t, s, "given")
		st := s.checkLaw(t)
		if st.inFlight != 4 || st.figs[0].Stock != 6 || st.figs[1].Stock != 0 {
			t.Fatalf("after the crash: %+v, in flight %d; want 6 in bucket 0, 0 in bucket 1, 4 in flight", st.figs, st.inFlight)
		}
		if total := raceRecoveries(t, s); total != 1 {
			t.Fatalf("racing recoveries completed %d transfers, want 1 in all", total)
		}
		st = s.checkLaw(t)
		if st.inFlight != 0 || st.figs[0].Stock != 6 || st.figs[1].Stock != 4 {
			t.Fatalf("after recovery: %+v, in flight %d; want 6 and 4 on sale, none in flight", st.figs, st.inFlight)
		}
	})
}

// TestCrashBetweenTakeAndClose: the connection dies after the receiver took
// the units in, before the giver's record was closed: the units count once
// (in the receiver, not in flight), and Recover closes the record without
// adding them again.
func TestCrashBetweenTakeAndClose(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		s := seed(t, rdb, 10, 0, 2)
		crashMove(t, s, "taken")
		st := s.checkLaw(t)
		if st.inFlight != 0 || st.figs[0].Stock != 6 || st.figs[1].Stock != 4 {
			t.Fatalf("after the crash: %+v, in flight %d; want 6 and 4, none in flight", st.figs, st.inFlight)
		}
		if total := raceRecoveries(t, s); total != 0 {
			t.Fatalf("recoveries took in %d transfers already taken in, want 0", total)
		}
		st = s.checkLaw(t)
		if st.figs[1].Stock != 4 {
			t.Fatalf("after recovery: %+v", st.figs)
		}
		ctx := context.Background()
		if v, _ := s.rdb.HVals(ctx, s.keys()[0].Outbox).Result(); len(v) != 1 || v[0] != "-" {
			t.Fatalf("outbox after recovery: %v, want one closed record", v)
		}
	})
}

// crashMove moves 4 units from bucket 0 to 1 through a connection cut
// right after step (given or taken).
func crashMove(t *testing.T, s *split, step string) {
	t.Helper()
	pc, cut := proxied(t, s.rdb)
	buckets.SetBetween(t, func(at string) {
		if at == step {
			cut()
		}
	})
	if m, err := buckets.Move(context.Background(), pc, s.sale, s.sku, s.n, 0, 1, 4); err == nil {
		t.Fatalf("Move through a connection cut after %s: moved %d, no error", step, m)
	}
	buckets.SetBetween(t, func(string) {})
}

// raceRecoveries runs 4 recoveries at once, then one more, and returns how
// many transfers they took in in all.
func raceRecoveries(t *testing.T, s *split) int {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	done := make([]int, 4)
	for i := range done {
		wg.Go(func() {
			var err error
			if done[i], err = buckets.Recover(ctx, s.rdb, s.sale, s.sku, s.n); err != nil {
				t.Errorf("recover: %v", err)
			}
		})
	}
	wg.Wait()
	if n, err := buckets.Recover(ctx, s.rdb, s.sale, s.sku, s.n); err != nil || n != 0 {
		t.Fatalf("a recovery after the others completed %d (%v), want 0", n, err)
	}
	return done[0] + done[1] + done[2] + done[3]
}

// TestGiveTwiceGivesOnce: a give retried under the same transfer id (its
// reply was lost and the client sent it again) gives nothing more, before
// and after the transfer completes.
func TestGiveTwiceGivesOnce(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	s := seed(t, rdb, 10, 0)
	k := s.keys()
	for range 2 {
		if m, err := buckets.Give(ctx, rdb, k[0], k[1], "x", 4); err != nil || m != 4 {
			t.Fatalf("give: %d, %v; want 4 each time", m, err)
		}
	}
	if _, err := buckets.Recover(ctx, rdb, s.sale, s.sku, s.n); err != nil {
		t.Fatal(err)
	}
	if m, err := buckets.Give(ctx, rdb, k[0], k[1], "x", 4); err != nil || m != 0 {
		t.Fatalf("give of a completed transfer: %d, %v; want 0", m, err)
	}
	st := s.checkLaw(t)
	if st.figs[0].Stock != 6 || st.figs[1].Stock != 4 {
		t.Fatalf("%+v: want 6 and 4", st.figs)
	}
}

// TestRefillCompletesInFlightFirst: when every bucket's counter is out but
// a transfer is in flight, Refill does not answer sold out: it completes
// the transfer and refills from where the units landed. Only then, with
// nothing anywhere, does it answer 0.
func TestRefillCompletesInFlightFirst(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 0, 0, 5)
		k := s.keys()
		if _, err := buckets.Give(ctx, rdb, k[2], k[1], "crashed", 5); err != nil {
			t.Fatal(err)
		}
		r := buckets.NewRefiller(rdb, s.sale)
		if m, err := r.Refill(ctx, s.sku, s.n, 0); err != nil || m != 3 {
			t.Fatalf("refill with 5 units in flight to bucket 1: %d, %v; want 3", m, err)
		}
		st := s.checkLaw(t)
		if st.inFlight != 0 || st.figs[0].Stock != 3 || st.figs[1].Stock != 2 {
			t.Fatalf("%+v, in flight %d", st.figs, st.inFlight)
		}
		for i, b := range []int{0, 0, 0, 1, 1} {
			if s.buy(t, b, "u"+strconv.Itoa(i)) == "" {
				t.Fatalf("purchase %d in bucket %d sold out", i, b)
			}
		}
		if m, err := r.Refill(ctx, s.sku, s.n, 0); err != nil || m != 0 {
			t.Fatalf("refill with every bucket out: %d, %v; want 0", m, err)
		}
	})
}
