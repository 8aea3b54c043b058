package pipeline_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// binary is the flashsale binary built once for the tests that kill it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flashsale-pipeline-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "flashsale")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/flashsale-dev/flashsale-operator").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build flashsale: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func redisAddr() string {
	if a := os.Getenv("FLASHSALE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return testutil.DefaultRedisAddr
}

// newSale returns a warmed sale in a fresh namespace with one SKU per stock
// given; partitions > 0 gives it spec.kafka.
func newSale(t *testing.T, rdb redis.UniversalClient, partitions int32, stocks ...int64) *v1alpha1.FlashSale {
	t.Helper()
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/sale") {
		testutil.CleanupKeys(t, rdb, p)
	}
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: "flashsale.dev/v1alpha1", Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sale"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Second)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
		},
	}
	for i, s := range stocks {
		fs.Spec.SKUs = append(fs.Spec.SKUs, v1alpha1.SKU{ID: fmt.Sprint(1001 + i), Stock: s, Price: "19.90", PerUserLimit: 1})
	}
	if partitions > 0 {
		fs.Spec.Kafka = &v1alpha1.Kafka{Partitions: partitions}
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Warm(context.Background(), rdb, fs); err != nil {
		t.Fatal(err)
	}
	return fs
}

// writeManifest writes fs as the YAML the worker reads with --file.
func writeManifest(t *testing.T, fs *v1alpha1.FlashSale) string {
	t.Helper()
	b, err := yaml.Marshal(fs)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "sale.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// buyer admits purchases through the real purchase script.
type buyer struct {
	t      *testing.T
	fs     *v1alpha1.FlashSale
	script *purchase.Script
	next   atomic.Int64
}

func newBuyer(t *testing.T, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) *buyer {
	s, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{AutoPipeline: true})
	if err != nil {
		t.Fatal(err)
	}
	return &buyer{t: t, fs: fs, script: s}
}

// buy admits n purchases, spread over the SKUs, 32 at a time; every one must be admitted.
func (b *buyer) buy(n int) {
	b.t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	work := make(chan int64, 64)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				sku := b.fs.Spec.SKUs[int(i)%len(b.fs.Spec.SKUs)].ID
				now := time.Now()
				res, err := b.script.Purchase(context.Background(), purchase.Request{
					SKU: sku, User: fmt.Sprintf("user-%d", i), Limit: 1, Amount: "19.90",
					Nonce: fmt.Sprintf("n%d", i), Now: now, Deadline: now.Add(15 * time.Minute),
				})
				if err == nil && res.Outcome != purchase.Admitted {
					err = fmt.Errorf("purchase %d: %s", i, res.Outcome)
				}
				if err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for range n {
		work <- b.next.Add(1)
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.t.Fatal(err)
	}
}

// newDB returns a fresh, migrated database and its DSN.
func newDB(t *testing.T) (*sql.DB, string) {
	t.Helper()
	return testutil.OrderDB(t)
}

// startKafka starts a kfake broker on port (0: any) persisting to dir ("" : memory).
func startKafka(t *testing.T, port int, dir string) *kfake.Cluster {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.GroupMinSessionTimeout(500 * time.Millisecond)}
	if dir != "" {
		opts = append(opts, kfake.DataDir(dir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runWorker runs the pipeline in-process until the test ends.
func runWorker(t *testing.T, fs *v1alpha1.FlashSale, rdb redis.UniversalClient, db *sql.DB, brokers []string, mod func(*worker.Config)) *worker.Worker {
	t.Helper()
	cfg := worker.Config{
		Sale: fs, Redis: rdb, DB: db, Brokers: brokers, PodID: "w-" + testutil.UniqueName(t),
		ClaimMinIdle: time.Second, SessionTimeout: time.Second,
		Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond},
		Logger:  testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30s")
		}
	})
	return w
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("PIPELINE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	_ = t
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func rows(t *testing.T, db *sql.DB, fs *v1alpha1.FlashSale) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM seckill_order WHERE sale = ?`, fs.SaleKey()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// streamLen sums the lengths of the sale's order streams (every bucket's).
func streamLen(t *testing.T, rdb redis.UniversalClient, fs *v1alpha1.FlashSale) int64 {
	t.Helper()
	var n int64
	for _, k := range orderstate.BucketsOf(fs).All(fs.SaleKey(), fs.SKUIDs()) {
		l, err := rdb.XLen(context.Background(), k.Stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += l
	}
	return n
}

// checkAllStored asserts that exactly n orders of the sale are in MySQL, each
// once, all shown created in Redis, and that the streams are empty with
// nothing pending.
func checkAllStored(t *testing.T, rdb redis.UniversalClient, db *sql.DB, fs *v1alpha1.FlashSale, n int) {
	t.Helper()
	ctx := context.Background()
	testutil.Eventually(t, 60*time.Second, fmt.Sprintf("%d rows", n), func() bool { return rows(t, db, fs) >= n })
	testutil.Eventually(t, 10*time.Second, "streams empty", func() bool { return streamLen(t, rdb, fs) == 0 })
	var total, distinctPurchases int
	if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT sku_id, user_id, seq) FROM seckill_order WHERE sale = ?`, fs.SaleKey()).
		Scan(&total, &distinctPurchases); err != nil {
		t.Fatal(err)
	}
	if total != n || distinctPurchases != n {
		t.Fatalf("rows: %d, distinct purchases: %d, want %d", total, distinctPurchases, n)
	}
	var created int
	for _, k := range orderstate.BucketsOf(fs).All(fs.SaleKey(), fs.SKUIDs()) {
		testutil.Eventually(t, 10*time.Second, "nothing pending in "+k.Stream, func() bool {
			p, err := rdb.XPending(ctx, k.Stream, keys.RelayGroup).Result()
			return err == nil && p.Count == 0
		})
		hs, err := rdb.HGetAll(ctx, k.Orders).Result()
		if err != nil {
			t.Fatal(err)
		}
		for no, v := range hs {
			if !strings.HasPrefix(v, "created ") {
				t.Fatalf("order %s shows %q, want created", no, v)
			}
			created++
		}
	}
	if created != n {
		t.Fatalf("%d orders show created in Redis, want %d", created, n)
	}
}

// committedOffsets sums the group's committed offsets over the topic's partitions.
func committedOffsets(t *testing.T, brokers []string, fs *v1alpha1.FlashSale) int64 {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	parts := make([]int32, fs.Spec.Kafka.Partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	topic := keys.Topic(fs.SaleKey())
	res, err := admin.ListConsumerGroupOffsets(keys.ConsumerGroup(fs.SaleKey()), map[string][]int32{topic: parts})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, b := range res.Blocks[topic] {
		if b.Offset > 0 {
			sum += b.Offset
		}
	}
	return sum
}
