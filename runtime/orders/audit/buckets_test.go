package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/internal/ordertest"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// splitSale is a sale with SKU "a" split into three buckets (30 units) and
// SKU "b" not split (10 units), on any Redis.
type splitSale struct {
	t      *testing.T
	rdb    redis.UniversalClient
	fs     *v1alpha1.FlashSale
	file   string // the manifest, for the CLI
	bk     orderstate.Buckets
	store  *orderdb.Store
	dsn    string
	script *purchase.Script
	// entry is the stream entry id of each order admitted.
	entry map[string]string
}

func newSplitSale(t *testing.T, rdb redis.UniversalClient) *splitSale {
	t.Helper()
	ns := testutil.UniqueName(t)
	for _, p := range keys.Patterns(ns + "/sale") {
		testutil.CleanupKeys(t, rdb, p)
	}
	y := fmt.Sprintf(`apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: sale, namespace: %s}
spec:
  startTime: "2020-01-01T00:00:00Z"
  endTime: "2099-01-01T00:00:00Z"
  skus:
  - {id: a, stock: 30, price: "9.99", perUserLimit: 1, buckets: 3}
  - {id: b, stock: 10, price: "1.00", perUserLimit: 1}
`, ns)
	file := filepath.Join(t.TempDir(), "sale.yaml")
	if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := manifest.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Warm(context.Background(), rdb, fs); err != nil {
		t.Fatal(err)
	}
	script, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db, dsn := testutil.OrderDB(t)
	return &splitSale{t: t, rdb: rdb, fs: fs, file: file, bk: orderstate.BucketsOf(fs), store: orderdb.New(db), dsn: dsn,
		script: script, entry: map[string]string{}}
}

// buy admits an order of sku by each of users, in their home buckets.
func (s *splitSale) buy(sku string, users ...string) []order.Order {
	s.t.Helper()
	ctx := context.Background()
	now := time.Now()
	n := s.bk.Of(sku)
	var out []order.Order
	for _, u := range users {
		res, err := s.script.Purchase(ctx, purchase.Request{SKU: sku, Bucket: keys.Home(u, n), Buckets: n, User: u, Limit: 1,
			Amount: "9.99", Nonce: "n-" + u, Now: now, Deadline: now.Add(time.Hour)})
		if err != nil || res.Outcome != purchase.Admitted {
			s.t.Fatalf("purchase by %s: %v %v", u, res.Outcome, err)
		}
		k := keys.ForOrder(s.fs.SaleKey(), sku, res.OrderNo, n)
		msgs, err := s.rdb.XRevRangeN(ctx, k.Stream, "+", "-", 1).Result()
		if err != nil || len(msgs) != 1 {
			s.t.Fatalf("stream of order %s: %v %v", res.OrderNo, msgs, err)
		}
		o, err := order.FromStream(msgs[0].Values)
		if err != nil || o.OrderNo != res.OrderNo {
			s.t.Fatalf("stream entry %v %v", o, err)
		}
		s.entry[o.OrderNo] = msgs[0].ID
		out = append(out, o)
	}
	return out
}

// deliver does what the worker does: insert, show created (in each order's
// bucket), delete the stream entry.
func (s *splitSale) deliver(orders ...order.Order) {
	s.t.Helper()
	ctx := context.Background()
	if _, err := s.store.InsertBatch(ctx, orders); err != nil {
		s.t.Fatal(err)
	}
	if err := orderstate.MarkCreated(ctx, s.rdb, s.bk, orders); err != nil {
		s.t.Fatal(err)
	}
	s.unstream(orders...)
}

func (s *splitSale) unstream(orders ...order.Order) {
	s.t.Helper()
	for _, o := range orders {
		if err := s.rdb.XDel(context.Background(), s.bk.Order(&o).Stream, s.entry[o.OrderNo]).Err(); err != nil {
			s.t.Fatal(err)
		}
	}
}

