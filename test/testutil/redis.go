package testutil

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisAddr is the standalone Redis used when FLASHSALE_TEST_REDIS_ADDR is unset.
const DefaultRedisAddr = "127.0.0.1:6379"

// redisStartHint says how to start the standalone Redis the tests expect.
const redisStartHint = `start it with:
    bash hack/services.sh        (starts Redis and MariaDB; bash .ci/run also does)
or by hand:
    mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
or point the tests elsewhere with FLASHSALE_TEST_REDIS_ADDR=host:port`

// Redis returns a client for the local standalone redis-server at
// FLASHSALE_TEST_REDIS_ADDR (default 127.0.0.1:6379). The client is closed at
// cleanup. If the server does not answer PING within 3 s the test fails with a
// message that says how to start it; it is never skipped.
//
// The server is shared by all tests (and all test packages running in
// parallel): put a UniqueName in every key and register CleanupKeys.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	addr := os.Getenv("FLASHSALE_TEST_REDIS_ADDR")
	if addr == "" {
		addr = DefaultRedisAddr
	}
	c := redis.NewClient(&redis.Options{
		Addr:        addr,
		DialTimeout: 2 * time.Second,
		MaxRetries:  1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		t.Fatalf("testutil: Redis at %s is not reachable (%v); %s", addr, err, redisStartHint)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// CleanupKeys registers a t.Cleanup that deletes every key matching the glob
// pattern (SCAN MATCH, then UNLINK). With a *redis.ClusterClient it scans every
// master (ForEachMaster) and unlinks one key per call so that keys of different
// hash slots never make a CROSSSLOT error.
//
// Cleanups run last-registered first, so register CleanupKeys after the client
// is created (as the signature forces) and the keys are gone before the client
// is closed. If the test closes the client itself, the cleanup reconnects with
// the same options.
//
// A pattern made only of glob characters (such as "*") is refused: the servers
// are shared, so a pattern must name something the test owns, typically
// "*"+UniqueName(t)+"/*".
func CleanupKeys(t testing.TB, c redis.UniversalClient, pattern string) {
	t.Helper()
	if strings.Trim(pattern, "*?[]^-\\") == "" {
		t.Fatalf("testutil: CleanupKeys pattern %q would match keys of other tests; include a UniqueName", pattern)
		return
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := deleteMatching(ctx, c, pattern)
		if errors.Is(err, redis.ErrClosed) {
			// The test closed its client already: reconnect with the same options.
			fresh, ferr := reopen(c)
			if ferr != nil {
				t.Errorf("testutil: CleanupKeys(%q): client closed and cannot reopen: %v", pattern, ferr)
				return
			}
			defer func() { _ = fresh.Close() }()
			n, err = deleteMatching(ctx, fresh, pattern)
		}
		if err != nil {
			t.Errorf("testutil: CleanupKeys(%q): deleted %d keys, then: %v", pattern, n, err)
		}
	})
}

// reopen returns a new client with the options of c.
func reopen(c redis.UniversalClient) (redis.UniversalClient, error) {
	switch cc := c.(type) {
	case *redis.Client:
		return redis.NewClient(cc.Options()), nil
	case *redis.ClusterClient:
		return redis.NewClusterClient(cc.Options()), nil
	default:
		return nil, errors.New("unsupported client type")
	}
}

// deleteMatching unlinks every key matching pattern and returns how many it unlinked.
func deleteMatching(ctx context.Context, c redis.UniversalClient, pattern string) (int, error) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		var total atomic.Int64 // ForEachMaster calls fn concurrently
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			n, err := unlinkScan(ctx, node, pattern, 1)
			total.Add(int64(n))
			return err
		})
		return int(total.Load()), err
	}
	return unlinkScan(ctx, c, pattern, 100)
}

// unlinkScan scans one server (or a standalone client) and unlinks matching
// keys in batches of at most batch keys.
func unlinkScan(ctx context.Context, c redis.Cmdable, pattern string, batch int) (int, error) {
	var (
		n       int
		pending []string
	)
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		if err := c.Unlink(ctx, pending...).Err(); err != nil {
			return err
		}
		n += len(pending)
		pending = pending[:0]
		return nil
	}
	it := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for it.Next(ctx) {
		pending = append(pending, it.Val())
		if len(pending) >= batch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := it.Err(); err != nil {
		return n, err
	}
	return n, flush()
}
