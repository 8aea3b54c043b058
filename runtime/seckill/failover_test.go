package seckill_test

import (
	"context"
	"database/sql"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/worker"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// failoverCase is one run of the failover storm.
type failoverCase struct {
	durability seckill.Durability
	// stall cuts the replication link a moment before the primary dies, so
	// the replica misses the last writes (the scenario).
	stall bool
	// strict asserts zero lost durable orders and zero oversold; otherwise
	// the figures are only reported (losses depend on timing).
	strict bool
	// workerWaits runs the worker with --wait-replicas=durability.Replicas,
	// as the operator does; a fresh replica is then attached to the
	// promoted one (the worker moves nothing while its primary lacks one).
	workerWaits bool
}

// TestFailover: a primary and a replica (private redis-servers), the seckill
// and the worker reaching the primary through a proxy, a storm of buyers;
// mid-storm the primary is SIGKILLed, the replica promoted (REPLICAOF NO
// ONE) and the proxy re-pointed to it, and the storm goes on. Counted: orders
// told 202, orders that survived (on the promoted replica or in MySQL), units
// sold (initial − stock on the promoted replica). Without durability, orders
// are lost (reported, not asserted: it depends on timing); with replicas=1
// (the seckill's WAIT and the worker's --wait-replicas), even with the
// replication link stalled before the kill, every 202 that said "durable":
// true is on the promoted replica and nothing is oversold: the orders
// answered "durable": false never left the dead primary's stream.
func TestFailover(t *testing.T) {
	cases := []struct {
		name string
		c    failoverCase
	}{
		{"none-stalled", failoverCase{stall: true}},
		{"replicas=1", failoverCase{durability: seckill.Durability{Replicas: 1, Timeout: 250 * time.Millisecond}, strict: true, workerWaits: true}},
		{"replicas=1-stalled", failoverCase{durability: seckill.Durability{Replicas: 1, Timeout: 250 * time.Millisecond}, stall: true, strict: true, workerWaits: true}},
		// The seckill waits but the worker does not: orders answered
		// "durable": false during the stall reach MySQL before the
		// replica has them and are sold again after the failover (the gap
		// the worker's wait closes; reported, not asserted).
		{"replicas=1-stalled-worker-no-wait", failoverCase{durability: seckill.Durability{Replicas: 1, Timeout: 250 * time.Millisecond}, stall: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runFailover(t, tc.c) })
	}
}

// told is what the buyers were answered 202.
type told struct {
	mu      sync.Mutex
	orders  map[string]answer // by order number
	beforeK atomic.Int64      // 202s answered before the kill
}

// answer is one 202: the buyer and the answer's "durable".
type answer struct {
	user    string
	durable *bool
}

func (o *told) add(orderNo, user string, durable *bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.orders[orderNo] = answer{user, durable}
}

func (o *told) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.orders)
}

