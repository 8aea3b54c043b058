// Command pipelinebench measures the order pipeline on this machine (run by
// `make bench` through hack/bench.sh, or `go run ./hack/pipelinebench`):
//
//  1. fill the SKU streams of a fresh sale with N admitted orders through the
//     real purchase script (pipelined EVALSHA);
//  2. time the worker moving them from the streams to MySQL rows, through an
//     in-process kfake Kafka (relay + consumer), and again in Redis-only mode;
//  3. time single-row INSERTs (one autocommit INSERT per order, one
//     connection: the naive consumer) of the same orders into a fresh table;
//
// and print orders/s for each and the ratios. It needs the Redis and MariaDB
// the tests use (bash hack/services.sh); it creates and drops its own
// databases and deletes its keys.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

type options struct {
	n           int
	skus        int
	partitions  int
	batch       int
	single      int
	readers     int
	redisAddr   string
	mysqlDSN    string
	profile     string
	modes       string
	verboseLogs bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "admitted orders per pipeline run")
	flag.IntVar(&o.skus, "skus", 4, "SKUs of the sale (one stream each)")
	flag.IntVar(&o.partitions, "partitions", 12, "Kafka partitions of the order topic")
	flag.IntVar(&o.batch, "batch", 500, "worker batch size")
	flag.IntVar(&o.readers, "readers", 2, "readers per SKU stream in Redis-only mode")
	flag.IntVar(&o.single, "single", 20000, "orders inserted one by one for the baseline (0: all n)")
	flag.StringVar(&o.redisAddr, "redis-addr", envOr("REDIS_ADDR", envOr("FLASHSALE_TEST_REDIS_ADDR", "127.0.0.1:6379")), "standalone Redis")
	flag.StringVar(&o.mysqlDSN, "mysql-dsn", envOr("FLASHSALE_TEST_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/"), "MariaDB server DSN (its database name is ignored)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of each pipeline run's stream → MySQL phase (not the fill) to this file, suffixed .kafka or .redis-only")
	flag.StringVar(&o.modes, "modes", "kafka,redis-only,single-row", "what to measure")
	flag.BoolVar(&o.verboseLogs, "v", false, "worker logs to stderr")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "pipelinebench:", err)
		os.Exit(1)
	}
}

type result struct {
	name    string
	orders  int
	elapsed time.Duration
}

func (r result) rate() float64 { return float64(r.orders) / r.elapsed.Seconds() }

func run(o options) error {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 64})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w (start it with bash hack/services.sh)", o.redisAddr, err)
	}
	server, err := mysql.ParseDSN(o.mysqlDSN)
	if err != nil {
		return err
	}
	fmt.Printf("pipeline benchmark: n=%d orders, %d SKUs, batch %d, %d Kafka partitions, GOMAXPROCS=%d\n",
		o.n, o.skus, o.batch, o.partitions, runtime.GOMAXPROCS(0))
	var (
		results []result
		sample  []order.Order
	)
	for _, mode := range strings.Split(o.modes, ",") {
		switch mode {
		case "kafka", "redis-only":
			r, orders, err := pipelineRun(ctx, o, rdb, server, mode)
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			results = append(results, r)
			if sample == nil {
				sample = orders
			}
		case "single-row":
			if sample == nil {
				fs, cleanup, err := fill(ctx, o, rdb, "")
				if err != nil {
					return err
				}
				sample, err = streamOrders(ctx, rdb, fs)
				cleanup()
				if err != nil {
					return err
				}
			}
			r, err := singleRow(ctx, o, server, sample)
			if err != nil {
				return fmt.Errorf("single-row: %w", err)
			}
			results = append(results, r)
		default:
			return fmt.Errorf("unknown mode %q", mode)
		}
	}
	var base float64
	for _, r := range results {
		if r.name == "single-row INSERT" {
			base = r.rate()
		}
	}
	fmt.Printf("\n%-22s %9s %9s %11s %9s\n", "path", "orders", "seconds", "orders/s", "vs single")
	for _, r := range results {
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.1fx", r.rate()/base)
		}
		fmt.Printf("%-22s %9d %9.2f %11.0f %9s\n", r.name, r.orders, r.elapsed.Seconds(), r.rate(), ratio)
	}
	fmt.Println("\ntargets: pipeline >= 20000 orders/s and >= 10x single-row")
	// What `flashsale plan` sizes MySQL with (--pipeline-rate), next to this run.
	fmt.Printf("%s (flashsale plan; the pipeline figure is the Kafka path above, measured once and kept in runtime/sale/plan/figures.go)\n", plan.DefaultFigures())
	return nil
}

