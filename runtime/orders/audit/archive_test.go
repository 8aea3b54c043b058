package audit_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
)

// deadLetterEntry files o in the Redis dead-letter stream as the stream
// sink does when MySQL refuses its row.
func (f *fixture) deadLetterEntry(o order.Order, reason string) {
	f.t.Helper()
	vals := []any{"source-id", f.ids[o.OrderNo], "error", reason, "attempts", 3, "at", time.Now().UnixMilli(),
		"f:order", o.OrderNo, "f:sale", o.Sale, "f:sku", o.SKU, "f:user", o.User, "f:n", strconv.FormatInt(o.N, 10),
		"f:amount", o.Amount, "f:at", strconv.FormatInt(o.AdmittedAt.UnixMilli(), 10), "f:deadline", strconv.FormatInt(o.Deadline.UnixMilli(), 10)}
	if err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: f.k.DeadLetters, Values: vals}).Err(); err != nil {
		f.t.Fatal(err)
	}
	f.unstream(o)
}

// wantUnkept fails unless err is Archive's *UnkeptOrders naming orders.
func (f *fixture) wantUnkept(err error, orders ...order.Order) {
	f.t.Helper()
	var u *audit.UnkeptOrders
	if !errors.As(err, &u) {
		f.t.Fatalf("archive without includeValid: err %v, want the valid orders MySQL lacks reported", err)
	}
	want := map[string]bool{}
	for _, o := range orders {
		want[o.OrderNo] = true
	}
	for _, no := range u.OrderNos {
		if !want[no] {
			f.t.Fatalf("unkept %v, want %v", u.OrderNos, want)
		}
		delete(want, no)
	}
	if len(want) > 0 {
		f.t.Fatalf("unkept %v lacks %v", u.OrderNos, want)
	}
}

func (f *fixture) archived() []orderdb.DeadLetter {
	f.t.Helper()
	dls, err := f.store.ListDeadLetters(context.Background(), f.fs.SaleKey(), 100)
	if err != nil {
		f.t.Fatal(err)
	}
	return dls
}

// TestArchiveRedisDeadLetters: garbage in the Redis dead-letter stream ends
// in seckill_dead_letter, byte for byte, and leaves the stream; a valid
// stranded order stays for repair unless includeValid; archiving again adds
// nothing; and the rows outlive the sale's keys.
func TestArchiveRedisDeadLetters(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	orders := f.buy(3)
	f.deliver(orders[0])
	f.deadLetterEntry(orders[1], "Error 1406: Data too long")
	garbage := string([]byte{0xff, 0xfe, 'x'})
	if err := f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: f.k.DeadLetters, Values: []any{"error", "decode", "f:order", garbage}}).Err(); err != nil {
		t.Fatal(err)
	}
	a := f.auditor()
	rep := f.run(a)
	if rep.StrandedOrders() != 1 {
		t.Fatalf("stranded %d, want 1:\n%s", rep.StrandedOrders(), text(rep))
	}

	// Without includeValid the poison is archived, and the two valid
	// orders MySQL lacks make it fail: a teardown must keep the stores.
	repairs, err := a.Archive(ctx, rep, false)
	f.wantUnkept(err, orders[1], orders[2])
	if audit.WithoutUnkept(err) != nil {
		t.Fatalf("archive: %v %+v", err, repairs)
	}
	dls := f.archived()
	if len(dls) != 1 || dls[0].Valid || dls[0].Source != orderdb.SourceDLQStream || dls[0].SKU != "1001" ||
		!bytes.Contains(dls[0].Payload, []byte(`"encoding":"base64"`)) {
		t.Fatalf("archived %+v", dls)
	}
	left, _ := f.rdb.XRange(ctx, f.k.DeadLetters, "-", "+").Result()
	if len(left) != 1 || left[0].Values["f:order"] != orders[1].OrderNo {
		t.Fatalf("dead-letter stream after archive: %v (want only the valid order's entry)", left)
	}
	// orders[2] is still in the order stream: valid, not archived without includeValid.
	_, err = a.Archive(ctx, f.run(a), false)
	f.wantUnkept(err, orders[1], orders[2])
	if len(f.archived()) != 1 {
		t.Fatalf("archive again: %d rows", len(f.archived()))
	}

	// Abandon: the valid stranded order and the undrained one are kept too;
	// their entries stay (a later repair could still store them).
	if _, err := a.Archive(ctx, f.run(a), true); err != nil {
		t.Fatal(err)
	}
	byOrder := map[string]orderdb.DeadLetter{}
	for _, d := range f.archived() {
		byOrder[d.OrderNo] = d
	}
	if d := byOrder[orders[1].OrderNo]; !d.Valid || d.Source != orderdb.SourceDLQStream || d.Reason != "dead-lettered because: Error 1406: Data too long" {
		t.Fatalf("stranded order archived as %+v", d)
	}
	if d := byOrder[orders[2].OrderNo]; !d.Valid || d.Source != orderdb.SourceStream {
		t.Fatalf("undrained order archived as %+v", d)
	}
	if _, ok := byOrder[orders[0].OrderNo]; ok || len(byOrder) != 3 {
		t.Fatalf("archived %v; an order in MySQL is not archived", byOrder)
	}
	if n, _ := f.rdb.XLen(ctx, f.k.DeadLetters).Result(); n != 1 {
		t.Fatalf("dead-letter stream holds %d entries after abandon, want 1", n)
	}
	// Kept in the table now, they no longer hold a teardown's archive.
	if _, err := a.Archive(ctx, f.run(a), false); err != nil {
		t.Fatalf("archive without includeValid after abandon: %v", err)
	}

	// Teardown deletes the keys; the table keeps every message.
	if _, err := teardown.DeleteKeys(ctx, f.rdb, f.fs.SaleKey()); err != nil {
		t.Fatal(err)
	}
	if c, err := f.store.CountDeadLetters(ctx, f.fs.SaleKey()); err != nil || c != (orderdb.DeadLetterCounts{Poison: 1, Orders: 2}) {
		t.Fatalf("after teardown: %+v %v", c, err)
	}
}

