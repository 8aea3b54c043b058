package plan_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestPlanMemoryMatchesRedis warms a sale with a waiting room on a private
// redis-server (nobody else's keys move its used_memory), lets the expected
// buyers join the queue and buy one unit each through the real purchase
// script, and checks the plan's memory estimate against the used_memory
// delta: within ±35%. Constants that are badly off fail it.
func TestPlanMemoryMatchesRedis(t *testing.T) {
	const buyers = 12000
	srv := testutil.StartRedisServer(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	sale := memorySale(testutil.UniqueName(t), buyers)

	// What a Redis holds once for every sale (the scripts, the keyspace's
	// own tables, the first stream) is not this sale's memory: another sale
	// warmed first takes it.
	if _, err := warm.Warm(ctx, rdb, memorySale("other", 10)); err != nil {
		t.Fatal(err)
	}
	before := usedMemory(t, rdb)
	if _, err := warm.Warm(ctx, rdb, sale); err != nil {
		t.Fatal(err)
	}
	warmedOnly := usedMemory(t, rdb)
	queued := joinQueue(t, rdb, sale, buyers)
	joined := usedMemory(t, rdb)
	admitted := admitAll(t, rdb, sale, buyers)
	warmed := usedMemory(t, rdb)
	bought := buy(t, rdb, sale, buyers)
	after := usedMemory(t, rdb)

	p := plan.Compute(sale, plan.Topology{Primaries: 1}, plan.DefaultFigures(), nil)
	measured := after - before
	est := p.Memory.Bytes
	if os.Getenv("FLASHSALE_PLAN_CALIBRATE") != "" {
		t.Logf("calibration: warm %d B (%d buckets); %d queued %.0f B each; %d admitted %.0f B each; %d orders %.0f B each; total %d, estimate %d",
			warmedOnly-before, len(p.Memory.Buckets), queued, float64(joined-warmedOnly)/float64(queued),
			admitted, float64(warmed-joined)/float64(admitted), bought, float64(after-warmed)/float64(bought), measured, est)
	}
	if bought != p.Memory.Orders {
		t.Fatalf("%d purchases were admitted, the plan expects %d orders", bought, p.Memory.Orders)
	}
	if ratio := float64(est) / float64(measured); ratio < 0.65 || ratio > 1.35 {
		t.Fatalf("plan estimates %d bytes of Redis memory, used_memory grew by %d (ratio %.2f, want 0.65–1.35)", est, measured, ratio)
	}
}

// memorySale is a queued sale of two SKUs, one split into two buckets, with
// stock for all buyers.
func memorySale(name string, buyers int64) *v1alpha1.FlashSale {
	now := time.Now()
	return &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: "plan", Name: name},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Minute)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
			SKUs: []v1alpha1.SKU{
				{ID: "1001", Stock: buyers / 2, Price: "1.00", PerUserLimit: 1, Buckets: 2},
				{ID: "1002", Stock: buyers - buyers/2, Price: "1.00", PerUserLimit: 1, Buckets: 1},
			},
			Queue:    &v1alpha1.Queue{AdmitPerSecond: 1000, Overbook: "1.0"},
			Expected: &v1alpha1.Expected{Buyers: buyers},
		},
	}
}

// joinQueue lets n buyers join the sale's waiting room before its start.
func joinQueue(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, n int) int64 {
	cfg, _ := queue.ConfigOf(sale)
	cfg.Start = time.Now().Add(time.Hour) // all join before the start
	q := queue.New(rdb, sale.SaleKey(), cfg)
	var joined int64
	var mu sync.Mutex
	parallel(t, n, func(i int) error {
		p, err := q.Join(context.Background(), buyerID(i), time.Now())
		if err == nil && p.New {
			mu.Lock()
			joined++
			mu.Unlock()
		}
		return err
	})
	return joined
}

// admitAll admits the queued buyers (up to n) once the sale has started.
func admitAll(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, n int64) int64 {
	cfg, _ := queue.ConfigOf(sale)
	cfg.AdmitPerSecond = 1e6
	q := queue.New(rdb, sale.SaleKey(), cfg)
	for {
		st, err := q.Admit(context.Background(), time.Now(), n)
		if err != nil {
			t.Fatal(err)
		}
		if st.New == 0 || st.Outstanding >= n {
			return st.Outstanding
		}
	}
}

// buy makes buyer i purchase one unit of the sale's SKUs in turn (half each,
// as the stock), each with a fresh token nonce, through the purchase script
// in its home bucket; it returns the purchases admitted.
func buy(t *testing.T, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, n int) int64 {
	s, err := purchase.New(rdb, sale.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var admitted int64
	var mu sync.Mutex
	parallel(t, n, func(i int) error {
		sku := sale.Spec.SKUs[i%2]
		user := buyerID(i)
		now := time.Now()
		r, err := s.Purchase(context.Background(), purchase.Request{
			SKU: sku.ID, Bucket: homeBucket(user, sku.BucketCount()), Buckets: sku.BucketCount(),
			User: user, Limit: 1, Amount: "1.00", Nonce: nonce(t), Now: now, Deadline: now.Add(15 * time.Minute),
		})
		if err == nil && r.Outcome == purchase.Admitted {
			mu.Lock()
			admitted++
			mu.Unlock()
		}
		return err
	})
	return admitted
}

// parallel runs f(0..n-1) on 8 goroutines and fails the test on an error.
func parallel(t *testing.T, n int, f func(i int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// buyerID is what a shop's gateway puts in X-User-ID: a numeric account id.
func buyerID(i int) string { return "u" + strconv.Itoa(100000000+i) }

func homeBucket(user string, n int) int {
	if n <= 1 {
		return 0
	}
	return keys.Home(user, n)
}

// nonce is a token nonce as the seckill pods send it: 16 random bytes,
// unpadded base64url.
func nonce(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func usedMemory(t *testing.T, rdb redis.UniversalClient) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal(fmt.Errorf("no used_memory in INFO memory"))
	return 0
}
