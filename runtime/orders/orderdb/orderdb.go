// Package orderdb is the MySQL side of orders: the embedded, versioned schema
// and the few statements the pipeline, the payment and the rollback need.
// Every write is idempotent or a compare-and-set, so a redelivered batch, a
// repeated payment or two rollback processes can never double anything.
package orderdb

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrNotFound means no such order in MySQL.
var ErrNotFound = errors.New("order not found")

// Open opens a pool on a go-sql-driver DSN, forcing what the store relies on:
// parseTime for DATETIME columns and UTC so deadlines compare correctly.
func Open(dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse MySQL DSN: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, fmt.Errorf("open MySQL: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxLifetime(5 * time.Minute)
	return db, nil
}

// Migrate brings the schema to the newest version. Running it again is a
// no-op. goose records applied versions in goose_db_version and takes no
// action on versions already there.
func Migrate(ctx context.Context, db *sql.DB) (applied []int64, err error) {
	p, err := goose.NewProvider(goose.DialectMySQL, db, mustSub(migrations, "migrations"))
	if err != nil {
		return nil, fmt.Errorf("prepare migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	for _, r := range res {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// Version is the newest applied schema version (0 when none).
func Version(ctx context.Context, db *sql.DB) (int64, error) {
	p, err := goose.NewProvider(goose.DialectMySQL, db, mustSub(migrations, "migrations"))
	if err != nil {
		return 0, err
	}
	return p.GetDBVersion(ctx)
}

// Store runs the order statements.
type Store struct{ db *sql.DB }

// New returns a Store on db.
func New(db *sql.DB) *Store { return &Store{db: db} }

// DB returns the underlying pool.
func (s *Store) DB() *sql.DB { return s.db }

const insertHead = `INSERT INTO seckill_order
  (order_no, sale, sku_id, user_id, seq, amount, status, pay_deadline, admitted_at) VALUES `

// InsertBatch writes orders in one transaction with one multi-row INSERT. An
// order already there (a redelivery) counts as success: duplicates of the
// same purchase carry the same order number. It returns how many rows were new.
func (s *Store) InsertBatch(ctx context.Context, orders []order.Order) (int64, error) {
	if len(orders) == 0 {
		return 0, nil
	}
	var b strings.Builder
	b.Grow(len(insertHead) + len(orders)*24 + 64)
	b.WriteString(insertHead)
	args := make([]any, 0, len(orders)*8)
	for i := range orders {
		o := &orders[i]
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,0,?,?)")
		args = append(args, o.OrderNo, o.Sale, o.SKU, o.User, o.N, o.Amount, o.Deadline.UTC(), o.AdmittedAt.UTC())
	}
	// A no-op update on conflict: the row keeps its status (it may be paid
	// or cancelled by now) and RowsAffected counts it as 0.
	b.WriteString(" ON DUPLICATE KEY UPDATE id = id")
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, b.String(), args...)
	if err != nil {
		return 0, fmt.Errorf("insert %d orders: %w", len(orders), err)
	}
	n, _ := res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit %d orders: %w", len(orders), err)
	}
	return n, nil
}

// Row is an order as stored.
type Row struct {
	order.Order
	Status        order.Status
	PaidAt        *time.Time
	CancelledAt   *time.Time
	StockReturned bool
}

const rowColumns = `order_no, sale, sku_id, user_id, seq, amount, status, pay_deadline, admitted_at, paid_at, cancelled_at, stock_returned`

func scanRow(sc interface{ Scan(...any) error }) (Row, error) {
	var r Row
	var paid, cancelled sql.NullTime
	err := sc.Scan(&r.OrderNo, &r.Sale, &r.SKU, &r.User, &r.N, &r.Amount, &r.Status, &r.Deadline, &r.AdmittedAt, &paid, &cancelled, &r.StockReturned)
	if paid.Valid {
		r.PaidAt = &paid.Time
	}
	if cancelled.Valid {
		r.CancelledAt = &cancelled.Time
	}
	return r, err
}

// Get reads one order.
func (s *Store) Get(ctx context.Context, orderNo string) (Row, error) {
	r, err := scanRow(s.db.QueryRowContext(ctx, `SELECT `+rowColumns+` FROM seckill_order WHERE order_no = ?`, orderNo))
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("read order %s: %w", orderNo, err)
	}
	return r, nil
}

// PayResult is the outcome of a payment.
type PayResult int

// Payment outcomes.
const (
	PaidNow PayResult = iota
	AlreadyPaid
	Expired
	AlreadyCancelled
)

// Expired lists up to limit created orders of sale whose deadline passed by now.
func (s *Store) Expired(ctx context.Context, saleKey string, now time.Time, limit int) ([]Row, error) {
	return s.query(ctx, `SELECT `+rowColumns+` FROM seckill_order
		WHERE sale = ? AND status = 0 AND pay_deadline <= ? ORDER BY pay_deadline LIMIT ?`, saleKey, now.UTC(), limit)
}

