package buckets_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// split is one SKU split into buckets, seeded by the test.
type split struct {
	rdb      redis.UniversalClient
	sale     string
	sku      string
	n        int
	declared int64
	purchase *purchase.Script
}

// seed makes a sale whose SKU "a" is split into len(stocks) buckets with
// those stocks (and nothing sold), as warm-up would.
func seed(t *testing.T, rdb redis.UniversalClient, stocks ...int64) *split {
	t.Helper()
	s := &split{rdb: rdb, sale: testutil.UniqueName(t) + "/s", sku: "a", n: len(stocks)}
	for _, p := range keys.Patterns(s.sale) {
		testutil.CleanupKeys(t, rdb, p)
	}
	ctx := context.Background()
	var err error
	if s.purchase, err = purchase.New(rdb, s.sale, purchase.Options{Batch: true}); err != nil {
		t.Fatal(err)
	}
	for b, k := range s.keys() {
		if err := rdb.Set(ctx, k.Stock, stocks[b], 0).Err(); err != nil {
			t.Fatal(err)
		}
		rdb.Set(ctx, k.Initial, stocks[b], 0)
		s.declared += stocks[b]
	}
	return s
}

func (s *split) keys() []keys.SKU { return keys.Buckets(s.sale, s.sku, s.n) }

// buy buys one unit in bucket b through the real purchase script (batched,
// as the seckill pods run it) and returns its order number, or "" when the
// bucket is sold out.
func (s *split) buy(t testing.TB, b int, user string) string {
	now := time.Now()
	res, err := s.purchase.Purchase(context.Background(), purchase.Request{SKU: s.sku, Bucket: b, Buckets: s.n,
		User: user, Limit: 100, Amount: "1", Nonce: user, Now: now, Deadline: now.Add(time.Hour)})
	switch {
	case err != nil:
		t.Errorf("buy in bucket %d: %v", b, err)
	case res.Outcome == purchase.Admitted:
		return res.OrderNo
	case res.Outcome != purchase.SoldOut:
		t.Errorf("buy in bucket %d: %+v", b, res)
	}
	return ""
}

// giveBack returns the unit of an order through the real release script
// (the rollback's): it pays its bucket's debt first, else goes on sale.
func (s *split) giveBack(t testing.TB, orderNo, user string) {
	o := &order.Order{OrderNo: orderNo, Sale: s.sale, SKU: s.sku, User: user}
	if _, err := orderstate.ReleaseUnit(context.Background(), s.rdb, o, s.n); err != nil {
		t.Errorf("return: %v", err)
	}
}

// state is what the law speaks of, per bucket and summed.
type state struct {
	figs     []buckets.Figures
	held     []int64 // from the holders hashes
	inFlight int64
}

func (s *split) state(t *testing.T) state {
	t.Helper()
	ctx := context.Background()
	figs, err := buckets.Read(ctx, s.rdb, s.sale, s.sku, s.n)
	if err != nil {
		t.Fatal(err)
	}
	st := state{figs: figs}
	for _, k := range s.keys() {
		var h int64
		vals, err := s.rdb.HVals(ctx, k.Holders).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			n, _ := strconv.ParseInt(v, 10, 64)
			h += n
		}
		st.held = append(st.held, h)
	}
	if st.inFlight, err = buckets.InFlight(ctx, s.rdb, s.sale, s.sku, s.n); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkLaw asserts the conservation law: per bucket initial = stock + held
// and stock ≥ 0; per SKU Σ(initial − debt) + in flight = declared.
func (s *split) checkLaw(t *testing.T) state {
	t.Helper()
	st := s.state(t)
	sum := st.inFlight
	for b, f := range st.figs {
		if f.Stock < 0 || f.Debt < 0 || f.Initial != f.Stock+st.held[b] {
			t.Errorf("bucket %d: %+v with %d held breaks initial = stock + held", b, f, st.held[b])
		}
		sum += f.Initial - f.Debt
	}
	if sum != s.declared {
		t.Errorf("Σ(initial − debt) + in flight %d = %d, declared %d (%+v)", st.inFlight, sum, s.declared, st.figs)
	}
	return st
}

func (st state) stock() (sum int64) {
	for _, f := range st.figs {
		sum += f.Stock
	}
	return sum
}

func (st state) sold() (sum int64) {
	for _, h := range st.held {
		sum += h
	}
	return sum
}

// both runs a test on the standalone Redis and on the 3-master cluster.
func both(t *testing.T, f func(t *testing.T, rdb redis.UniversalClient)) {
	t.Run("standalone", func(t *testing.T) { f(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { f(t, testutil.RedisCluster(t).Client(t)) })
}

// TestMoveTakesAtMostTheStock: a move gives what the source has and no
// more, and a move from an empty bucket leaves no record at all.
func TestMoveTakesAtMostTheStock(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 3, 5, 0)
		m, err := buckets.Move(ctx, rdb, s.sale, s.sku, s.n, 0, 1, 10)
		if err != nil || m != 3 {
			t.Fatalf("Move 10 from a bucket of 3: moved %d, %v", m, err)
		}
		m, err = buckets.Move(ctx, rdb, s.sale, s.sku, s.n, 0, 2, 1)
		if err != nil || m != 0 {
			t.Fatalf("Move from an empty bucket: moved %d, %v", m, err)
		}
		if v, _ := rdb.HVals(ctx, s.keys()[0].Outbox).Result(); len(v) != 1 || v[0] != "-" {
			t.Fatalf("outbox records %v after a completed transfer and an empty move, want one closed", v)
		}
		if n, _ := rdb.HLen(ctx, s.keys()[2].Inbox).Result(); n != 0 {
			t.Fatalf("the empty move took %d transfers into bucket 2", n)
		}
		st := s.checkLaw(t)
		if st.figs[0].Stock != 0 || st.figs[1].Stock != 8 || st.figs[2].Stock != 0 || st.inFlight != 0 {
			t.Fatalf("after the moves: %+v, in flight %d", st.figs, st.inFlight)
		}
		if _, err := buckets.Move(ctx, rdb, s.sale, s.sku, s.n, 1, 3, 1); err == nil {
			t.Fatal("Move to bucket 3 of 3 accepted")
		}
	})
}

// TestTakeIntoDebtPaysItFirst: units moved into a bucket that owes units
// pay the debt (and leave the sale) before any goes on sale there.
func TestTakeIntoDebtPaysItFirst(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		s := seed(t, rdb, 10, 3)
		k := s.keys()
		for i := range 3 {
			s.buy(t, 1, "u"+strconv.Itoa(i))
		}
		// A lowering by 2 found bucket 1 out: it owes 2 of the 3 its buyers hold.
		rdb.Set(ctx, k[1].Debt, 2, 0)
		s.declared -= 2
		s.checkLaw(t)
		m, err := buckets.Move(ctx, rdb, s.sale, s.sku, s.n, 0, 1, 5)
		if err != nil || m != 5 {
			t.Fatalf("moved %d, %v", m, err)
		}
		st := s.checkLaw(t)
		if f := st.figs[1]; f.Debt != 0 || f.Stock != 3 || f.Initial != 6 {
			t.Fatalf("bucket 1 after taking 5 with a debt of 2: %+v, want debt 0, stock 3, initial 6", f)
		}
	})
}