// TestArchiveKafkaDeadLetters: garbage bytes in the dead-letter topic (and
// behind the consumer group) end in seckill_dead_letter exactly as they
// were; the topic is unchanged (Kafka cannot delete one message); a valid
// dead letter is archived only with includeValid.
func TestArchiveKafkaDeadLetters(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	saleKey := f.fs.SaleKey()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, keys.Topic(saleKey)), kfake.SeedTopics(1, keys.DeadLetterTopic(saleKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	cfg := audit.SaramaConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	prod, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(topic string, raw []byte, headers ...sarama.RecordHeader) {
		t.Helper()
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(raw), Headers: headers}); err != nil {
			t.Fatal(err)
		}
	}
	orders := f.buy(2)
	raw, _ := orders[0].Marshal()
	send(keys.DeadLetterTopic(saleKey), raw, sarama.RecordHeader{Key: []byte("error"), Value: []byte("Error 1264: Out of range value")})
	f.unstream(orders[0])
	garbage := []byte{0x00, 0xff, '{', 'n', 'o', 't', 0x80}
	send(keys.DeadLetterTopic(saleKey), garbage, sarama.RecordHeader{Key: []byte("error"), Value: []byte("decode")})
	send(keys.Topic(saleKey), []byte("also garbage"))

	a := f.auditor(brokers...)
	rep := f.run(a)
	_, err = a.Archive(ctx, rep, false)
	f.wantUnkept(err, orders[0], orders[1])
	if err := audit.WithoutUnkept(err); err != nil {
		t.Fatal(err)
	}
	dls := f.archived()
	got := map[string]orderdb.DeadLetter{}
	for _, d := range dls {
		got[d.Source] = d
	}
	if len(dls) != 2 || !bytes.Equal(got[orderdb.SourceKafkaDLQ].Payload, garbage) || got[orderdb.SourceKafkaDLQ].SourceID != "0@1" ||
		string(got[orderdb.SourceKafka].Payload) != "also garbage" {
		t.Fatalf("archived %+v", dls)
	}
	// Again, then with the valid dead letter too.
	if _, err := a.Archive(ctx, f.run(a), true); err != nil {
		t.Fatal(err)
	}
	var valid []orderdb.DeadLetter
	for _, d := range f.archived() {
		if d.Valid {
			valid = append(valid, d)
		}
	}
	// orders[0] from the DLQ topic, orders[1] from the order stream.
	if len(f.archived()) != 4 || len(valid) != 2 {
		t.Fatalf("after includeValid: %+v", f.archived())
	}
	for _, d := range valid {
		if d.OrderNo == orders[0].OrderNo && (d.Source != orderdb.SourceKafkaDLQ || !bytes.Equal(d.Payload, raw)) {
			t.Fatalf("valid dead letter archived as %+v", d)
		}
	}
}

// TestAuditCLIArchive: `flashsale audit --archive` keeps the garbage of a
// dead-letter stream in seckill_dead_letter and takes it out of the stream;
// --abandon-stranded keeps the valid stranded order there too.
func TestAuditCLIArchive(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	orders := f.buy(2)
	f.deliver(orders[0])
	f.deadLetterEntry(orders[1], "Error 4025: CONSTRAINT failed")
	if err := f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: f.k.DeadLetters, Values: []any{"error", "decode", "f:order", "garbage"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli("--abandon-stranded"); err == nil {
		t.Fatal("--abandon-stranded without --archive accepted")
	}
	out, err := f.cli("--archive")
	if err == nil || !strings.Contains(out, "archive") || !strings.Contains(out, "seckill_dead_letter") {
		t.Fatalf("--archive (a stranded order fails the audit): %v\n%s", err, out)
	}
	if dls := f.archived(); len(dls) != 1 || dls[0].Valid || string(dls[0].Payload) != `{"error":"decode","f:order":"garbage"}` {
		t.Fatalf("archived %+v", dls)
	}
	if n := f.rdb.XLen(ctx, f.k.DeadLetters).Val(); n != 1 {
		t.Fatalf("dead-letter stream holds %d entries, want the valid order's only", n)
	}
	if _, err := f.cli("--archive", "--abandon-stranded"); err == nil {
		t.Fatal("the audit holds with an order only in a dead-letter store")
	}
	if c, err := f.store.CountDeadLetters(ctx, f.fs.SaleKey()); err != nil || c != (orderdb.DeadLetterCounts{Poison: 1, Orders: 1}) {
		t.Fatalf("after --abandon-stranded: %+v %v", c, err)
	}
}
