package buckets_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// split is one SKU split into buckets, seeded by the test.
type split struct {
	rdb      redis.UniversalClient
	sale     string
	sku      string
	n        int
	declared int64
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

// buyScript stands in for the purchase script, for what transfers care
// about: a unit leaves the stock for a buyer's hands, or SOLD_OUT.
var buyScript = redis.NewScript(`
local s = tonumber(redis.call('GET', KEYS[1]) or '0')
if s <= 0 then return 0 end
redis.call('DECR', KEYS[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1`)

// returnScript stands in for the rollback: a returned unit pays the debt
// first (and leaves the sale), else goes back on sale.
var returnScript = redis.NewScript(`
local h = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if h <= 0 then return 0 end
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
local d = tonumber(redis.call('GET', KEYS[4]) or '0')
if d > 0 then
  redis.call('DECR', KEYS[4])
  redis.call('DECR', KEYS[2])
else
  redis.call('INCR', KEYS[1])
end
return 1`)

func buy(t testing.TB, rdb redis.UniversalClient, k keys.SKU, user string) bool {
	n, err := buyScript.Run(context.Background(), rdb, []string{k.Stock, k.Holders}, user).Int64()
	if err != nil {
		t.Errorf("buy: %v", err)
	}
	return n == 1
}

func giveBack(t testing.TB, rdb redis.UniversalClient, k keys.SKU, user string) {
	if err := returnScript.Run(context.Background(), rdb, []string{k.Stock, k.Initial, k.Holders, k.Debt}, user).Err(); err != nil {
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
		if n, _ := rdb.HLen(ctx, s.keys()[0].Outbox).Result(); n != 1 {
			t.Fatalf("%d outbox records after one transfer and one empty move, want 1", n)
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
			buy(t, rdb, k[1], "u"+strconv.Itoa(i))
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