// deadLetter moves o from its bucket's stream to that bucket's dead-letter
// stream, as the stream sink files an order MySQL refuses.
func (s *splitSale) deadLetter(o order.Order) {
	s.t.Helper()
	vals := []any{"source-id", s.entry[o.OrderNo], "error", "Error 1406: Data too long", "attempts", 3, "at", time.Now().UnixMilli(),
		"f:order", o.OrderNo, "f:sale", o.Sale, "f:sku", o.SKU, "f:user", o.User, "f:n", strconv.FormatInt(o.N, 10),
		"f:amount", o.Amount, "f:at", strconv.FormatInt(o.AdmittedAt.UnixMilli(), 10), "f:deadline", strconv.FormatInt(o.Deadline.UnixMilli(), 10)}
	if err := s.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: s.bk.Order(&o).DeadLetters, Values: vals}).Err(); err != nil {
		s.t.Fatal(err)
	}
	s.unstream(o)
}

// inBucket returns the first order of orders admitted into bucket b.
func inBucket(t *testing.T, orders []order.Order, b int) order.Order {
	t.Helper()
	for _, o := range orders {
		if ob, _ := keys.BucketOf(o.OrderNo); ob == b {
			return o
		}
	}
	t.Fatalf("no order in bucket %d", b)
	return order.Order{}
}

// auditCLI runs `flashsale audit` with extra flags against the sale's Redis
// (a cluster's seed addresses for a cluster client).
func (s *splitSale) auditCLI(extra ...string) (string, error) {
	s.t.Helper()
	var addr []string
	switch c := s.rdb.(type) {
	case *redis.Client:
		addr = []string{"--redis-addr", c.Options().Addr}
	case *redis.ClusterClient:
		addr = []string{"--redis-cluster", strings.Join(c.Options().Addrs, ",")}
	}
	root := cli.NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(append([]string{"audit", "--file", s.file, "--mysql-dsn", s.dsn}, addr...), extra...))
	err := root.ExecuteContext(context.Background())
	if errOut.Len() > 0 {
		s.t.Logf("flashsale audit stderr: %s", errOut.String())
	}
	return out.String(), err
}

