package orderdb

import (
	"context"
	"fmt"
	"time"
)

// Unpaid lists up to limit orders of sale still awaiting payment, whatever
// their deadline: those a sale deleted before its payment window closed
// must cancel, since its pay endpoint goes with it.
func (s *Store) Unpaid(ctx context.Context, saleKey string, limit int) ([]Row, error) {
	return s.query(ctx, `SELECT `+rowColumns+` FROM seckill_order
		WHERE sale = ? AND status = 0 ORDER BY pay_deadline LIMIT ?`, saleKey, limit)
}

// CancelUnpaid is the compare-and-set created → cancelled of Cancel without
// its deadline condition, for an order that can never be paid any more (its
// sale is being deleted). A payment that won first keeps the order paid:
// this call then reports false.
func (s *Store) CancelUnpaid(ctx context.Context, orderNo string, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx,
		`UPDATE seckill_order SET status = 2, cancelled_at = ? WHERE order_no = ? AND status = 0`, now.UTC(), orderNo)
	if err != nil {
		return false, fmt.Errorf("cancel unpaid order %s: %w", orderNo, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
