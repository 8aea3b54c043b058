package purchase_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestBatchIsEachPurchaseInTurn: one call carrying a batch answers every
// purchase as if each were its own call, in order: a user's second purchase
// in the batch meets their limit (or gets order n = 2 when the limit allows
// it), a token sent twice gets its order back, the stock runs out
// mid-batch, and the refused purchases leave no trace. The batch runs in
// bucket 2 of 3: its keys, and order numbers with the bucket's mark.
func TestBatchIsEachPurchaseInTurn(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	saleKey := testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	s, err := purchase.New(rdb, saleKey, purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	k := keys.ForBucket(saleKey, "x", 2, 3)
	rdb.Set(ctx, k.Stock, 4, 0)
	now := time.Now()
	req := func(user, nonce string, limit int32) purchase.Request {
		return purchase.Request{SKU: "x", Bucket: 2, Buckets: 3, User: user, Limit: limit, Amount: "1.00", Nonce: nonce,
			Now: now, Deadline: now.Add(time.Minute)}
	}
	batch := []purchase.Request{
		req("u1", "n1", 1), req("u1", "n2", 1), // limit 1: the second is refused
		req("u2", "n3", 2), req("u2", "n3", 2), // the same token twice: one order
		req("u2", "n4", 2), // limit 2: u2's second order, n = 2
		req("u3", "n5", 1), // the last unit
		req("u4", "n6", 1), // sold out
	}
	res, err := s.RunBatch(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	no := func(user string, n int64) string { return purchase.OrderNo(saleKey, "x", user, n, 2) }
	want := []purchase.Result{
		{Outcome: purchase.Admitted, OrderNo: no("u1", 1), Remaining: 3},
		{Outcome: purchase.LimitReached, Remaining: 3},
		{Outcome: purchase.Admitted, OrderNo: no("u2", 1), Remaining: 2},
		{Outcome: purchase.Replayed, OrderNo: no("u2", 1), Remaining: -1},
		{Outcome: purchase.Admitted, OrderNo: no("u2", 2), Remaining: 1},
		{Outcome: purchase.Admitted, OrderNo: no("u3", 1), Remaining: 0},
		{Outcome: purchase.SoldOut, Remaining: 0},
	}
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("purchase %d (%s %s): got %+v, want %+v", i, batch[i].User, batch[i].Nonce, res[i], want[i])
		}
	}
	checkBatchState(t, rdb, k, map[string]string{"u1": "1", "u2": "2", "u3": "1"}, 4)
	made, _ := rdb.HGetAll(ctx, k.Tokens).Result()
	if want := map[string]string{"n1": no("u1", 1), "n3": no("u2", 1), "n4": no("u2", 2), "n5": no("u3", 1)}; fmt.Sprint(made) != fmt.Sprint(want) {
		t.Errorf("tokens' records %v, want %v (refused purchases consume no token)", made, want)
	}
	msgs, _ := rdb.XRange(ctx, k.Stream, "-", "+").Result()
	for _, m := range msgs {
		if _, err := order.FromStream(m.Values); err != nil {
			t.Errorf("stream entry does not decode: %v", err)
		}
	}
}

// checkBatchState: the holders hash says holders, stock is 0, and the
// stream, the expiry set and the orders hash hold orders entries each.
func checkBatchState(t *testing.T, rdb redis.UniversalClient, k keys.SKU, holders map[string]string, orders int64) {
	t.Helper()
	ctx := context.Background()
	got, _ := rdb.HGetAll(ctx, k.Holders).Result()
	if fmt.Sprint(got) != fmt.Sprint(holders) {
		t.Errorf("holders %v, want %v", got, holders)
	}
	if seq, _ := rdb.HGetAll(ctx, k.Seq).Result(); fmt.Sprint(seq) != fmt.Sprint(holders) {
		t.Errorf("seq %v, want %v", seq, holders)
	}
	if st, _ := rdb.Get(ctx, k.Stock).Int64(); st != 0 {
		t.Errorf("stock %d, want 0", st)
	}
	x, _ := rdb.XLen(ctx, k.Stream).Result()
	z, _ := rdb.ZCard(ctx, k.Expiry).Result()
	o, _ := rdb.HLen(ctx, k.Orders).Result()
	if x != orders || z != orders || o != orders {
		t.Errorf("stream %d, expiry %d, orders %d; want %d each", x, z, o, orders)
	}
}

// TestBatcherCoalescesAndAnswersEach: many concurrent purchases through a
// batching Script (fewer calls than purchases) each get their own answer:
// exactly the stock is sold, one order per buyer, and a buyer who sends two
// tokens at once is still held to their limit.
func TestBatcherCoalescesAndAnswersEach(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	saleKey := testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(saleKey) {
		testutil.CleanupKeys(t, rdb, p)
	}
	var calls atomic.Int64
	s, err := purchase.New(rdb, saleKey, purchase.Options{Batch: true, AutoPipeline: true,
		Observe: func(op string, _ time.Duration, _ error) {
			if op == "evalsha" {
				calls.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	k := keys.ForSKU(saleKey, "x")
	const stock, buyers = 300, 400
	rdb.Set(ctx, k.Stock, stock, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]int{}
	for i := range buyers * 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := time.Now()
			user := fmt.Sprintf("u%d", i/2) // two tokens per buyer
			r, err := s.Purchase(ctx, purchase.Request{SKU: "x", User: user, Limit: 1, Amount: "1.00",
				Nonce: fmt.Sprintf("n%d", i), Now: now, Deadline: now.Add(time.Minute)})
			if err != nil {
				t.Error(err)
				return
			}
			if r.Outcome == purchase.Admitted {
				mu.Lock()
				admitted[user]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(admitted) != stock {
		t.Errorf("%d buyers admitted, want %d", len(admitted), stock)
	}
	for u, n := range admitted {
		if n != 1 {
			t.Errorf("%s admitted %d times with a limit of 1", u, n)
		}
	}
	if st, _ := rdb.Get(ctx, k.Stock).Int64(); st != 0 {
		t.Errorf("stock %d left", st)
	}
	if x, _ := rdb.XLen(ctx, k.Stream).Result(); x != stock {
		t.Errorf("stream %d entries, want %d", x, stock)
	}
	if c := calls.Load(); c >= buyers*2 {
		t.Errorf("%d purchases in %d script calls: no batching", buyers*2, c)
	} else {
		t.Logf("%d purchases in %d script calls", buyers*2, c)
	}
}
