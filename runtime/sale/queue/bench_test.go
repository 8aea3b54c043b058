package queue_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// BenchmarkAdmit: one Admit call (100 admitted) costs O(log N + n), about
// the same in a queue of 2,000 places as in one of 200,000.
func BenchmarkAdmit(b *testing.B) {
	for _, n := range []int{2_000, 200_000} {
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) { benchAdmit(b, n) })
	}
}

func benchAdmit(b *testing.B, n int) {
	rdb := testutil.Redis(b)
	sale := testutil.UniqueName(b) + "/s"
	for _, p := range keys.Patterns(sale) {
		testutil.CleanupKeys(b, rdb, p)
	}
	k := keys.ForSale(sale)
	for lo := 0; lo < n; lo += 1000 {
		pipe := rdb.Pipeline()
		for i := lo; i < lo+1000; i++ {
			pipe.ZAdd(ctx, k.Queue, redis.Z{Score: float64(1<<52 + i), Member: user(i)})
			pipe.HSet(ctx, k.Joined, user(i), t0.UnixMilli())
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	q, _ := warmQueueOn(b, rdb, sale, cfg(1000))
	now := t0.Add(time.Second)
	if _, err := q.Admit(ctx, now, int64(n)); err != nil { // empties the full bucket
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now = now.Add(100 * time.Millisecond) // 100 tokens per call at 1000/s
		s, err := q.Admit(ctx, now, int64(n))
		if err != nil || s.New != 100 {
			b.Fatalf("admit: %d new, %d in all, %v", s.New, s.Admitted, err)
		}
		if s.Admitted+100 > int64(n) || s.Outstanding+100 > int64(n) { // start over in the same queue
			b.StopTimer()
			if err := rdb.HSet(ctx, k.QueueMeta, "admitted", 0).Err(); err != nil {
				b.Fatal(err)
			}
			rdb.Del(ctx, k.Admissions)
			b.StartTimer()
		}
	}
}
