package seckill_test

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// splitSKU is the hot SKU of the bucket tests: 100 units in 3 buckets.
var splitSKU = v1alpha1.SKU{ID: "hot", Stock: 100, Price: "1.00", PerUserLimit: 1, Buckets: 3}

// TestBucketsOnACluster sells one SKU split into 3 buckets, on the 3
// primaries of a local Redis Cluster, through the HTTP API.
func TestBucketsOnACluster(t *testing.T) {
	cl := testutil.RedisCluster(t)
	// Every buyer at once, and repeat clickers: exactly the stock is sold,
	// nobody over their limit, no unit left in any bucket, every order found.
	t.Run("spike", func(t *testing.T) {
		rdb := cl.Client(t)
		fs := newSale(t, rdb, splitSKU)
		s := startServer(t, rdb, fs, serverOpts{})
		checkSpread(t, rdb, fs)
		users := make([]string, 0, 7000)
		for i := range 5000 {
			users = append(users, "u"+strconv.Itoa(i))
		}
		for i := range 2000 {
			users = append(users, "u"+strconv.Itoa(i%500)) // repeat clickers
		}
		checkSoldOnce(t, s, buyAll(s, users))
	})
	// The buyers of bucket 0 all come first: they buy the other buckets'
	// units too (refills), and the SKU sells out entirely.
	t.Run("skewed", func(t *testing.T) {
		rdb := cl.Client(t)
		fs := newSale(t, rdb, splitSKU)
		s := startServer(t, rdb, fs, serverOpts{})
		var first, rest []string
		for i := 0; len(first) < 300; i++ {
			u := "u" + strconv.Itoa(i)
			if keys.Home(u, 3) == 0 {
				first = append(first, u)
			} else {
				rest = append(rest, u)
			}
		}
		got := buyAll(s, first)
		if len(got) != int(splitSKU.Stock) {
			t.Errorf("bucket 0's buyers bought %d units, want all %d", len(got), splitSKU.Stock)
		}
		for no, u := range buyAll(s, rest) {
			got[no] = u
		}
		checkSoldOnce(t, s, got)
	})
	// A retried token gets the same order on a split SKU, before and after
	// the sell-out, from the buyer's home bucket (not bucket 0).
	t.Run("retry", func(t *testing.T) {
		rdb := cl.Client(t)
		fs := newSale(t, rdb, v1alpha1.SKU{ID: "hot", Stock: 2, Price: "1.00", PerUserLimit: 1, Buckets: 3})
		s := startServer(t, rdb, fs, serverOpts{})
		user := "r0"
		for i := 0; keys.Home(user, 3) == 0; i++ {
			user = "r" + strconv.Itoa(i)
		}
		tk := s.token(user, "hot")
		first := s.purchase(user, "hot", tk.Token)
		if first.Status != http.StatusAccepted {
			t.Fatalf("purchase: %d %s", first.Status, first.Body)
		}
		if b, _ := keys.BucketOf(first.OrderNo); b != keys.Home(user, 3) {
			t.Errorf("order %s is not marked with the buyer's home bucket %d", first.OrderNo, keys.Home(user, 3))
		}
		if again := s.purchase(user, "hot", tk.Token); again.Status != http.StatusAccepted || again.OrderNo != first.OrderNo {
			t.Errorf("retry: %d %s, want 202 %s", again.Status, again.Body, first.OrderNo)
		}
		if r := s.buy("other", "hot"); r.Status != http.StatusAccepted { // the last unit
			t.Fatalf("last unit: %d %s", r.Status, r.Body)
		}
		waitFor(t, 5*time.Second, "the pod to see the sell-out", func() bool {
			return s.call(http.MethodGet, "/skus/hot", "").SoldOut
		})
		if late := s.purchase(user, "hot", tk.Token); late.Status != http.StatusAccepted || late.OrderNo != first.OrderNo {
			t.Errorf("retry after the sell-out: %d %s, want 202 %s", late.Status, late.Body, first.OrderNo)
		}
	})
}

// checkSpread: the SKU's 3 buckets sit on 3 different primaries.
func checkSpread(t *testing.T, rdb *redis.ClusterClient, fs *v1alpha1.FlashSale) {
	t.Helper()
	primaries := map[string]bool{}
	for _, k := range keys.Buckets(fs.SaleKey(), "hot", 3) {
		node, err := rdb.MasterForKey(context.Background(), k.Stock)
		if err != nil {
			t.Fatal(err)
		}
		primaries[node.Options().Addr] = true
	}
	if len(primaries) != 3 {
		t.Fatalf("the 3 buckets sit on %d primaries", len(primaries))
	}
}