func runFailover(t *testing.T, c failoverCase) {
	const stockN = 100000
	primary := testutil.StartRedisServer(t)
	link := testutil.TCPProxy(t, primary.Addr)
	lhost, lport, _ := net.SplitHostPort(link.Addr())
	replica := testutil.StartRedisServer(t, "--replicaof", lhost, lport)
	testutil.WaitReplicaOnline(t, primary, 1)
	front := testutil.TCPProxy(t, primary.Addr) // what the seckill and the worker dial

	dial := func() *redis.Client {
		rc := redis.NewClient(&redis.Options{Addr: front.Addr(), DialTimeout: time.Second,
			ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 2,
			MinRetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond})
		t.Cleanup(func() { _ = rc.Close() })
		return rc
	}
	rdb := dial()
	fs := privateSale(t, stockN)
	s, err := startDurable(t, rdb, fs, c.durability)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := testutil.OrderDB(t)
	waitReplicas := 0
	if c.workerWaits {
		waitReplicas = c.durability.Replicas
	}
	stopWorker := runWorker(t, fs, dial(), db, waitReplicas)

	out := &told{orders: map[string]answer{}}
	stopStorm := storm(t, s, out)

	waitFor(t, 60*time.Second, "300 orders answered 202 before the failover", func() bool { return out.count() >= 300 })
	if c.stall {
		link.Cut() // the replica misses what follows
		time.Sleep(300 * time.Millisecond)
	}
	out.beforeK.Store(int64(out.count()))
	primary.Kill()
	promoted := replica.Client(t)
	if err := promoted.ReplicaOf(context.Background(), "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if c.workerWaits {
		testutil.StartReplica(t, replica) // as Sentinel's other replica would be
	}
	front.Cut()
	testutil.TCPProxyOn(t, front.Addr(), replica.Addr)
	before := int(out.beforeK.Load())
	waitFor(t, 60*time.Second, "300 more orders answered 202 by the promoted replica", func() bool { return out.count() >= before+300 })
	stopStorm()

	k := keys.ForSKU(fs.SaleKey(), "1001")
	ctx := context.Background()
	var onReplica map[string]string
	waitFor(t, 60*time.Second, "the worker to move every order of the promoted replica to MySQL", func() bool {
		onReplica, err = promoted.HGetAll(ctx, k.Orders).Result()
		if err != nil {
			return false
		}
		inDB := rowsOf(t, db, fs.SaleKey())
		for no := range onReplica {
			if _, ok := inDB[no]; !ok {
				return false
			}
		}
		return true
	})
	stopWorker()
	inDB := rowsOf(t, db, fs.SaleKey())
	// The promoted replica knows an order if its buyer holds a unit there:
	// the holders hash is written by the purchase script alone (the
	// orders hash is not: the worker's status update re-creates a record).
	holders, err := promoted.HGetAll(ctx, k.Holders).Result()
	if err != nil {
		t.Fatal(err)
	}
	left, err := promoted.Get(ctx, k.Stock).Int64()
	if err != nil {
		t.Fatal(err)
	}
	sold := stockN - left
	// No record in the orders hash of an order the promoted replica never
	// admitted (the worker's status update re-created them before).
	for no, rec := range onReplica {
		if _, user, _ := strings.Cut(rec, " "); holders[user] == "" {
			t.Errorf("the promoted replica's orders hash holds %s (%q) whose buyer holds no unit: a record re-created for an order it never admitted", no, rec)
		}
	}
	report(t, c, out, holders, inDB, sold)
}

// report counts the orders told 202 by where they are after the failover,
// logs the figures and, for a strict case, asserts none answered durable
// is lost and nothing is oversold.
func report(t *testing.T, c failoverCase, out *told, holders map[string]string, inDB map[string]string, sold int64) {
	out.mu.Lock()
	defer out.mu.Unlock()
	// An order told 202 is on the promoted replica (kept, its unit counted),
	// only in MySQL (kept, but the promoted replica counts its unit as
	// unsold and sells it again), or gone.
	var onPromoted, onlyInDB, gone, saidDurable, notDurable, lostDurable int
	for no, a := range out.orders {
		onR := holders[a.user] != ""
		_, stored := inDB[no]
		switch {
		case onR:
			onPromoted++
		case stored:
			onlyInDB++
		default:
			gone++
		}
		switch {
		case a.durable != nil && *a.durable:
			saidDurable++
			if !onR {
				lostDurable++
				t.Errorf("order %s was answered 202 \"durable\": true and is not on the promoted replica", no)
			}
		case a.durable != nil:
			notDurable++
		}
	}
	existing := len(holders) // one unit per buyer
	for _, user := range inDB {
		if holders[user] == "" {
			existing++ // in MySQL, unknown to the promoted replica's stock
		}
	}
	oversold := int64(existing) - sold
	t.Logf("FIGURES durability=%q stalled=%v workerWaits=%v: told 202: %d (%d before the kill; durable true %d, false %d) | on the promoted replica: %d, only in MySQL (unit sold twice): %d, gone: %d | units sold (initial - stock on the promoted replica): %d; orders that exist (replica + MySQL): %d; oversold: %d",
		c.durability, c.stall, c.workerWaits, len(out.orders), out.beforeK.Load(), saidDurable, notDurable, onPromoted, onlyInDB, gone, sold, existing, oversold)
	if c.strict {
		if lostDurable != 0 {
			t.Errorf("%d orders answered durable were lost", lostDurable)
		}
		if oversold != 0 || int64(len(holders)) != sold {
			t.Errorf("oversold: %d orders exist (%d buyers on the promoted replica) for %d units sold", existing, len(holders), sold)
		}
		if saidDurable == 0 {
			t.Error("no answer said durable: true")
		}
	}
}

