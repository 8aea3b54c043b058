package cli_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// hotSale is a sale whose hot SKU takes 80,000 purchases/s in one bucket.
const hotSale = `apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: hot, namespace: shop}
spec:
  startTime: "2026-11-11T12:00:00Z"
  endTime: "2026-11-11T12:30:00Z"
  skus:
    - {id: "1001", stock: 5000, price: "3999.00"}
    - {id: "1002", stock: 20000, price: "19.90", perUserLimit: 3}
  rateLimit: {requestsPerSecond: 100000}
  seckill: {replicas: 3, maxReplicas: 12}
  worker: {replicas: 2}
  kafka: {partitions: 12}
  expected:
    buyers: 1000000
    purchasesPerSecond: 90000
    skus: [{id: "1001", purchasesPerSecond: 80000}]
`

func writeManifest(t *testing.T, y string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sale.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// countingListener accepts and counts connections on 127.0.0.1.
func countingListener(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	}()
	return ln.Addr().String(), &n
}

// TestPlanOfflineTouchesNothing: without --check, plan dials none of the
// addresses it is given, prints the operator's objects and the warnings,
// and exits 0 with warnings unless --fail-on-warning.
func TestPlanOfflineTouchesNothing(t *testing.T) {
	path := writeManifest(t, hotSale)
	addr, dials := countingListener(t)
	out, err := run(context.Background(), "plan", "--file", path, "--redis-primaries", "3", "--redis-addr", addr,
		"--mysql-dsn", "root@tcp("+addr+")/orders", "--kafka-brokers", addr, "--image", "registry.example/fs:1.2.3")
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	time.Sleep(100 * time.Millisecond) // a dial in flight would be counted by now
	if n := dials.Load(); n != 0 {
		t.Fatalf("plan without --check made %d connections", n)
	}
	for _, want := range []string{
		"Plan of shop/hot (Redis: 3 primaries, from --redis-primaries)",
		"Deployment               hot-seckill   3         registry.example/fs:1.2.3",
		"HorizontalPodAutoscaler  hot-seckill   3-12",
		"fs:{shop/hot/1001}:{stock,initial,orders:stream,holders,seq,expiry,orders,tokens}",
		"  - 3 primaries, 1 bucket: 80,000 purchases/s on one shard (1001#0), budget 10,000\n",
		"SKU 1001: 80,000 purchases/s in 1 bucket: split it (spec.skus[].buckets: 3, one per primary)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NetworkPolicy") {
		t.Errorf("NetworkPolicies listed without --network-policies:\n%s", out)
	}
	out, err = run(context.Background(), "plan", "--file", path, "--network-policies")
	if err != nil || !strings.Contains(out, "NetworkPolicy            hot-seckill") {
		t.Errorf("--network-policies: the seckill pods' NetworkPolicy is not listed: %v\n%s", err, out)
	}
	out, err = run(context.Background(), "plan", "--file", path, "--fail-on-warning")
	if err == nil || !strings.Contains(err.Error(), "--fail-on-warning") || !strings.Contains(out, "Warnings") {
		t.Fatalf("--fail-on-warning with warnings: err %v\n%s", err, out)
	}
}

func TestPlanJSON(t *testing.T) {
	path := writeManifest(t, hotSale)
	out, err := run(context.Background(), "plan", "--file", path, "-o", "json", "--shard-budget", "100000", "--pipeline-rate", "50000", "--pod-startup", "10s")
	if err != nil {
		t.Fatalf("plan -o json: %v\n%s", err, out)
	}
	var p struct {
		Figures struct {
			ShardBudget int64 `json:"shardBudget"`
		} `json:"figures"`
		Objects  []struct{ Kind, Name string } `json:"objects"`
		Redis    struct{ Orders, Bytes int64 } `json:"redis"`
		Warnings []string                      `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	// 25,000 orders (the stock, under the million buyers) take some
	// 15 MB, and with a 100,000/s shard budget the sale fits.
	if p.Figures.ShardBudget != 100000 || p.Redis.Orders != 25000 || p.Redis.Bytes < 10<<20 || len(p.Warnings) != 0 || len(p.Objects) < 6 {
		t.Fatalf("plan: %+v", p)
	}
}

// TestPlanCheck reads the topology from the real Redis (standalone: 1; a
// 3-master cluster: 3) and reports MySQL and Kafka reachable.
func TestPlanCheck(t *testing.T) {
	path := writeManifest(t, hotSale)
	rdb := testutil.Redis(t)
	_, dsn := testutil.MySQL(t)
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	out, err := run(context.Background(), "plan", "--file", path, "--check", "--redis-primaries", "7",
		"--redis-addr", rdb.Options().Addr, "--mysql-dsn", dsn, "--kafka-brokers", strings.Join(kafka.ListenAddrs(), ","))
	if err != nil {
		t.Fatalf("plan --check: %v\n%s", err, out)
	}
	for _, want := range []string{"Redis: reachable, 1 primary", "MySQL: reachable", "Kafka: reachable, 1 broker",
		"Plan of shop/hot (Redis: 1 primary, from Redis (--check))"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	cluster := testutil.RedisCluster(t)
	out, err = run(context.Background(), "plan", "--file", path, "--check", "--redis-cluster", strings.Join(cluster.Addrs, ","))
	if err != nil || !strings.Contains(out, "Redis: reachable, 3 primaries") || !strings.Contains(out, "3 primaries, 1 bucket: 80,000 purchases/s") {
		t.Fatalf("plan --check on a 3-master cluster: %v\n%s", err, out)
	}
}

func TestPlanErrorsAreClear(t *testing.T) {
	path := writeManifest(t, hotSale)
	typo := writeManifest(t, strings.Replace(hotSale, "purchasesPerSecond: 90000", "purchasesPerSec: 90000", 1))
	dead, _ := countingListener(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"plan"}, `required flag(s) "file" not set`},
		{[]string{"plan", "--file", "/nonexistent.yaml"}, "no such file"},
		{[]string{"plan", "--file", typo}, "spec.expected.purchasesPerSec"},
		{[]string{"plan", "--file", path, "--redis-primaries", "0"}, "--redis-primaries 0: want 1 or more"},
		{[]string{"plan", "--file", path, "-o", "yaml"}, `--output "yaml": want text or json`},
		{[]string{"plan", "--file", path, "--pod-startup", "0s"}, "--pod-startup 0s: want a positive duration"},
		{[]string{"plan", "--file", path, "--check", "--redis-addr", dead}, "--check: connect to redis " + dead},
	}
	for _, tc := range cases {
		out, err := run(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%v: err %v out %q, want %q", tc.args, err, out, tc.want)
		}
	}
}
