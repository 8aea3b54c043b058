package orderdb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Sources of an archived dead letter: where the message was when it was
// archived.
const (
	SourceKafkaDLQ  = "kafka-dlq"  // the sale's dead-letter topic
	SourceDLQStream = "dlq-stream" // a SKU's Redis dead-letter stream
	SourceStream    = "stream"     // a SKU's order stream (not drained)
	SourceKafka     = "kafka"      // the order topic, behind the consumer group
)

// DeadLetter is a message kept in seckill_dead_letter: one the pipeline
// could not store as an order (poison), or a valid order that is archived
// instead of stored (abandoned on purpose, or left undrained).
type DeadLetter struct {
	Sale string
	// SKU is empty when the message names none (garbage bytes in Kafka).
	SKU string
	// Source is one of the Source constants; SourceID the stream entry id
	// or "partition@offset".
	Source, SourceID string
	// OrderNo is empty when the payload names no order.
	OrderNo string
	// Valid says the payload is a valid order of the sale.
	Valid bool
	// Payload is the message as it was: a Kafka value's bytes, or a stream
	// entry's fields as a JSON object.
	Payload []byte
	Reason  string
	// ArchivedAt is filled in by ArchiveDeadLetters (zero: now) and by the
	// readers.
	ArchivedAt time.Time
}

// archiveChunk bounds the rows of one INSERT, so a batch of large payloads
// stays well under max_allowed_packet (16 MiB by default).
const archiveChunk = 64

const archiveHead = `INSERT INTO seckill_dead_letter
  (sale, sku_id, source, source_id, payload_sha256, order_no, valid, payload, reason, archived_at) VALUES `

// ArchiveDeadLetters keeps dls in seckill_dead_letter, idempotently: a
// message archived before (same sale, source, source id and payload) is
// not written again. It returns how many rows are new. Rows are written in
// chunks, each in its own statement: on an error the chunks before it are
// kept, and archiving again finishes the job.
func (s *Store) ArchiveDeadLetters(ctx context.Context, dls []DeadLetter) (int64, error) {
	var total int64
	now := time.Now().UTC()
	for from := 0; from < len(dls); from += archiveChunk {
		chunk := dls[from:min(from+archiveChunk, len(dls))]
		var b strings.Builder
		b.WriteString(archiveHead)
		args := make([]any, 0, len(chunk)*10)
		for i := range chunk {
			d := &chunk[i]
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?,?,?,?,?,?,?,?,?)")
			sum := sha256.Sum256(d.Payload)
			at := d.ArchivedAt
			if at.IsZero() {
				at = now
			}
			payload := d.Payload
			if payload == nil {
				payload = []byte{} // NOT NULL: an empty message is still a message
			}
			args = append(args, d.Sale, d.SKU, d.Source, d.SourceID, sum[:], nullable(d.OrderNo), d.Valid, payload, d.Reason, at.UTC())
		}
		b.WriteString(" ON DUPLICATE KEY UPDATE id = id")
		res, err := s.db.ExecContext(ctx, b.String(), args...)
		if err != nil {
			return total, fmt.Errorf("archive %d dead letters: %w", len(chunk), err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

func nullable(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// DeadLetterCounts are a sale's archived dead letters.
type DeadLetterCounts struct {
	// Poison are messages that are not valid orders; Orders are valid
	// orders archived instead of stored.
	Poison, Orders int64
}

// CountDeadLetters counts a sale's archived dead letters.
func (s *Store) CountDeadLetters(ctx context.Context, saleKey string) (DeadLetterCounts, error) {
	var c DeadLetterCounts
	rows, err := s.db.QueryContext(ctx, `SELECT valid, COUNT(*) FROM seckill_dead_letter WHERE sale = ? GROUP BY valid`, saleKey)
	if err != nil {
		return c, fmt.Errorf("count dead letters of %s: %w", saleKey, err)
	}
	defer rows.Close()
	for rows.Next() {
		var valid bool
		var n int64
		if err := rows.Scan(&valid, &n); err != nil {
			return c, err
		}
		if valid {
			c.Orders += n
		} else {
			c.Poison += n
		}
	}
	return c, rows.Err()
}

// ListDeadLetters returns up to limit of a sale's archived dead letters,
// oldest first.
func (s *Store) ListDeadLetters(ctx context.Context, saleKey string, limit int) ([]DeadLetter, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sale, sku_id, source, source_id, order_no, valid, payload, reason, archived_at
		FROM seckill_dead_letter WHERE sale = ? ORDER BY id LIMIT ?`, saleKey, limit)
	if err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", saleKey, err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var no sql.NullString
		if err := rows.Scan(&d.Sale, &d.SKU, &d.Source, &d.SourceID, &no, &d.Valid, &d.Payload, &d.Reason, &d.ArchivedAt); err != nil {
			return nil, err
		}
		d.OrderNo = no.String
		out = append(out, d)
	}
	return out, rows.Err()
}