// fill creates and warms a sale (with spec.kafka when partitions>0 in kafka
// mode) and admits o.n orders through the purchase script.
func fill(ctx context.Context, o options, rdb *redis.Client, mode string) (*v1alpha1.FlashSale, func(), error) {
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: "flashsale.dev/v1alpha1", Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench-" + randHex(4), Name: "pipeline"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Second)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
		},
	}
	per := (o.n + o.skus - 1) / o.skus
	for i := range o.skus {
		fs.Spec.SKUs = append(fs.Spec.SKUs, v1alpha1.SKU{ID: fmt.Sprint(2001 + i), Stock: int64(per), Price: "99.00", PerUserLimit: 1})
	}
	if mode == "kafka" {
		fs.Spec.Kafka = &v1alpha1.Kafka{Partitions: int32(o.partitions)}
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		for _, p := range keys.Patterns(fs.SaleKey()) {
			it := rdb.Scan(ctx, 0, p, 1000).Iterator()
			for it.Next(ctx) {
				rdb.Unlink(ctx, it.Val())
			}
		}
	}
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		cleanup()
		return nil, nil, err
	}
	sha := purchase.SHA()
	start := time.Now()
	const pipe = 1000
	for i := 0; i < o.n; i += pipe {
		p := rdb.Pipeline()
		for j := i; j < min(i+pipe, o.n); j++ {
			sku := fs.Spec.SKUs[j%o.skus].ID
			user := fmt.Sprintf("u%07d", j)
			t := time.Now()
			ks, args := purchase.Call(fs.SaleKey(), []purchase.Request{{SKU: sku, User: user, Limit: 1, Amount: "99.00",
				Nonce: user, Now: t, Deadline: t.Add(15 * time.Minute)}})
			p.EvalSha(ctx, sha, ks, args...)
		}
		cmds, err := p.Exec(ctx)
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("purchase: %w", err)
		}
		for _, c := range cmds {
			if v, _ := c.(*redis.Cmd).Slice(); len(v) == 0 || v[0] != "OK" {
				cleanup()
				return nil, nil, fmt.Errorf("purchase not admitted: %v", v)
			}
		}
	}
	el := time.Since(start)
	fmt.Printf("  filled %d orders into %d streams in %.2fs (%.0f purchases/s, pipelined)\n", o.n, o.skus, el.Seconds(), float64(o.n)/el.Seconds())
	return fs, cleanup, nil
}

// streamOrders reads the orders waiting in the sale's streams.
func streamOrders(ctx context.Context, rdb *redis.Client, fs *v1alpha1.FlashSale) ([]order.Order, error) {
	var out []order.Order
	for _, s := range fs.Spec.SKUs {
		msgs, err := rdb.XRange(ctx, keys.ForSKU(fs.SaleKey(), s.ID).Stream, "-", "+").Result()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			o, err := order.FromStream(m.Values)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
	}
	return out, nil
}

