package orderdb

import (
	"context"
	"fmt"
)

// ArchivedOrders returns the order numbers of the valid orders of a sale
// kept in seckill_dead_letter: orders archived instead of stored, which a
// teardown may delete the stores of (their copy outlives the sale).
func (s *Store) ArchivedOrders(ctx context.Context, saleKey string) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT order_no FROM seckill_dead_letter WHERE sale = ? AND valid = 1 AND order_no IS NOT NULL`, saleKey)
	if err != nil {
		return nil, fmt.Errorf("list the archived orders of %s: %w", saleKey, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var no string
		if err := rows.Scan(&no); err != nil {
			return nil, err
		}
		out[no] = true
	}
	return out, rows.Err()
}