// storm runs 32 buyers, each a new user per purchase, until stop is called.
// A 503 is retried with the same token, as the contract says.
func storm(t *testing.T, s *testServer, out *told) (stop func()) {
	var (
		done  = make(chan struct{})
		wg    sync.WaitGroup
		users atomic.Int64
	)
	for range 32 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				user := "u" + strconv.FormatInt(users.Add(1), 10)
				buyOnce(s, user, out, done)
			}
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// buyOnce gets a token and purchases with it, retrying both while the
// service is unavailable (the failover), and records a 202.
func buyOnce(s *testServer, user string, out *told, done <-chan struct{}) {
	var tok string
	for tok == "" {
		r := s.token(user, "1001")
		if r.Status == http.StatusOK {
			tok = r.Token
			break
		}
		if !pause(done) {
			return
		}
	}
	for range 50 {
		r := s.purchase(user, "1001", tok)
		switch r.Status {
		case http.StatusAccepted:
			out.add(r.OrderNo, user, durableOf(s.t, r))
			return
		case http.StatusServiceUnavailable:
			if !pause(done) {
				return
			}
		default:
			return
		}
	}
}

func pause(done <-chan struct{}) bool {
	select {
	case <-done:
		return false
	case <-time.After(20 * time.Millisecond):
		return true
	}
}

// runWorker runs the Redis-only order pipeline of fs in-process.
func runWorker(t *testing.T, fs *v1alpha1.FlashSale, rdb redis.UniversalClient, db *sql.DB, waitReplicas int) (stop func()) {
	w, err := worker.New(worker.Config{Sale: fs, Redis: rdb, DB: db, PodID: "w1", WaitReplicas: waitReplicas,
		BatchSize: 100, FlushInterval: 20 * time.Millisecond, ClaimMinIdle: time.Second, ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil && ctx.Err() == nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// rowsOf returns the orders of sale in MySQL: order number -> user.
func rowsOf(t testing.TB, db *sql.DB, sale string) map[string]string {
	t.Helper()
	rows, err := db.Query("SELECT order_no, user_id FROM seckill_order WHERE sale = ?", sale)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var no, user string
		if err := rows.Scan(&no, &user); err != nil {
			t.Fatal(err)
		}
		out[no] = user
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor fails the test unless cond holds within d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}

// TestAOFRestartLosesNothing: a redis-server with appendonly yes and
// appendfsync always answers a write only after the AOF is fsynced, so a
// SIGKILL mid-storm and a restart on the same directory keep every order
// that was answered 202, and the stock counts exactly those units sold.
func TestAOFRestartLosesNothing(t *testing.T) {
	const stockN = 100000
	srv := testutil.StartRedisServer(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	fs := privateSale(t, stockN)
	s, err := startDurable(t, rdb, fs, seckill.Durability{})
	if err != nil {
		t.Fatal(err)
	}
	out := &told{orders: map[string]answer{}}
	stopStorm := storm(t, s, out)
	waitFor(t, 20*time.Second, "500 orders answered 202", func() bool { return out.count() >= 500 })
	srv.Kill()
	stopStorm()
	srv.Restart()

	c := srv.Client(t)
	ctx := context.Background()
	k := keys.ForSKU(fs.SaleKey(), "1001")
	orders, err := c.HGetAll(ctx, k.Orders).Result()
	if err != nil {
		t.Fatal(err)
	}
	left, err := c.Get(ctx, k.Stock).Int64()
	if err != nil {
		t.Fatal(err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	lost := 0
	for no := range out.orders {
		if _, ok := orders[no]; !ok {
			lost++
		}
	}
	t.Logf("appendfsync always: told 202: %d; after SIGKILL and restart: %d orders, %d units sold; lost: %d",
		len(out.orders), len(orders), stockN-left, lost)
	if lost != 0 {
		t.Errorf("%d orders answered 202 are gone after the restart", lost)
	}
	if int64(len(orders)) != stockN-left {
		t.Errorf("%d orders for %d units sold", len(orders), stockN-left)
	}
}

// privateSale is a sale of one SKU of stock units, open now, for a private
// redis-server: no key cleanup (the server dies with the test, or before).
func privateSale(t testing.TB, stock int64) *v1alpha1.FlashSale {
	t.Helper()
	now := time.Now()
	fs := &v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: "flashsale.dev/v1alpha1", Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Namespace: testutil.UniqueName(t), Name: "sale"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(now.Add(-time.Second)),
			EndTime:   metav1.NewTime(now.Add(time.Hour)),
			SKUs:      []v1alpha1.SKU{{ID: "1001", Stock: stock, Price: "1.00", PerUserLimit: 1}},
		},
	}
	fs.SetDefaults()
	if err := manifest.Validate(fs); err != nil {
		t.Fatal(err)
	}
	return fs
}
