package pipeline_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/consumer"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const n10k = 10000

// TestKafka10000 moves 10,000 purchases through relay, Kafka and consumer.
func TestKafka10000(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, 4, 5000, 5000)
	db, _ := newDB(t)
	kc := startKafka(t, 0, "")
	t.Cleanup(kc.Close)
	b := newBuyer(t, rdb, fs)
	b.buy(n10k / 2) // some wait in the streams before the worker starts
	runWorker(t, fs, rdb, db, kc.ListenAddrs(), nil)
	b.buy(n10k / 2)
	checkAllStored(t, rdb, db, fs, n10k)
	testutil.Eventually(t, 10*time.Second, "offsets committed", func() bool {
		return committedOffsets(t, kc.ListenAddrs(), fs) >= n10k
	})
}

// TestRedisOnly10000 moves 10,000 purchases from the streams straight to
// MySQL; a corrupt stream entry goes to the dead-letter stream.
func TestRedisOnly10000(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, 0, 5000, 5000)
	db, _ := newDB(t)
	k := keys.ForSKU(fs.SaleKey(), "1001")
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: k.Stream, Values: []any{"order", "garbage"}}).Err(); err != nil {
		t.Fatal(err)
	}
	b := newBuyer(t, rdb, fs)
	b.buy(n10k / 2)
	runWorker(t, fs, rdb, db, nil, nil)
	b.buy(n10k / 2)
	checkAllStored(t, rdb, db, fs, n10k)
	dl, err := rdb.XRange(context.Background(), k.DeadLetters, "-", "+").Result()
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters: %v %v, want 1", dl, err)
	}
	if r, _ := dl[0].Values["error"].(string); !strings.Contains(r, "stream entry") || dl[0].Values["f:order"] != "garbage" {
		t.Fatalf("dead letter %v", dl[0].Values)
	}
}

// TestWorkerKilled kills the worker process with SIGKILL while it moves
// orders, restarts it under another name, and finds every order once.
func TestWorkerKilled(t *testing.T) {
	for _, mode := range []string{"kafka", "redis-only"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			rdb := testutil.Redis(t)
			var partitions int32
			var brokers []string
			if mode == "kafka" {
				partitions = 4
				kc := startKafka(t, 0, "")
				t.Cleanup(kc.Close)
				brokers = kc.ListenAddrs()
			}
			fs := newSale(t, rdb, partitions, 5000, 5000)
			db, dsn := newDB(t)
			file := writeManifest(t, fs)
			start := func(pod string) *exec.Cmd {
				args := []string{"worker", "--file", file, "--redis-addr", redisAddr(), "--mysql-dsn", dsn,
					"--metrics-addr", "127.0.0.1:0", "--pod-id", pod, "--batch-size", "200",
					"--claim-min-idle", "1s", "--kafka-session-timeout", "1s"}
				if len(brokers) > 0 {
					args = append(args, "--kafka-brokers", strings.Join(brokers, ","))
				}
				cmd := exec.Command(binary, args...)
				if testing.Verbose() && os.Getenv("PIPELINE_LOG") != "" {
					cmd.Stderr = os.Stderr
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				return cmd
			}
			b := newBuyer(t, rdb, fs)
			bought := make(chan struct{})
			go func() {
				defer close(bought)
				for range 20 { // a steady trickle: the worker is busy when killed
					b.buy(n10k / 20)
					time.Sleep(50 * time.Millisecond)
				}
			}()
			first := start("w1")
			testutil.Eventually(t, 30*time.Second, "first rows", func() bool { return rows(t, db, fs) >= 1500 })
			if err := first.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = first.Wait()
			got := rows(t, db, fs)
			t.Logf("killed with %d rows stored, %d entries in the streams", got, streamLen(t, rdb, fs))
			if got >= n10k {
				t.Fatalf("the worker finished before it was killed")
			}
			start("w2")
			<-bought
			checkAllStored(t, rdb, db, fs, n10k)
		})
	}
}

// TestKafkaRestart stops Kafka mid-sale: orders pile up in Redis and all
// arrive once it is back on the same address.
func TestKafkaRestart(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, 4, 3000, 3000)
	db, _ := newDB(t)
	dir := t.TempDir()
	port := testutil.FreePort(t)
	kc := startKafka(t, port, dir)
	brokers := kc.ListenAddrs()
	runWorker(t, fs, rdb, db, brokers, nil)
	b := newBuyer(t, rdb, fs)
	b.buy(2000)
	testutil.Eventually(t, 30*time.Second, "2000 rows", func() bool { return rows(t, db, fs) == 2000 })
	kc.Close()
	b.buy(2000)
	// Nothing can leave Redis: the stream holds every order bought since.
	testutil.Eventually(t, 10*time.Second, "2000 in the streams", func() bool { return streamLen(t, rdb, fs) == 2000 })
	b.buy(2000)
	testutil.Eventually(t, 10*time.Second, "4000 in the streams", func() bool { return streamLen(t, rdb, fs) == 4000 })
	time.Sleep(time.Second)
	if l := streamLen(t, rdb, fs); l != 4000 {
		t.Fatalf("stream holds %d while Kafka is down, want 4000", l)
	}
	if r := rows(t, db, fs); r != 2000 {
		t.Fatalf("%d rows while Kafka is down, want 2000", r)
	}
	kc2 := startKafka(t, port, dir)
	t.Cleanup(kc2.Close)
	checkAllStored(t, rdb, db, fs, 6000)
}

