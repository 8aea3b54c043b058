package seckill_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestNeverOversells: 100 units, 5,000 distinct buyers at once plus 2,000
// repeat attempts by some of them. Exactly 100 are admitted, nobody holds
// more than one, the stream holds exactly the admitted orders, stock ends at 0.
func TestNeverOversells(t *testing.T) {
	t.Run("standalone", func(t *testing.T) { spikeAndCheck(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { spikeAndCheck(t, testutil.RedisCluster(t).Client(t)) })
}

func spikeAndCheck(t *testing.T, rdb redis.UniversalClient) {
	const (
		stockN  = 100
		buyers  = 5000
		repeats = 2000
	)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: stockN, Price: "3999.00", PerUserLimit: 1})
	s := startServer(t, rdb, fs, serverOpts{})

	type result struct {
		user string
		r    reply
	}
	results := make(chan result, buyers+repeats)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	attempt := func(user string) {
		defer wg.Done()
		sem <- struct{}{}
		defer func() { <-sem }()
		results <- result{user, s.buy(user, "1001")}
	}
	for i := range buyers {
		wg.Add(1)
		go attempt("u" + strconv.Itoa(i))
	}
	for i := range repeats {
		wg.Add(1)
		go attempt("u" + strconv.Itoa(i%500))
	}
	wg.Wait()
	close(results)

	admitted := map[string]string{} // orderNo -> user
	perUser := map[string]int{}
	codes := map[string]int{}
	for r := range results {
		switch r.r.Status {
		case http.StatusAccepted:
			if _, dup := admitted[r.r.OrderNo]; dup {
				t.Errorf("order %s admitted twice", r.r.OrderNo)
			}
			admitted[r.r.OrderNo] = r.user
			perUser[r.user]++
		case http.StatusGone, http.StatusConflict:
			codes[r.r.Error]++
		default:
			t.Errorf("user %s: unexpected answer %d %s %s", r.user, r.r.Status, r.r.Error, r.r.Message)
		}
	}
	t.Logf("admitted %d, refusals %v", len(admitted), codes)
	if len(admitted) != stockN {
		t.Fatalf("admitted %d orders for %d units", len(admitted), stockN)
	}
	for u, n := range perUser {
		if n > 1 {
			t.Errorf("user %s got %d units, limit 1", u, n)
		}
	}
	if got := stock(t, rdb, fs, "1001"); got != 0 {
		t.Errorf("stock ends at %d, want 0", got)
	}
	ctx := context.Background()
	k := keys.ForSKU(fs.SaleKey(), "1001")
	entries, err := rdb.XRange(ctx, k.Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != stockN {
		t.Fatalf("stream holds %d orders, want %d", len(entries), stockN)
	}
	for _, e := range entries {
		no, _ := e.Values["order"].(string)
		user, _ := e.Values["user"].(string)
		if admitted[no] != user {
			t.Errorf("stream entry %s for user %s was not admitted to that user", no, user)
		}
		n, _ := strconv.ParseInt(e.Values["n"].(string), 10, 64)
		if want := purchase.OrderNo(fs.SaleKey(), "1001", user, n, 0); no != want {
			t.Errorf("order number %s, want deterministic %s", no, want)
		}
		if e.Values["amount"] != "3999.00" || e.Values["sku"] != "1001" || e.Values["sale"] != fs.SaleKey() {
			t.Errorf("stream entry fields %v", e.Values)
		}
	}
	if n, _ := rdb.ZCard(ctx, k.Expiry).Result(); n != stockN {
		t.Errorf("expiry set holds %d, want %d", n, stockN)
	}
	// Result polling sees every admitted order as queued, for its buyer only.
	i := 0
	for no, user := range admitted {
		if i++; i > 20 {
			break
		}
		r := s.call(http.MethodGet, "/orders/"+no, "", "X-User-ID", user)
		if r.Status != http.StatusOK || r.State != "queued" || r.SKU != "1001" || r.OrderNo != no {
			t.Errorf("poll %s: %+v", no, r)
		}
		if r := s.call(http.MethodGet, "/orders/"+no, "", "X-User-ID", "intruder"); r.Status != http.StatusNotFound {
			t.Errorf("order %s visible to another user: %d", no, r.Status)
		}
	}
}

// TestPerUserLimitAboveOne: with perUserLimit 3 a user gets 3 units and no more.
func TestPerUserLimitAboveOne(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "case", Stock: 50, Price: "19.90", PerUserLimit: 3})
	s := startServer(t, rdb, fs, serverOpts{})
	var orders []string
	for i := range 5 {
		r := s.buy("alice", "case")
		if i < 3 {
			if r.Status != http.StatusAccepted {
				t.Fatalf("purchase %d: %d %s", i+1, r.Status, r.Error)
			}
			orders = append(orders, r.OrderNo)
			continue
		}
		if r.Status != http.StatusConflict || r.Error != "ALREADY_PURCHASED" {
			t.Fatalf("purchase %d: %d %s, want 409 ALREADY_PURCHASED", i+1, r.Status, r.Error)
		}
	}
	for n, no := range orders {
		if want := purchase.OrderNo(fs.SaleKey(), "case", "alice", int64(n+1), 0); no != want {
			t.Errorf("order %d is %s, want %s", n+1, no, want)
		}
	}
	if got := stock(t, rdb, fs, "case"); got != 47 {
		t.Fatalf("stock %d, want 47", got)
	}
	if r := s.buy("bob", "case"); r.Status != http.StatusAccepted {
		t.Fatalf("another user: %d %s", r.Status, r.Error)
	}
}

