package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clocktesting "k8s.io/utils/clock/testing"

	salekeys "github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// redisForTest connects to the test Redis (REDIS_ADDR, default
// 127.0.0.1:6379) and returns a unique key prefix whose keys are deleted at
// the end of the test.
func redisForTest(t *testing.T) (*redis.Client, string) {
	t.Helper()
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("Redis at %s is unreachable (%v): start one with `redis-server --port 6379 --save '' --appendonly no --daemonize yes` or set REDIS_ADDR", addr, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "test:ratelimit:" + t.Name() + ":" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, err := rdb.Keys(ctx, prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb, prefix
}

// TestRegistryTwoPods counts two pods' heartbeats, drops the one that
// stops beating or leaves, on one Redis and on a 3-master Redis Cluster
// (the heartbeat is one MULTI on the sale's one key).
func TestRegistryTwoPods(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		rdb, prefix := redisForTest(t)
		registryTwoPods(t, rdb, prefix+"fs:{ns/sale}:pods")
	})
	t.Run("cluster", func(t *testing.T) {
		rdb := testutil.RedisCluster(t).Client(t)
		ns := testutil.UniqueName(t)
		testutil.CleanupKeys(t, rdb, "fs:{"+ns+"/sale}:*")
		registryTwoPods(t, rdb, salekeys.ForSale(ns+"/sale").Pods)
	})
}

func registryTwoPods(t *testing.T, rdb redis.UniversalClient, key string) {
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Now())
	const ttl = 3 * time.Second
	a := NewRegistry(rdb, key, "pod-a", ttl, clk)
	b := NewRegistry(rdb, key, "pod-b", ttl, clk)

	beat := func(r *Registry, want int) {
		t.Helper()
		n, err := r.Beat(ctx)
		if err != nil {
			t.Fatalf("Beat: %v", err)
		}
		if n != want {
			t.Fatalf("%s: live = %d, want %d", r.podID, n, want)
		}
	}
	beat(a, 1)
	beat(b, 2)
	beat(a, 2)

	pttl, err := rdb.PTTL(ctx, key).Result()
	if err != nil || pttl <= 0 || pttl > 3*ttl {
		t.Fatalf("PTTL = %v, %v; want in (0, %v]", pttl, err, 3*ttl)
	}

	// pod-b stops beating; pod-a keeps going.
	clk.Step(2 * time.Second)
	beat(a, 2) // b beat 2 s ago, within ttl
	clk.Step(1500 * time.Millisecond)
	beat(a, 1) // b silent for 3.5 s > ttl

	// b comes back, then leaves cleanly: the drop is immediate.
	beat(b, 2)
	if err := b.Leave(ctx); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	beat(a, 1)
	if err := b.Leave(ctx); err != nil { // idempotent
		t.Fatalf("second Leave: %v", err)
	}
}

func TestRegistryRun(t *testing.T) {
	rdb, prefix := redisForTest(t)
	key := prefix + "fs:{ns/sale}:pods"
	clk := clocktesting.NewFakeClock(time.Now())
	const every = time.Second
	a := NewRegistry(rdb, key, "pod-a", 3*every, clk)
	b := NewRegistry(rdb, key, "pod-b", 3*every, clk)
	a.OnError = func(err error) { t.Errorf("unexpected heartbeat error: %v", err) }

	lives := make(chan int, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		a.Run(ctx, every, func(n int) { lives <- n })
		close(done)
	}()
	recv := func(want int) {
		t.Helper()
		select {
		case n := <-lives:
			if n != want {
				t.Fatalf("onLive(%d), want %d", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no onLive call (want %d)", want)
		}
	}
	recv(1) // first beat is immediate
	if _, err := b.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitForTimer(t, clk)
	clk.Step(every)
	recv(2)

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// Run left on the way out.
	if err := rdb.ZScore(context.Background(), key, "pod-a").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("pod-a still registered after Run returned: %v", err)
	}
}

func TestRegistryRunKeepsLastCountOnError(t *testing.T) {
	// A client pointing at a closed port: every beat fails.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	clk := clocktesting.NewFakeClock(time.Now())
	r := NewRegistry(rdb, "fs:{ns/none}:pods", "pod-x", 3*time.Second, clk)
	errs := make(chan error, 10)
	r.OnError = func(err error) { errs <- err }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	called := false
	go func() {
		r.Run(ctx, time.Second, func(int) { called = true })
		close(done)
	}()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("nil error reported")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no error reported")
	}
	cancel()
	<-done
	if called {
		t.Fatal("onLive called although every beat failed")
	}
}

// waitForTimer waits until Run has armed its timer on the fake clock.
func waitForTimer(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("Run never armed its timer")
		}
		time.Sleep(time.Millisecond)
	}
}
