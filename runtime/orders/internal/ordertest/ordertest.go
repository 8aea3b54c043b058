// Package ordertest holds what the tests of the order packages (rollback,
// audit) share about SKUs split into buckets: buyers spread evenly over the
// buckets.
package ordertest

import (
	"fmt"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Share is bucket b's share of stock split into n buckets, as warm gives
// it (stock/n, the remainder to the lowest buckets).
func Share(stock int64, n, b int) int64 {
	s := stock / int64(n)
	if int64(b) < stock%int64(n) {
		s++
	}
	return s
}

// Buyers returns stock user ids (prefix followed by a number), as many in
// each bucket of a SKU split into n buckets as that bucket's Share: every
// buyer buys in their home bucket (keys.Home), so these sell every bucket
// out exactly, without moving stock between buckets.
func Buyers(prefix string, stock int64, n int) []string {
	want := make([]int64, n)
	for b := range want {
		want[b] = Share(stock, n, b)
	}
	out := make([]string, 0, stock)
	for i := 0; int64(len(out)) < stock; i++ {
		u := fmt.Sprintf("%s%d", prefix, i)
		if b := keys.Home(u, n); want[b] > 0 {
			want[b]--
			out = append(out, u)
		}
	}
	return out
}