// TestRetriedRequestSameOrder: a purchase retried with the same token (a
// client that timed out) gets the same order, and stock moves once.
func TestRetriedRequestSameOrder(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "case", Stock: 10, Price: "19.90", PerUserLimit: 3})
	s := startServer(t, rdb, fs, serverOpts{})
	tk := s.token("carol", "case")
	first := s.purchase("carol", "case", tk.Token)
	second := s.purchase("carol", "case", tk.Token)
	if first.Status != http.StatusAccepted || second.Status != http.StatusAccepted {
		t.Fatalf("answers %d, %d", first.Status, second.Status)
	}
	if first.OrderNo != second.OrderNo {
		t.Fatalf("retry made a second order: %s then %s", first.OrderNo, second.OrderNo)
	}
	if got := stock(t, rdb, fs, "case"); got != 9 {
		t.Fatalf("stock %d, want 9", got)
	}
	if n, _ := rdb.XLen(context.Background(), keys.ForSKU(fs.SaleKey(), "case").Stream).Result(); n != 1 {
		t.Fatalf("stream holds %d orders, want 1", n)
	}
}

// TestRetryOfTheLastUnitSameOrder: the buyer who took the last unit and
// lost the answer retries with the same token after the SKU is sold out: it
// must get its order back, not SOLD_OUT; others still get SOLD_OUT.
func TestRetryOfTheLastUnitSameOrder(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "last", Stock: 1, Price: "1.00", PerUserLimit: 1})
	s := startServer(t, rdb, fs, serverOpts{})
	tk := s.token("erin", "last")
	other := s.token("frank", "last")
	first := s.purchase("erin", "last", tk.Token)
	if first.Status != http.StatusAccepted {
		t.Fatalf("first purchase: %d %s", first.Status, first.Error)
	}
	// The pod now knows the SKU is sold out (it answered the last unit).
	retry := s.purchase("erin", "last", tk.Token)
	if retry.Status != http.StatusAccepted || retry.OrderNo != first.OrderNo {
		t.Fatalf("retry after sell-out: %d %s %q, want 202 with order %s", retry.Status, retry.Error, retry.OrderNo, first.OrderNo)
	}
	if r := s.purchase("frank", "last", other.Token); r.Status != http.StatusGone || r.Error != "SOLD_OUT" {
		t.Fatalf("another buyer after sell-out: %d %s, want 410 SOLD_OUT", r.Status, r.Error)
	}
	if n, _ := rdb.XLen(context.Background(), keys.ForSKU(fs.SaleKey(), "last").Stream).Result(); n != 1 {
		t.Fatalf("stream holds %d orders, want 1", n)
	}
}

// TestScriptReloadedAfterNoScript: Redis forgetting its scripts (restart,
// failover, SCRIPT FLUSH) costs one reload, not a failed purchase.
func TestScriptReloadedAfterNoScript(t *testing.T) {
	for _, auto := range []bool{false, true} {
		t.Run(fmt.Sprintf("autopipeline=%t", auto), func(t *testing.T) {
			rdb := testutil.Redis(t)
			fs := newSale(t, rdb)
			s := startServer(t, rdb, fs, serverOpts{autoOff: !auto})
			if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			if r := s.buy("dave", "1001"); r.Status != http.StatusAccepted {
				t.Fatalf("after SCRIPT FLUSH: %d %s %s", r.Status, r.Error, r.Message)
			}
			ok, err := rdb.ScriptExists(context.Background(), purchase.SHA()).Result()
			if err != nil || !ok[0] {
				t.Fatalf("script not reloaded: %v %v", ok, err)
			}
		})
	}
}
