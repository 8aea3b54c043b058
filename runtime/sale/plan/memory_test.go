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

// TestPlanMemoryMatchesRedis warms a sale on a private redis-server (nobody
// else's keys move its used_memory), lets the expected buyers join its
// waiting room, be admitted and buy one unit each through the real scripts,
// and checks each step's used_memory delta per record against the plan's
// constant for it (warmed buckets, queued buyers, admissions, orders), and
// the plan's whole estimate against the whole delta: each within ±35%. A
// constant that is badly off fails it, even when the others make up for it
// in the total. The same without a waiting room.
func TestPlanMemoryMatchesRedis(t *testing.T) {
	for _, queued := range []bool{true, false} {
		t.Run(map[bool]string{true: "queue", false: "no-queue"}[queued], func(t *testing.T) {
			checkMemory(t, queued)
		})
	}
}

// step is what one step of the sale's life added to Redis.
type step struct {
	name    string
	records int64
	bytes   int64 // used_memory delta
	usec    int64 // Redis CPU in commands (INFO commandstats)
	want    int64 // the plan's bytes per record
}

func checkMemory(t *testing.T, queued bool) {
	const buyers = 12000
	srv := testutil.StartRedisServer(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	sale := memorySale(testutil.UniqueName(t), buyers)
	if !queued {
		sale.Spec.Queue = nil
	}
	// What a Redis holds once for every sale (the scripts, the keyspace's
	// own tables, the first stream) is not this sale's memory: another sale
	// warmed first takes it.
	if _, err := warm.Warm(ctx, rdb, memorySale("other", 10)); err != nil {
		t.Fatal(err)
	}
	p := plan.Compute(sale, plan.Topology{Primaries: 1}, plan.DefaultFigures(), nil)
	var steps []step
	mem, cpu := usedMemory(t, rdb), commandUsec(t, rdb)
	record := func(name string, records, want int64) {
		m, c := usedMemory(t, rdb), commandUsec(t, rdb)
		steps = append(steps, step{name, records, m - mem, c - cpu, want})
		mem, cpu = m, c
	}
	if _, err := warm.Warm(ctx, rdb, sale); err != nil {
		t.Fatal(err)
	}
	record("warmed buckets", int64(len(p.Memory.Buckets)), plan.BytesPerBucket)
	if queued {
		record("queued buyers", joinQueue(t, rdb, sale, buyers), plan.BytesPerQueued)
		record("admissions", admitAll(t, rdb, sale, buyers), plan.BytesPerAdmission)
	}
	bought := buy(t, rdb, sale, buyers)
	record("orders", bought, plan.BytesPerOrder)
	if bought != p.Memory.Orders {
		t.Fatalf("%d purchases were admitted, the plan expects %d orders", bought, p.Memory.Orders)
	}
	var measured int64
	for _, s := range steps {
		measured += s.bytes
		per := float64(s.bytes) / float64(s.records)
		if os.Getenv("FLASHSALE_PLAN_CALIBRATE") != "" {
			t.Logf("calibration: %d %s: %.0f B each (plan: %d), Redis CPU %.1f µs each", s.records, s.name, per, s.want, float64(s.usec)/float64(s.records))
		}
		if ratio := per / float64(s.want); ratio < 0.65 || ratio > 1.35 {
			t.Errorf("%s: %.0f bytes each in Redis, the plan counts %d (ratio %.2f, want 0.65–1.35)", s.name, per, s.want, ratio)
		}
	}
	if ratio := float64(p.Memory.Bytes) / float64(measured); ratio < 0.65 || ratio > 1.35 {
		t.Errorf("plan estimates %d bytes of Redis memory, used_memory grew by %d (ratio %.2f, want 0.65–1.35)", p.Memory.Bytes, measured, ratio)
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

// commandUsec is the Redis CPU spent in commands so far: the sum of INFO
// commandstats' usec.
func commandUsec(t *testing.T, rdb redis.UniversalClient) int64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for line := range strings.SplitSeq(info, "\r\n") {
		_, stats, ok := strings.Cut(line, "usec=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(stats, ",")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		sum += n
	}
	return sum
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
