package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// ActionArchive is the repair that copied a message into the MySQL table
// seckill_dead_letter, which outlives the sale.
const ActionArchive = "archive"

// StrandedOrders counts the valid orders that only a dead-letter topic or
// stream holds (MySQL refused them), over every SKU of the report: each
// SKU's Stranded, which is InFlight.DeadLetters plus the dead letters of
// orders Redis does not know (they would go with the stores just as well).
func (r *Report) StrandedOrders() int64 {
	var n int64
	for _, s := range r.SKUs {
		n += max(s.Stranded, s.InFlight.DeadLetters)
	}
	return n
}

// Archive keeps in seckill_dead_letter what would otherwise go with the
// sale's streams and topics when they are torn down:
//
//   - every poison message (not a valid order of the sale: garbage bytes, an
//     order of another sale) of the Redis dead-letter streams, the
//     dead-letter topic, the order streams and the order topic behind the
//     consumer group;
//   - with includeValid, every valid order of those stores that MySQL does
//     not hold: stranded orders abandoned on purpose, or orders a deleted
//     sale could not drain in time.
//
// Only once the rows are committed are the poison entries deleted from the
// Redis dead-letter streams (the table holds them now; a human reads them
// there). Everything else stays where it is: a valid entry for a later
// repair, Kafka because it cannot delete one message, poison in an order
// stream because the worker moves it on (it is archived again from the
// dead-letter stream under its own source id; nothing is ever dropped).
//
// Archive reads the stores again instead of trusting rep's evidence, so it
// deletes exactly what it archived; rep (made by Run, or nil: teardown
// archives without auditing first) must be of the auditor's sale.
// Archiving twice is harmless: a message already archived is not written
// again. An error means something may not be archived yet: the caller must
// not delete the stores. Without includeValid, a valid order the stores
// hold that is neither in MySQL nor archived before is such an error
// (*UnkeptOrders, after the poison is archived): a teardown must never
// delete its only copy, even one that arrived after the last audit. The
// table must exist (orderdb.Migrate).
func (a *Auditor) Archive(ctx context.Context, rep *Report, includeValid bool) ([]Repair, error) {
	saleKey := a.cfg.Sale.SaleKey()
	if rep != nil && rep.SaleKey != saleKey {
		return nil, fmt.Errorf("audit: Archive of sale %s given a report of %s", saleKey, rep.SaleKey)
	}
	ar := &archiver{a: a, saleKey: saleKey, includeValid: includeValid,
		durable: map[string]map[string]orderdb.State{}, poisonIDs: map[string][]string{}}
	var errs []error
	for _, k := range a.bk.All(saleKey, a.cfg.Sale.SKUIDs()) {
		if err := ar.readStreams(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	if len(a.cfg.Brokers) > 0 {
		if err := ar.readKafka(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	var log repairLog
	if len(ar.rows) > 0 {
		_, err := a.cfg.Orders.ArchiveDeadLetters(ctx, ar.rows)
		for _, d := range ar.rows {
			log.note(Repair{Action: ActionArchive, SKU: d.SKU, OrderNo: d.OrderNo, Detail: archivedDetail(d)}, err)
		}
		if err == nil {
			ar.deletePoison(ctx, &log)
		}
	}
	done, err := log.result()
	if len(ar.unkept) > 0 {
		errs = append(errs, &UnkeptOrders{OrderNos: ar.unkept})
	}
	return done, errors.Join(append(errs, err)...)
}

func archivedDetail(d orderdb.DeadLetter) string {
	what := "poison message"
	if d.Valid {
		what = "valid order (not in MySQL)"
	}
	return fmt.Sprintf("%s %s %s kept in seckill_dead_letter", what, d.Source, d.SourceID)
}

// archiver is one Archive in progress.
type archiver struct {
	a            *Auditor
	saleKey      string
	includeValid bool
	// durable caches the MySQL states of a SKU's orders, read when needed.
	durable map[string]map[string]orderdb.State
	rows    []orderdb.DeadLetter
	// poisonIDs are the poison entries of each dead-letter stream, to
	// delete once archived.
	poisonIDs map[string][]string
	// archived are the valid orders already kept in seckill_dead_letter
	// (read when needed); unkept the valid orders neither there nor in
	// MySQL, found without includeValid.
	archived map[string]bool
	unkept   []string
}

// unkeep notes a valid order MySQL lacks, found without includeValid,
// unless an earlier Archive kept it.
func (ar *archiver) unkeep(ctx context.Context, orderNo string) error {
	if ar.archived == nil {
		got, err := ar.a.cfg.Orders.ArchivedOrders(ctx, ar.saleKey)
		if err != nil {
			return err
		}
		ar.archived = got
	}
	if !ar.archived[orderNo] {
		ar.unkept = append(ar.unkept, orderNo)
	}
	return nil
}

// UnkeptOrders is Archive's error, without includeValid, when the stores
// hold valid orders that are neither in MySQL nor archived: deleting the
// stores would lose them (found after the last audit, say, or stored by no
// one yet). The caller keeps the stores; the next audit repairs or reports
// them as stranded.
type UnkeptOrders struct{ OrderNos []string }

// WithoutUnkept is err without its *UnkeptOrders, for a caller that does
// not delete the stores (the next audit reports those orders as stranded).
func WithoutUnkept(err error) error {
	var u *UnkeptOrders
	if errors.As(err, &u) && err == error(u) {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	var rest []error
	for _, e := range j.Unwrap() {
		if !errors.As(e, &u) {
			rest = append(rest, e)
		}
	}
	return errors.Join(rest...)
}

func (e *UnkeptOrders) Error() string {
	return fmt.Sprintf("%d valid orders are only in the sale's streams or topics, neither in MySQL nor archived (%s): "+
		"the stores stay until they are stored or abandoned", len(e.OrderNos), clip(strings.Join(e.OrderNos, ", "), 200))
}

// keep adds the message to the rows to archive when it is poison (err is
// not nil), or a valid order MySQL lacks and valid ones are wanted. It says
// whether it did.
func (ar *archiver) keep(ctx context.Context, d orderdb.DeadLetter, o order.Order, err error) (bool, error) {
	d.Sale = ar.saleKey
	// A poison payload may name an order (or a SKU) of any length and
	// encoding: the columns get a clean prefix, the payload keeps it all.
	d.OrderNo = clip(o.OrderNo, 96)
	if d.SKU == "" && err == nil {
		d.SKU = o.SKU
	}
	if err != nil {
		d.Reason = clip(strings.TrimPrefix(d.Reason+"; not a valid order: "+err.Error(), "; "), 4096)
		ar.rows = append(ar.rows, d)
		return true, nil
	}
	d.Reason = clip(d.Reason, 4096)
	if _, ok := ar.durable[o.SKU]; !ok {
		st, err := ar.a.cfg.Orders.States(ctx, ar.saleKey, o.SKU)
		if err != nil {
			return false, err
		}
		ar.durable[o.SKU] = st
	}
	if _, stored := ar.durable[o.SKU][o.OrderNo]; stored {
		return false, nil
	}
	if !ar.includeValid {
		return false, ar.unkeep(ctx, o.OrderNo)
	}
	d.Valid = true
	ar.rows = append(ar.rows, d)
	return true, nil
}

// readStreams reads the dead-letter stream and order stream of bucket k of
// a SKU (of the SKU, when it is not split).
func (ar *archiver) readStreams(ctx context.Context, k keys.SKU) error {
	sku := k.ID
	dlq, err := ar.a.cfg.Redis.XRange(ctx, k.DeadLetters, "-", "+").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read dead-letter stream %s: %w", k.DeadLetters, err)
	}
	for _, m := range dlq {
		fields := map[string]any{}
		for f, v := range m.Values {
			if name, ok := strings.CutPrefix(f, "f:"); ok {
				fields[name] = v
			}
		}
		reason, _ := m.Values["error"].(string)
		o, derr := ar.decode(fields)
		d := orderdb.DeadLetter{SKU: sku, Source: orderdb.SourceDLQStream, SourceID: m.ID, Payload: entryJSON(m.Values), Reason: "dead-lettered because: " + reason}
		kept, err := ar.keep(ctx, d, o, derr)
		if err != nil {
			return err
		}
		if kept && derr != nil {
			ar.poisonIDs[k.DeadLetters] = append(ar.poisonIDs[k.DeadLetters], m.ID)
		}
	}
	entries, err := ar.a.cfg.Redis.XRange(ctx, k.Stream, "-", "+").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read order stream %s: %w", k.Stream, err)
	}
	for _, m := range entries {
		if m.Values == nil {
			continue // deleted while pending: nothing left
		}
		o, derr := ar.decode(m.Values)
		d := orderdb.DeadLetter{SKU: sku, Source: orderdb.SourceStream, SourceID: m.ID, Payload: entryJSON(m.Values), Reason: "in the order stream at teardown"}
		if _, err := ar.keep(ctx, d, o, derr); err != nil {
			return err
		}
	}
	return nil
}

// decode reads an order from stream fields; an order of another sale is
// not valid here.
func (ar *archiver) decode(fields map[string]any) (order.Order, error) {
	o, err := order.FromStream(fields)
	if err == nil && o.Sale != ar.saleKey {
		err = fmt.Errorf("order %s belongs to sale %q", o.OrderNo, o.Sale)
	}
	return o, err
}

// clip makes s valid UTF-8 of at most n characters, for a VARCHAR(n).
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// entryJSON is a stream entry's fields as a JSON object of strings. A
// stream holds bytes, and JSON would replace the bytes of invalid UTF-8:
// an entry with any is kept as {"encoding":"base64","fields":[[k,v],...]}
// with every key and value base64-encoded, so the bytes survive as they were.
func entryJSON(values map[string]any) []byte {
	plain := map[string]string{}
	valid := true
	for k, v := range values {
		s := fmt.Sprint(v)
		plain[k] = s
		valid = valid && utf8.ValidString(k) && utf8.ValidString(s)
	}
	if valid {
		b, _ := json.Marshal(plain) // strings only: cannot fail
		return b
	}
	enc := base64.StdEncoding.EncodeToString
	pairs := make([][2]string, 0, len(plain))
	for k, v := range plain {
		pairs = append(pairs, [2]string{enc([]byte(k)), enc([]byte(v))})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i][0] < pairs[j][0] })
	b, _ := json.Marshal(map[string]any{"encoding": "base64", "fields": pairs})
	return b
}

// deletePoison deletes the archived poison entries of the dead-letter streams.
func (ar *archiver) deletePoison(ctx context.Context, log *repairLog) {
	for stream, ids := range ar.poisonIDs {
		err := ar.a.cfg.Redis.XDel(ctx, stream, ids...).Err()
		for _, id := range ids {
			log.note(Repair{Action: ActionDeleteDeadLetter, Detail: fmt.Sprintf(
				"deleted poison entry %s of %s (archived in seckill_dead_letter)", id, stream)}, err)
		}
	}
}

// readKafka reads the whole dead-letter topic and the order topic behind
// the consumer group.
func (ar *archiver) readKafka(ctx context.Context) error {
	cfg := ar.a.cfg.Sarama
	if cfg == nil {
		cfg = SaramaConfig()
	}
	client, err := sarama.NewClient(ar.a.cfg.Brokers, cfg)
	if err != nil {
		return fmt.Errorf("connect to kafka %s: %w", strings.Join(ar.a.cfg.Brokers, ","), err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer consumer.Close()
	dlq, topic := keys.DeadLetterTopic(ar.saleKey), keys.Topic(ar.saleKey)
	if err := ar.readTopic(ctx, client, consumer, dlq, orderdb.SourceKafkaDLQ, nil); err != nil {
		return err
	}
	parts, err := partitions(client, topic)
	if err != nil || len(parts) == 0 {
		return err
	}
	committed, err := committedOffsets(client, keys.ConsumerGroup(ar.saleKey), topic, parts)
	if err != nil {
		return err
	}
	return ar.readTopic(ctx, client, consumer, topic, orderdb.SourceKafka, committed)
}

// readTopic reads every partition of topic from the committed offset (or
// the oldest) to its end and keeps what Archive keeps.
func (ar *archiver) readTopic(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic, source string, committed map[int32]int64) error {
	parts, err := partitions(client, topic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		oldest, newest, err := bounds(client, topic, p)
		if err != nil {
			return err
		}
		from := max(oldest, committed[p])
		if newest <= from {
			continue
		}
		msgs, complete := ar.a.readRaw(ctx, consumer, topic, p, from, newest)
		for _, m := range msgs {
			o, derr := order.Unmarshal(m.Value)
			if derr == nil && o.Sale != ar.saleKey {
				derr = fmt.Errorf("order %s belongs to sale %q", o.OrderNo, o.Sale)
			}
			d := orderdb.DeadLetter{Source: source, SourceID: strconv.Itoa(int(p)) + "@" + strconv.FormatInt(m.Offset, 10),
				Payload: m.Value, Reason: headerReason(m, source)}
			if _, err := ar.keep(ctx, d, o, derr); err != nil {
				return err
			}
		}
		if !complete {
			return fmt.Errorf("could not read %s/%d [%d,%d) within %s: not everything is archived", topic, p, from, newest, ar.a.cfg.KafkaTimeout)
		}
	}
	return nil
}

func headerReason(m *sarama.ConsumerMessage, source string) string {
	if source != orderdb.SourceKafkaDLQ {
		return "behind the consumer group at teardown"
	}
	if r := dlqReason(m); r != "" {
		return "dead-lettered because: " + r
	}
	return "dead-lettered"
}

// readRaw reads [from, to) of one partition as it is; complete is false
// when it ran out of time first.
func (a *Auditor) readRaw(ctx context.Context, consumer sarama.Consumer, topic string, p int32, from, to int64) (out []*sarama.ConsumerMessage, complete bool) {
	pc, err := consumer.ConsumePartition(topic, p, from)
	if err != nil {
		a.log.Warn("Reading a Kafka partition failed", "topic", topic, "partition", p, "err", err)
		return nil, false
	}
	defer pc.AsyncClose()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.KafkaTimeout)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return out, false
		case cerr, ok := <-pc.Errors():
			if ok {
				a.log.Warn("Reading a Kafka partition failed", "topic", topic, "partition", p, "err", cerr)
			}
			return out, false
		case m, ok := <-pc.Messages():
			if !ok {
				return out, false
			}
			out = append(out, m)
			if m.Offset >= to-1 {
				return out, true
			}
		}
	}
}
