package seckill_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// BenchmarkBucketsOnCluster sells one SKU, not split and split into 3
// buckets, on a local 3-master Redis Cluster, through the seckill handler
// (in-process, 32×GOMAXPROCS buyers, purchase batching and autopipelining
// on, as the pods run). Besides ns/op it reports purchases/s and, from each
// primary's INFO cpu (its main thread), the Redis CPU per purchase of the
// busiest and the idlest primary and of all three: with 3 buckets the load
// should spread evenly, with 1 it sits on one primary. Run it with
//
//	go test ./runtime/seckill/ -run '^$' -bench BenchmarkBucketsOnCluster -benchtime 30000x -count 1
func BenchmarkBucketsOnCluster(b *testing.B) {
	cl := testutil.RedisCluster(b)
	for _, n := range []int32{1, 3} {
		b.Run("buckets="+strconv.Itoa(int(n)), func(b *testing.B) {
			rdb := cl.Client(b)
			fs := newSale(b, rdb, v1alpha1.SKU{ID: "hot", Stock: 1 << 40, Price: "1.00", PerUserLimit: 1, Buckets: n})
			s := startServer(b, rdb, fs, serverOpts{})
			benchSpread(b, s, rdb)
		})
	}
}

func benchSpread(b *testing.B, s *testServer, rdb *redis.ClusterClient) {
	h := s.Handler()
	path := "/api/v1/sales/" + s.sale.Namespace + "/" + s.sale.Name + "/purchase"
	toks := make([]string, b.N)
	for i := range toks {
		tok, _, err := s.signer.Issue(s.sale.SaleKey(), "hot", "b"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = tok
	}
	var next, bad atomic.Int64
	cpu0 := shardCPU(b, rdb)
	start := time.Now()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"sku":"hot","token":"`+toks[i]+`"}`))
			req.Header.Set("X-User-ID", "b"+strconv.FormatInt(i, 10))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusAccepted {
				bad.Add(1)
			}
		}
	})
	b.StopTimer()
	elapsed := time.Since(start)
	cpu1 := shardCPU(b, rdb)
	if n := bad.Load(); n > 0 {
		b.Errorf("%d purchases not answered 202", n)
	}
	var per []float64
	var line []string
	for addr, us := range cpu1 {
		d := float64(us-cpu0[addr]) / float64(b.N)
		per = append(per, d)
		line = append(line, fmt.Sprintf("%s %.1f", addr, d))
	}
	slices.Sort(per)
	slices.Sort(line)
	var total float64
	for _, d := range per {
		total += d
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "purchases/s")
	b.ReportMetric(per[len(per)-1], "busiest-shard-µs/purchase")
	b.ReportMetric(per[0], "idlest-shard-µs/purchase")
	b.ReportMetric(total, "all-shards-µs/purchase")
	b.Logf("Redis main-thread CPU µs per purchase, by primary: %s", strings.Join(line, ", "))
}

// shardCPU reads each primary's main-thread CPU time (user + sys, µs) from
// INFO cpu, by address.
func shardCPU(b *testing.B, rdb *redis.ClusterClient) map[string]int64 {
	var mu sync.Mutex
	out := map[string]int64{}
	err := rdb.ForEachMaster(context.Background(), func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "cpu").Result()
		if err != nil {
			return err
		}
		var us float64
		for _, l := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(l), ":")
			if k == "used_cpu_sys_main_thread" || k == "used_cpu_user_main_thread" {
				f, _ := strconv.ParseFloat(v, 64)
				us += f * 1e6
			}
		}
		mu.Lock()
		out[node.Options().Addr] = int64(us)
		mu.Unlock()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return out
}
