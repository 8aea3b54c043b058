package warm_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

func sale(t *testing.T, rdb redis.UniversalClient, stock int64) *v1alpha1.FlashSale {
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: testutil.UniqueName(t), Name: "s"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(time.Now()), EndTime: metav1.NewTime(time.Now().Add(time.Hour)),
			SKUs: []v1alpha1.SKU{{ID: "a", Stock: stock, Price: "1.00", PerUserLimit: 1}},
		},
	}
	fs.SetDefaults()
	for _, p := range keys.Patterns(fs.SaleKey()) {
		testutil.CleanupKeys(t, rdb, p)
	}
	return fs
}

// TestWarmIdempotentAndRaises: warming again never resets a live counter; a
// raise adds exactly the difference, once; a lowering takes back at most
// what is unsold and owes the rest (the debt), which a raise cancels first.
func TestWarmIdempotentAndRaises(t *testing.T) {
	t.Run("standalone", func(t *testing.T) { warmScenario(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { warmScenario(t, testutil.RedisCluster(t).Client(t)) })
}

func warmScenario(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	fs := sale(t, rdb, 10)
	k := keys.ForSKU(fs.SaleKey(), "a")
	step := func(want string, delta, remaining, initial int64) {
		t.Helper()
		res, err := warm.Warm(ctx, rdb, fs)
		if err != nil {
			t.Fatal(err)
		}
		got := res.SKUs[0]
		if got.Action != want || got.Delta != delta || got.Remaining != remaining || got.Initial != initial {
			t.Fatalf("warm: %+v, want %s delta %d remaining %d initial %d", got, want, delta, remaining, initial)
		}
	}
	step("created", 10, 10, 10)
	step("unchanged", 0, 10, 10)
	// Buyers take 4 units; re-warming must not give them back.
	rdb.DecrBy(ctx, k.Stock, 4)
	step("unchanged", 0, 6, 10)
	fs.Spec.SKUs[0].Stock = 15
	step("raised", 5, 11, 15)
	step("unchanged", 0, 11, 15) // the raise happened once
	fs.Spec.SKUs[0].Stock = 3
	// Only the 11 unsold units can be taken back now; the 4 sold are owed:
	// initial 4 = 0 on sale + 4 held, declared 3 = initial 4 − debt 1.
	step("lowered", -11, 0, 4)
	if n, _ := rdb.Get(ctx, k.Stock).Int64(); n != 0 {
		t.Fatalf("stock %d", n)
	}
	if n, _ := rdb.Get(ctx, k.Debt).Int64(); n != 1 {
		t.Fatalf("debt %d after lowering 15 → 3 with 4 sold, want 1", n)
	}
	step("unchanged", 0, 0, 4) // the debt keeps the declared 3: no second cut
	fs.Spec.SKUs[0].Stock = 4
	step("raised", 0, 0, 4) // raising by the debt cancels it and adds nothing
	if n, err := rdb.Exists(ctx, k.Debt).Result(); err != nil || n != 0 {
		t.Fatalf("debt key left after it was cancelled (%d, %v)", n, err)
	}
	groups, err := rdb.XInfoGroups(ctx, k.Stream).Result()
	if err != nil || len(groups) != 1 || groups[0].Name != keys.RelayGroup {
		t.Fatalf("relay group: %v %v", groups, err)
	}
	ok, err := rdb.ScriptExists(ctx, purchase.SHA()).Result()
	if err != nil || !ok[0] {
		t.Fatalf("script not loaded: %v %v", ok, err)
	}
}

func TestPausedSwitch(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := sale(t, rdb, 1)
	fs.Spec.Paused = true
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	if sw, err := switches.Get(ctx, rdb, fs.SaleKey()); err != nil || !sw.Paused {
		t.Fatalf("switches %+v, %v: want paused", sw, err)
	}
}

// TestHeldSwitch: warming leaves the go-live gate absent (not held), SetHeld
// flips it both ways, and warming again never releases a hold.
func TestHeldSwitch(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := sale(t, rdb, 1)
	held := func() switches.State {
		t.Helper()
		sw, err := switches.Get(ctx, rdb, fs.SaleKey())
		if err != nil {
			t.Fatal(err)
		}
		return sw
	}
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	if sw := held(); sw.Held {
		t.Fatalf("warm set the held switch: %+v", sw)
	}
	if err := switches.SetHeld(ctx, rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	if sw := held(); !sw.Held {
		t.Fatalf("switches %+v after SetHeld(true)", sw)
	}
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	if sw := held(); !sw.Held {
		t.Fatalf("switches %+v after warming again, want the hold kept", sw)
	}
	if err := switches.SetHeld(ctx, rdb, fs.SaleKey(), false); err != nil {
		t.Fatal(err)
	}
	// The other switches are their own fields: SetHeld never touched them.
	if sw := held(); sw != (switches.State{}) {
		t.Fatalf("switches %+v after SetHeld(false), want all off", sw)
	}
}