// buyAll has users buy the hot SKU (a token, then a purchase; 64 at once)
// and returns the orders admitted: order number -> user. A 503 is retried
// with the same token; refusals other than SOLD_OUT and ALREADY_PURCHASED fail the test.
func buyAll(s *testServer, users []string) map[string]string {
	t := s.t
	var mu sync.Mutex
	admitted := map[string]string{}
	refused := map[string]int{}
	defer func() { t.Logf("%d admitted; refused: %v", len(admitted), refused) }()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r := s.token(u, "hot")
			for try := 0; r.Status == http.StatusOK || (r.Status == http.StatusServiceUnavailable && try < 20); try++ {
				tok := r.Token
				if r = s.purchase(u, "hot", tok); r.Status == http.StatusServiceUnavailable {
					r.Token = tok
				}
				if r.Status != http.StatusServiceUnavailable {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case r.Status == http.StatusAccepted:
				if prev, dup := admitted[r.OrderNo]; dup {
					t.Errorf("order %s admitted to %s and %s", r.OrderNo, prev, u)
				}
				admitted[r.OrderNo] = u
			case r.Error == "SOLD_OUT" || r.Error == "ALREADY_PURCHASED":
				refused[r.Error+" "+r.Message]++
			default:
				t.Errorf("user %s: %d %s", u, r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	return admitted
}

// checkSoldOnce: exactly the stock was sold, once per buyer, no unit is
// left in any bucket, the buckets' streams hold exactly the orders, and
// every buyer finds their order through the API.
func checkSoldOnce(t *testing.T, s *testServer, admitted map[string]string) {
	t.Helper()
	if len(admitted) != int(splitSKU.Stock) {
		t.Errorf("%d orders admitted for %d units", len(admitted), splitSKU.Stock)
	}
	perUser := map[string]int{}
	for _, u := range admitted {
		if perUser[u]++; perUser[u] > 1 {
			t.Errorf("user %s holds %d units, limit 1", u, perUser[u])
		}
	}
	ctx := context.Background()
	var streamed int64
	for _, k := range keys.Buckets(s.sale.SaleKey(), "hot", 3) {
		if n, err := s.rdb.Get(ctx, k.Stock).Int64(); err != nil || n != 0 {
			t.Errorf("bucket %d: %d units left (%v)", k.Bucket, n, err)
		}
		n, _ := s.rdb.XLen(ctx, k.Stream).Result()
		streamed += n
	}
	if streamed != int64(len(admitted)) {
		t.Errorf("the buckets' streams hold %d orders, %d were admitted", streamed, len(admitted))
	}
	for no, u := range admitted {
		if r := s.call(http.MethodGet, "/orders/"+no, "", "X-User-ID", u); r.Status != http.StatusOK || r.State != "queued" {
			t.Errorf("order %s of %s: %d %s", no, u, r.Status, r.Body)
		}
	}
	if r := s.call(http.MethodGet, "/skus/hot", ""); r.Remaining != 0 || !r.SoldOut {
		t.Errorf("/skus/hot after the sell-out: %s", r.Body)
	}
}

// TestUnitsInFlightAreNotSoldOut: a unit moving between two buckets (given
// by one, not yet taken in by the other: for a moment during every
// transfer, for good after a crash) is in no bucket's counter, so every
// bucket may read out while it is on sale. The pod must not conclude that
// the SKU is sold out and refuse every buyer from memory (SOLD_OUT, a final
// answer) while the unit waits: the next buyer gets it.
func TestUnitsInFlightAreNotSoldOut(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "hot", Stock: 2, Price: "1.00", PerUserLimit: 1, Buckets: 3})
	s := startServer(t, rdb, fs, serverOpts{})
	ks := keys.Buckets(fs.SaleKey(), "hot", 3) // stock 1, 1, 0
	home0 := func(prefix string) string {
		u := prefix
		for i := 0; keys.Home(u, 3) != 0; i++ {
			u = prefix + strconv.Itoa(i)
		}
		return u
	}
	if r := s.buy(home0("a"), "hot"); r.Status != http.StatusAccepted {
		t.Fatalf("first buyer: %d %s", r.Status, r.Body)
	}
	// Bucket 1 gives its unit to bucket 0, which has not taken it in: what
	// step 1 of a transfer leaves (package buckets' give.lua and record).
	if err := rdb.Decr(ctx, ks[1].Stock).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Decr(ctx, ks[1].Initial)
	rdb.HSet(ctx, ks[1].Outbox, "in-flight", "1 0")
	// The pod's refresh reads every bucket out: it either concludes SOLD_OUT
	// or has the unit taken in.
	waitFor(t, 5*time.Second, "the pod to read every bucket out", func() bool {
		n, _ := rdb.Get(ctx, ks[0].Stock).Int64()
		r := s.call(http.MethodGet, "/skus/hot", "")
		return r.Remaining == 0 && r.SoldOut || n > 0
	})
	if r := s.buy(home0("b"), "hot"); r.Status != http.StatusAccepted {
		t.Fatalf("a buyer while the last unit is in flight: %d %s, want 202", r.Status, r.Body)
	}
	for _, k := range ks {
		if n, _ := rdb.Get(ctx, k.Stock).Int64(); n != 0 {
			t.Errorf("bucket %d: %d units left", k.Bucket, n)
		}
	}
	waitFor(t, 5*time.Second, "the pod to see the sell-out", func() bool {
		return s.call(http.MethodGet, "/skus/hot", "").SoldOut
	})
}