func freshDB(ctx context.Context, server *mysql.Config) (*sql.DB, func(), error) {
	admin := *server
	admin.DBName = ""
	adb, err := sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		return nil, nil, err
	}
	name := "flashsale_bench_" + randHex(4)
	if _, err := adb.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		_ = adb.Close()
		return nil, nil, fmt.Errorf("create database: %w", err)
	}
	cfg := *server
	cfg.DBName = name
	// One round trip per statement (no server-side prepare), for every path alike.
	cfg.InterpolateParams = true
	db, err := orderdb.Open(cfg.FormatDSN())
	if err == nil {
		_, err = orderdb.Migrate(ctx, db)
	}
	drop := func() {
		if db != nil {
			_ = db.Close()
		}
		_, _ = adb.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`")
		_ = adb.Close()
	}
	if err != nil {
		drop()
		return nil, nil, err
	}
	return db, drop, nil
}

// pipelineRun fills a fresh sale with o.n orders and times the worker moving
// them to a fresh database in mode ("kafka" or "redis-only"); it returns the
// orders too, for the single-row baseline.
func pipelineRun(ctx context.Context, o options, rdb *redis.Client, server *mysql.Config, mode string) (result, []order.Order, error) {
	fmt.Printf("%s:\n", mode)
	fs, cleanup, err := fill(ctx, o, rdb, mode)
	if err != nil {
		return result{}, nil, err
	}
	defer cleanup()
	orders, err := streamOrders(ctx, rdb, fs)
	if err != nil {
		return result{}, nil, err
	}
	db, drop, err := freshDB(ctx, server)
	if err != nil {
		return result{}, nil, err
	}
	defer drop()
	var brokers []string
	name := "redis-only"
	if mode == "kafka" {
		kc, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return result{}, nil, err
		}
		defer kc.Close()
		brokers = kc.ListenAddrs()
		name = "kafka (kfake)"
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verboseLogs {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	reg := prometheus.NewRegistry()
	w, err := worker.New(worker.Config{
		Sale: fs, Redis: rdb, DB: db, Brokers: brokers, PodID: "bench", BatchSize: o.batch,
		SinkConcurrency: o.readers, Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: time.Second},
		Registry: reg, Logger: log,
	})
	if err != nil {
		return result{}, nil, err
	}
	// Profile only the stream → MySQL phase: the fill would dominate a
	// profile of the whole run.
	stopProfile := func() {}
	if o.profile != "" {
		f, err := os.Create(o.profile + "." + mode)
		if err != nil {
			return result{}, nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return result{}, nil, err
		}
		stopProfile = pprof.StopCPUProfile
		defer stopProfile()
	}
	t, err := drain(ctx, w, reg, o.n, mode == "kafka", stopProfile)
	if err != nil {
		return result{}, nil, err
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM seckill_order`).Scan(&n); err != nil {
		return result{}, nil, err
	}
	if n != o.n {
		return result{}, nil, fmt.Errorf("%d rows in MySQL, want %d", n, o.n)
	}
	fmt.Printf("  stream → MySQL: %d rows in %.2fs\n", n, t.elapsed.Seconds())
	t.print(reg, o.n)
	return result{name: name, orders: o.n, elapsed: t.elapsed}, orders, nil
}

// timing is what one pipeline run measured.
type timing struct {
	// elapsed until the last order was committed; firstRow until the first
	// was; relayDone until the relay had produced them all (Kafka mode).
	elapsed, firstRow, relayDone time.Duration
	// cpu0 and cpu1 are cpuTimes at the start and the end.
	cpu0, cpu1 map[string]time.Duration
	// idle receives the machine's idle CPU percentages over the run.
	idle <-chan []int
}

// drain runs w until it has committed n orders, then stops it; stopProfile
// is called as soon as they are all in. Progress comes from the worker's own
// counter of committed rows, not a COUNT(*) (which would compete with the
// inserts for MariaDB's CPU); the caller counts the rows in MySQL once at the
// end.
func drain(ctx context.Context, w *worker.Worker, reg *prometheus.Registry, n int, kafka bool, stopProfile func()) (timing, error) {
	var t timing
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	t.cpu0 = cpuTimes()
	idleDone := make(chan struct{})
	t.idle = sampleIdle(250*time.Millisecond, idleDone)
	start := time.Now()
	go func() { done <- w.Run(wctx) }()
	for inserted(reg) < float64(n) {
		time.Sleep(5 * time.Millisecond)
		if t.firstRow == 0 && inserted(reg) > 0 {
			t.firstRow = time.Since(start)
		}
		if t.relayDone == 0 && kafka && counter(reg, "flashsale_worker_orders_relayed_total") >= float64(n) {
			t.relayDone = time.Since(start)
		}
		if time.Since(start) > 5*time.Minute {
			stop()
			return t, fmt.Errorf("only %.0f of %d rows after 5 minutes", inserted(reg), n)
		}
	}
	t.elapsed = time.Since(start)
	t.cpu1 = cpuTimes()
	close(idleDone)
	stopProfile() // the caller's deferred call is then a no-op
	stop()
	return t, <-done
}

// print gives the per-stage evidence of a run of n orders: where the
// machine's CPU went (seconds of CPU per second of wall time; the machine has
// runtime.NumCPU() of them), when the relay had produced everything, and the
// mean Kafka produce and MySQL commit latencies (from the worker's own
// histograms), to see which stage is the bottleneck.
func (t timing) print(reg *prometheus.Registry, n int) {
	var (
		parts []string
		total time.Duration
	)
	for _, p := range []string{"bench", "mariadbd", "redis-server"} {
		parts = append(parts, fmt.Sprintf("%s %.2f", p, (t.cpu1[p]-t.cpu0[p]).Seconds()/t.elapsed.Seconds()))
		total += t.cpu1[p] - t.cpu0[p]
	}
	parts = append(parts, fmt.Sprintf("= %.1fµs CPU per order", float64(total.Microseconds())/float64(n)))
	fmt.Printf("  CPU cores busy (of %d): %s\n", runtime.NumCPU(), strings.Join(parts, ", "))
	fmt.Printf("  machine CPU idle %%, per 250ms: %v\n", <-t.idle)
	fmt.Printf("  first batch committed after %.2fs\n", t.firstRow.Seconds())
	if t.relayDone > 0 {
		fmt.Printf("  relay: all %d produced+acked after %.2fs; %s\n", n, t.relayDone.Seconds(), histo(reg, "flashsale_worker_produce_seconds", "produce"))
	}
	fmt.Printf("  mysql: %s; %s\n", histo(reg, "flashsale_worker_commit_seconds", "commit"), histo(reg, "flashsale_worker_batch_size", "batch"))
}