// TestMySQLDown cuts MySQL away from the worker: no offset moves while it is
// down, and everything arrives once it is back.
func TestMySQLDown(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, 4, 3000, 3000)
	db, dsn := newDB(t)
	proxy, wdb := testutil.ProxiedOrderDB(t, dsn, 5*time.Second)
	kc := startKafka(t, 0, "")
	t.Cleanup(kc.Close)
	brokers := kc.ListenAddrs()
	runWorker(t, fs, rdb, wdb, brokers, nil)
	b := newBuyer(t, rdb, fs)
	b.buy(1000)
	testutil.Eventually(t, 30*time.Second, "1000 rows", func() bool { return rows(t, db, fs) == 1000 })
	testutil.Eventually(t, 10*time.Second, "1000 offsets committed", func() bool { return committedOffsets(t, brokers, fs) == 1000 })
	proxy.Cut()
	b.buy(2000)
	testutil.Eventually(t, 10*time.Second, "relayed while MySQL is down", func() bool { return streamLen(t, rdb, fs) == 0 })
	time.Sleep(2 * time.Second)
	if got := committedOffsets(t, brokers, fs); got != 1000 {
		t.Fatalf("committed offsets moved to %d while MySQL was down", got)
	}
	if got := rows(t, db, fs); got != 1000 {
		t.Fatalf("%d rows while MySQL was down", got)
	}
	proxy.Restore()
	checkAllStored(t, rdb, db, fs, 3000)
	testutil.Eventually(t, 10*time.Second, "3000 offsets committed", func() bool { return committedOffsets(t, brokers, fs) == 3000 })
}

// TestPoison produces garbage and a row MySQL refuses between good orders:
// both land in the dead-letter topic with their reason, the good ones are stored.
func TestPoison(t *testing.T) {
	t.Parallel()
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb, 1, 10)
	db, _ := newDB(t)
	kc := startKafka(t, 0, "")
	t.Cleanup(kc.Close)
	brokers := kc.ListenAddrs()
	sale := fs.SaleKey()
	topic := keys.Topic(sale)

	p := kafkautil.NewProducer(kafkautil.Options{Brokers: brokers}, map[string]int32{topic: 1})
	defer p.Close()
	prod, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	good := func(user, amount string) *sarama.ProducerMessage {
		now := time.Now().UTC()
		o := order.Order{OrderNo: purchase.OrderNo(sale, "1001", user, 1, 0), Sale: sale, SKU: "1001", User: user, N: 1,
			Amount: amount, AdmittedAt: now, Deadline: now.Add(time.Minute)}
		v, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(user), Value: sarama.ByteEncoder(v)}
	}
	msgs := []*sarama.ProducerMessage{
		good("alice", "1.00"),
		{Topic: topic, Key: sarama.StringEncoder("mallory"), Value: sarama.ByteEncoder("\x00not an order{")},
		good("bob", "2.00"),
		good("carol", "1e20"), // valid JSON, but out of DECIMAL(14,2)'s range: MySQL refuses the row
		good("dave", "3.00"),
	}
	if err := prod.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
	runWorker(t, fs, rdb, db, brokers, nil)
	testutil.Eventually(t, 30*time.Second, "3 good rows", func() bool { return rows(t, db, fs) == 3 })

	cons, err := sarama.NewConsumer(brokers, kafkautil.Options{}.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var pc sarama.PartitionConsumer
	testutil.Eventually(t, 20*time.Second, "dead-letter topic", func() bool {
		pc, err = cons.ConsumePartition(keys.DeadLetterTopic(sale), 0, sarama.OffsetOldest)
		return err == nil
	})
	defer pc.Close()
	want := []struct{ key, reason, attempts, offset string }{
		{"mallory", "decode", "1", "1"},
		{"carol", "Out of range", "3", "3"},
	}
	for _, w := range want {
		select {
		case m := <-pc.Messages():
			h := map[string]string{}
			for _, rh := range m.Headers {
				h[string(rh.Key)] = string(rh.Value)
			}
			if string(m.Key) != w.key || !strings.Contains(h[consumer.HeaderError], w.reason) ||
				h[consumer.HeaderAttempts] != w.attempts || h[consumer.HeaderSourceOffset] != w.offset ||
				h[consumer.HeaderSourceTopic] != topic || h[consumer.HeaderSourcePartition] != "0" {
				t.Fatalf("dead letter key=%q headers=%v, want %+v", m.Key, h, w)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no dead letter for %s", w.key)
		}
	}
	testutil.Eventually(t, 10*time.Second, "all 5 offsets committed", func() bool { return committedOffsets(t, brokers, fs) == 5 })
}