// TestSplitSKU audits a sale with a SKU split into three buckets beside one
// that is not, on one Redis and on a 3-master Redis Cluster (the buckets on
// three shards): the law holds per bucket and per SKU across a transfer
// between buckets and one left half-done (its unit counted once, in flight
// between buckets), a payment, a cancel returning its unit to its bucket and
// orders still in flight; an order dead-lettered in bucket 2 and a stale
// expiry member in bucket 1 are reported for their buckets and repaired by
// `flashsale audit --repair`; a lost order of bucket 1 breaks bucket 1's law.
func TestSplitSKU(t *testing.T) {
	t.Run("redis", func(t *testing.T) { splitSKUScenario(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { splitSKUScenario(t, testutil.RedisCluster(t).Client(t)) })
}

func splitSKUScenario(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	s := newSplitSale(t, rdb)
	saleKey := s.fs.SaleKey()
	as := s.buy("a", ordertest.Buyers("ua", 30, 3)[:15]...)
	bs := s.buy("b", "ub1", "ub2", "ub3", "ub4")
	// Two unsold units move from bucket 0 to bucket 2.
	if moved, err := buckets.Move(ctx, rdb, saleKey, "a", 3, 0, 2, 2); err != nil || moved != 2 {
		t.Fatalf("move: %d, %v", moved, err)
	}
	// A transfer of one more unit from bucket 0 to 1 crashed half-way: given
	// (step 1 of package buckets' contract), not taken in.
	k0 := keys.ForBucket(saleKey, "a", 0, 3)
	pipe := rdb.TxPipeline()
	pipe.DecrBy(ctx, k0.Stock, 1)
	pipe.DecrBy(ctx, k0.Initial, 1)
	pipe.HSet(ctx, k0.Outbox, "crashed", "1 1")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// a: one of bucket 1 paid, one of bucket 2 cancelled with its unit
	// back, one of bucket 2 dead-lettered, three still in their streams,
	// the others delivered.
	cancelled := inBucket(t, as, 2)
	paid, dead := inBucket(t, as, 1), inBucket(t, as[slicesIndex(as, cancelled)+1:], 2)
	var delivered []order.Order
	inFlight := 0
	for i := len(as) - 1; i >= 0; i-- {
		switch o := as[i]; {
		case o.OrderNo == dead.OrderNo:
		case o.OrderNo != paid.OrderNo && o.OrderNo != cancelled.OrderNo && inFlight < 3:
			inFlight++
		default:
			delivered = append(delivered, o)
		}
	}
	s.deliver(append(delivered, bs[:3]...)...)
	s.deadLetter(dead)
	if res, _, err := s.store.Pay(ctx, saleKey, paid.OrderNo, time.Now()); err != nil || res != orderdb.PaidNow {
		t.Fatalf("pay: %v %v", res, err)
	}
	if won, err := s.store.Cancel(ctx, cancelled.OrderNo, time.Now().Add(2*time.Hour)); err != nil || !won {
		t.Fatalf("cancel: %v %v", won, err)
	}
	if back, err := orderstate.Release(ctx, rdb, &cancelled, 3); err != nil || !back {
		t.Fatalf("release: %v %v", back, err)
	}
	if err := s.store.MarkReturned(ctx, cancelled.OrderNo); err != nil {
		t.Fatal(err)
	}

	a, err := audit.New(audit.Config{Sale: s.fs, Redis: rdb, Orders: s.store, StuckAfter: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sa, sb := rep.SKUs[0], rep.SKUs[1]
	if len(sa.Buckets) != 3 || len(sb.Buckets) != 0 || sa.Initial != 30 || sa.Declared != 30 || sa.Remaining != 15 || sa.Transferring != 1 ||
		sa.Imbalance != 0 || sa.Stranded != 1 || sa.Buckets[2].Stranded != 1 || sa.Buckets[0].Initial+sa.Buckets[2].Initial != 19 ||
		sb.Initial != 10 || sb.Imbalance != 0 || !sb.Conserved || rep.OK {
		t.Fatalf("before repair:\n%s", text(rep))
	}
	stale, deadFound := false, false
	for _, f := range rep.Findings {
		stale = stale || (f.Kind == audit.KindStaleExpiry && f.SKU == "a" && f.Bucket == 1 && f.OrderNo == paid.OrderNo)
		deadFound = deadFound || (f.Kind == audit.KindDeadLetter && f.Bucket == 2 && f.OrderNo == dead.OrderNo)
	}
	if !stale || !deadFound || !strings.Contains(strings.Join(rep.Failures(), ";"), "SKU a bucket 2") {
		t.Fatalf("findings of bucket 1 and 2 missing:\n%s", text(rep))
	}

	if _, err := buckets.Recover(ctx, rdb, saleKey, "a", 3); err != nil {
		t.Fatal(err)
	}
	out, err := s.auditCLI("--repair")
	if err != nil || !strings.Contains(out, "Result: OK") {
		t.Fatalf("--repair: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	rep, err = a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Findings) != 0 || rep.SKUs[0].Remaining != 16 || rep.SKUs[0].Transferring != 0 || rep.SKUs[0].MySQL.Paid != 1 || rep.SKUs[0].MySQL.Created != 10 || rep.SKUs[0].InFlight.Stream != 3 || rep.SKUs[0].Redis.Orders["paid"] != 1 {
		t.Fatalf("after repair:\n%s", text(rep))
	}
	if rec, ok, err := orderstate.Lookup(ctx, rdb, saleKey, "a", 3, dead.OrderNo); err != nil || !ok || rec.Status != order.Created {
		t.Fatalf("the repaired order %s shows %+v (known %v, %v)", dead.OrderNo, rec, ok, err)
	}

	// An order of bucket 1 vanishes from MySQL: bucket 1's law breaks.
	lost := inBucket(t, delivered, 1)
	if _, err := s.store.DB().Exec(`DELETE FROM seckill_order WHERE order_no = ?`, lost.OrderNo); err != nil {
		t.Fatal(err)
	}
	rep, err = a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Lost != 1 || rep.SKUs[0].Buckets[1].Imbalance != 1 || rep.SKUs[0].Buckets[1].Conserved ||
		rep.Findings[0].Kind != audit.KindLost || rep.Findings[0].Bucket != 1 || !strings.Contains(text(rep), "SKU a~1") {
		t.Fatalf("with a lost order in bucket 1:\n%s", text(rep))
	}

	// The archive reads every bucket: garbage in bucket 2's dead-letter
	// stream and the orders still in the buckets' streams are kept, and the
	// garbage leaves its stream.
	dlq2 := keys.ForBucket(saleKey, "a", 2, 3).DeadLetters
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: dlq2, Values: []any{"error", "decode", "f:order", "garbage"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Archive(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	kept, err := s.store.ListDeadLetters(ctx, saleKey, 100)
	if err != nil {
		t.Fatal(err)
	}
	poison, valid := 0, 0
	for _, d := range kept {
		if d.Valid {
			valid++
		} else if d.SKU == "a" && d.Source == orderdb.SourceDLQStream {
			poison++
		}
	}
	if n, err := rdb.XLen(ctx, dlq2).Result(); err != nil || n != 0 || poison != 1 || valid != 3+1 {
		t.Fatalf("archive: %d poison and %d valid kept, want 1 and 4 (the in-flight orders); %d entries left in bucket 2's dead letters (%v)",
			poison, valid, n, err)
	}
}

// slicesIndex is the index of o in orders.
func slicesIndex(orders []order.Order, o order.Order) int {
	for i := range orders {
		if orders[i].OrderNo == o.OrderNo {
			return i
		}
	}
	return -1
}

// TestSplitSKUKafka: in Kafka mode on the 3-master cluster, the orders of a
// split SKU behind the consumer group and in the dead-letter topic are each
// counted in the bucket that admitted them (its order number's mark): the
// law holds in every bucket, and the dead-lettered order of its bucket is
// repaired.
func TestSplitSKUKafka(t *testing.T) {
	s := newSplitSale(t, testutil.RedisCluster(t).Client(t))
	ctx := context.Background()
	saleKey := s.fs.SaleKey()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, keys.Topic(saleKey)), kfake.SeedTopics(1, keys.DeadLetterTopic(saleKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := audit.SaramaConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	prod, err := sarama.NewSyncProducer(c.ListenAddrs(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(topic string, o order.Order) {
		t.Helper()
		raw, _ := o.Marshal()
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(o.User), Value: sarama.ByteEncoder(raw)}); err != nil {
			t.Fatal(err)
		}
		s.unstream(o)
	}
	as := s.buy("a", ordertest.Buyers("ua", 30, 3)[:9]...)
	dead := inBucket(t, as, 2)
	perBucket := map[int]int64{}
	for _, o := range as {
		if o.OrderNo == dead.OrderNo {
			send(keys.DeadLetterTopic(saleKey), o)
			continue
		}
		send(keys.Topic(saleKey), o)
		b, _ := keys.BucketOf(o.OrderNo)
		perBucket[b]++
	}
	a, err := audit.New(audit.Config{Sale: s.fs, Redis: s.rdb, Orders: s.store, Brokers: c.ListenAddrs(), Sarama: audit.SaramaConfig(),
		KafkaTimeout: 5 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sa := rep.SKUs[0]
	if sa.InFlight.Kafka != 8 || sa.Stranded != 1 || sa.Imbalance != 0 || rep.Lost != 0 || len(perBucket) < 2 {
		t.Fatalf("report (orders in Kafka by bucket %v):\n%s", perBucket, text(rep))
	}
	for b, p := range sa.Buckets {
		if p.InFlight.Kafka != perBucket[b] || p.Imbalance != 0 {
			t.Fatalf("bucket %d: %d in Kafka, want %d:\n%s", b, p.InFlight.Kafka, perBucket[b], text(rep))
		}
	}
	if _, err := a.Repair(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if rep, err = a.Run(ctx); err != nil || !rep.OK || rep.SKUs[0].Buckets[2].MySQL.Created != 1 {
		t.Fatalf("after repair (%v):\n%s", err, text(rep))
	}
}