func singleRow(ctx context.Context, o options, server *mysql.Config, orders []order.Order) (result, error) {
	fmt.Println("single-row:")
	if o.single > 0 && o.single < len(orders) {
		orders = orders[:o.single]
	}
	db, drop, err := freshDB(ctx, server)
	if err != nil {
		return result{}, err
	}
	defer drop()
	db.SetMaxOpenConns(1)
	start := time.Now()
	for i := range orders {
		x := &orders[i]
		if _, err := db.ExecContext(ctx, `INSERT INTO seckill_order
  (order_no, sale, sku_id, user_id, seq, amount, status, pay_deadline, admitted_at) VALUES (?,?,?,?,?,?,0,?,?)`,
			x.OrderNo, x.Sale, x.SKU, x.User, x.N, x.Amount, x.Deadline.UTC(), x.AdmittedAt.UTC()); err != nil {
			return result{}, err
		}
	}
	el := time.Since(start)
	fmt.Printf("  %d autocommit INSERTs, one connection, in %.2fs\n", len(orders), el.Seconds())
	return result{name: "single-row INSERT", orders: len(orders), elapsed: el}, nil
}

// inserted is the worker's count of committed orders (new or duplicate).
func inserted(reg *prometheus.Registry) float64 {
	mfs, _ := reg.Gather()
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "flashsale_worker_orders_inserted_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// counter is the value of the counter name summed over its labels.
func counter(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// histo summarises the histogram name: count and mean.
func histo(reg *prometheus.Registry, name, what string) string {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h.GetSampleCount() == 0 {
				break
			}
			mean := h.GetSampleSum() / float64(h.GetSampleCount())
			if strings.HasSuffix(name, "_seconds") {
				return fmt.Sprintf("%d %ss, mean %.1fms, total %.2fs", h.GetSampleCount(), what, mean*1000, h.GetSampleSum())
			}
			return fmt.Sprintf("%d %ses, mean %.0f", h.GetSampleCount(), what, mean)
		}
	}
	return "no " + what + "s"
}

// cpuTimes is the CPU time (user+system) used so far by this process
// ("bench") and by the mariadbd and redis-server processes, read from /proc
// (Linux only; missing entries are zero).
func cpuTimes() map[string]time.Duration {
	out := map[string]time.Duration{}
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		out["bench"] = statCPU(string(b))
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if name != "mariadbd" && name != "redis-server" && name != "mysqld" {
			continue
		}
		if name == "mysqld" {
			name = "mariadbd"
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			out[name] += statCPU(string(b))
		}
	}
	return out
}

// sampleIdle measures the machine's idle CPU share (from /proc/stat) every
// interval until done closes, then sends the percentages: it shows whether
// the pipeline is waiting (idle CPU) or CPU-bound, and when.
func sampleIdle(interval time.Duration, done <-chan struct{}) <-chan []int {
	out := make(chan []int, 1)
	read := func() (idle, total int64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			var v int64
			_, _ = fmt.Sscan(f, &v)
			total += v
			if i == 3 || i == 4 { // idle, iowait
				idle += v
			}
		}
		return idle, total
	}
	go func() {
		var pct []int
		i0, t0 := read()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				out <- pct
				return
			case <-tick.C:
				i1, t1 := read()
				if t1 > t0 {
					pct = append(pct, int(100*(i1-i0)/(t1-t0)))
				}
				i0, t0 = i1, t1
			}
		}
	}()
	return out
}

// statCPU is utime+stime of a /proc/PID/stat line, assuming 100 ticks/s.
func statCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0
	}
	var u, s int64
	_, _ = fmt.Sscan(f[11], &u)
	_, _ = fmt.Sscan(f[12], &s)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