// Cancel is the compare-and-set created → cancelled of an expired order. It
// reports whether this call won.
func (s *Store) Cancel(ctx context.Context, orderNo string, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx,
		`UPDATE seckill_order SET status = 2, cancelled_at = ? WHERE order_no = ? AND status = 0 AND pay_deadline <= ?`,
		now.UTC(), orderNo, now.UTC())
	if err != nil {
		return false, fmt.Errorf("cancel order %s: %w", orderNo, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Unreturned lists cancelled orders whose unit is not known to be back in
// Redis yet: the rollback's second step, to finish after a crash.
func (s *Store) Unreturned(ctx context.Context, saleKey string, limit int) ([]Row, error) {
	return s.query(ctx, `SELECT `+rowColumns+` FROM seckill_order
		WHERE sale = ? AND status = 2 AND stock_returned = 0 LIMIT ?`, saleKey, limit)
}

// MarkReturned records that the cancelled order's unit is back in Redis.
func (s *Store) MarkReturned(ctx context.Context, orderNo string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE seckill_order SET stock_returned = 1 WHERE order_no = ? AND status = 2`, orderNo); err != nil {
		return fmt.Errorf("mark stock of order %s returned: %w", orderNo, err)
	}
	return nil
}

// Counts are a SKU's orders by status.
type Counts struct {
	Created, Paid, Cancelled int64
	// Returning are cancelled orders whose unit is not back in Redis yet.
	Returning int64
}

// CountBySKU counts a sale's orders per SKU and status.
func (s *Store) CountBySKU(ctx context.Context, saleKey string) (map[string]*Counts, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sku_id, status, stock_returned, COUNT(*) FROM seckill_order
		WHERE sale = ? GROUP BY sku_id, status, stock_returned`, saleKey)
	if err != nil {
		return nil, fmt.Errorf("count orders of %s: %w", saleKey, err)
	}
	defer rows.Close()
	out := map[string]*Counts{}
	for rows.Next() {
		var (
			sku      string
			st       order.Status
			returned bool
			n        int64
		)
		if err := rows.Scan(&sku, &st, &returned, &n); err != nil {
			return nil, err
		}
		c := out[sku]
		if c == nil {
			c = &Counts{}
			out[sku] = c
		}
		switch st {
		case order.Created:
			c.Created += n
		case order.Paid:
			c.Paid += n
		case order.Cancelled:
			c.Cancelled += n
			if !returned {
				c.Returning += n
			}
		}
	}
	return out, rows.Err()
}

// OrderNos returns every order number of a sale's SKU (for the audit).
func (s *Store) OrderNos(ctx context.Context, saleKey, sku string) (map[string]order.Status, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT order_no, status FROM seckill_order WHERE sale = ? AND sku_id = ?`, saleKey, sku)
	if err != nil {
		return nil, fmt.Errorf("list orders of %s/%s: %w", saleKey, sku, err)
	}
	defer rows.Close()
	out := map[string]order.Status{}
	for rows.Next() {
		var no string
		var st order.Status
		if err := rows.Scan(&no, &st); err != nil {
			return nil, err
		}
		out[no] = st
	}
	return out, rows.Err()
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]Row, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query orders: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Pay is the compare-and-set created → paid of an order of sale, before
// the deadline by now. The rollback's cancel is the same CAS from the other
// side: whichever runs first wins, and the other sees the order no longer
// created. An order number of another sale in the same database is
// ErrNotFound here and is never touched.
func (s *Store) Pay(ctx context.Context, saleKey, orderNo string, now time.Time) (PayResult, Row, error) {
	res, err := s.db.ExecContext(ctx,
		`UPDATE seckill_order SET status = 1, paid_at = ? WHERE order_no = ? AND sale = ? AND status = 0 AND pay_deadline > ?`,
		now.UTC(), orderNo, saleKey, now.UTC())
	if err != nil {
		return 0, Row{}, fmt.Errorf("pay order %s: %w", orderNo, err)
	}
	n, _ := res.RowsAffected()
	row, err := s.Get(ctx, orderNo)
	if err != nil {
		return 0, row, err
	}
	if row.Sale != saleKey {
		return 0, Row{}, ErrNotFound
	}
	switch {
	case n == 1:
		return PaidNow, row, nil
	case row.Status == order.Paid:
		return AlreadyPaid, row, nil
	case row.Status == order.Cancelled:
		return AlreadyCancelled, row, nil
	default: // still created, so the deadline has passed
		return Expired, row, nil
	}
}

// State is what the audit needs of one stored order.
type State struct {
	Status        order.Status
	StockReturned bool
}

// States returns the status of every order of a sale's SKU, with whether a
// cancelled order's unit is back in Redis (for the audit).
func (s *Store) States(ctx context.Context, saleKey, sku string) (map[string]State, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT order_no, status, stock_returned FROM seckill_order WHERE sale = ? AND sku_id = ?`, saleKey, sku)
	if err != nil {
		return nil, fmt.Errorf("list orders of %s/%s: %w", saleKey, sku, err)
	}
	defer rows.Close()
	out := map[string]State{}
	for rows.Next() {
		var no string
		var st State
		if err := rows.Scan(&no, &st.Status, &st.StockReturned); err != nil {
			return nil, err
		}
		out[no] = st
	}
	return out, rows.Err()
}
