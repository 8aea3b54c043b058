package seckill_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// BenchmarkDurability measures what a durable 202 costs: purchases through
// the seckill handler (in-process, GOMAXPROCS or 32×GOMAXPROCS concurrent
// buyers) against a private
// primary with one replica, with durability off, WAIT for the replica, and
// appendfsync always on the primary (the reply then follows the fsync), and
// both. It reports ns/op (throughput: lower is better) and each purchase's
// p50 and p99 latency. Run it with
//
//	go test ./runtime/seckill/ -run '^$' -bench BenchmarkDurability -benchtime 20000x -count 1
func BenchmarkDurability(b *testing.B) {
	cases := []struct {
		name string
		args []string
		d    seckill.Durability
	}{
		{"off", nil, seckill.Durability{}},
		{"replicas=1", nil, seckill.Durability{Replicas: 1, Timeout: time.Second}},
		{"aof-always", []string{"--appendonly", "yes", "--appendfsync", "always"}, seckill.Durability{}},
		{"replicas=1+aof-always", []string{"--appendonly", "yes", "--appendfsync", "always"}, seckill.Durability{Replicas: 1, Timeout: time.Second}},
	}
	for _, par := range []int{1, 32} {
		for _, tc := range cases {
			name := tc.name + "/buyers=" + strconv.Itoa(par*runtime.GOMAXPROCS(0))
			b.Run(name, func(b *testing.B) { benchPurchase(b, tc.args, tc.d, par) })
		}
	}
}

func benchPurchase(b *testing.B, args []string, d seckill.Durability, parallelism int) {
	primary := testutil.StartRedisServer(b, args...)
	testutil.StartReplica(b, primary)
	rdb := primary.Client(b)
	fs := privateSale(b, 1<<40)
	s, err := startDurable(b, rdb, fs, d)
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	path := "/api/v1/sales/" + fs.Namespace + "/" + fs.Name + "/purchase"
	var (
		users atomic.Int64
		mu    sync.Mutex
		lats  []time.Duration
		bad   atomic.Int64
	)
	b.SetParallelism(parallelism) // parallelism × GOMAXPROCS buyers at once
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			user := "b" + strconv.FormatInt(users.Add(1), 10)
			tok, _, err := s.signer.Issue(fs.SaleKey(), "1001", user)
			if err != nil {
				b.Error(err)
				return
			}
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"sku":"1001","token":"`+tok+`"}`))
			req.Header.Set("X-User-ID", user)
			w := httptest.NewRecorder()
			start := time.Now()
			h.ServeHTTP(w, req)
			mine = append(mine, time.Since(start))
			if w.Code != http.StatusAccepted || d.Enabled() && !strings.Contains(w.Body.String(), `"durable":true`) {
				bad.Add(1)
			}
		}
		mu.Lock()
		lats = append(lats, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if n := bad.Load(); n > 0 {
		b.Errorf("%d purchases not answered 202 (durable)", n)
	}
	slices.Sort(lats)
	if len(lats) > 0 {
		b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds()), "p99-µs")
	}
}
