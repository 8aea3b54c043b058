package testutil_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n := testutil.UniqueName(t)
		if !regexp.MustCompile(`^t-[0-9a-f]{10}$`).MatchString(n) || !dns1123Label.MatchString(n) {
			t.Fatalf("UniqueName() = %q, want t- and 10 lowercase hex digits", n)
		}
		if seen[n] {
			t.Fatalf("UniqueName() returned %q twice", n)
		}
		seen[n] = true
	}
}

func TestFreePort(t *testing.T) {
	p := testutil.FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort() = %d", p)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("cannot listen on the port FreePort returned: %v", err)
	}
	_ = l.Close()
}

func TestRedis(t *testing.T) {
	ctx := context.Background()
	rdb := testutil.Redis(t)
	ns := testutil.UniqueName(t)
	// 250 keys: more than one UNLINK batch and more than one SCAN page.
	keys := make([]string, 250)
	for i := range keys {
		keys[i] = fmt.Sprintf("fs:{%s/sale:%d}:stock", ns, i)
	}
	other := "fs:{" + testutil.UniqueName(t) + "/sale}:stock"
	testutil.CleanupKeys(t, rdb, other)

	t.Run("set", func(t *testing.T) {
		testutil.CleanupKeys(t, rdb, "*"+ns+"/*")
		for _, k := range keys {
			if err := rdb.Set(ctx, k, 5000, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := rdb.Set(ctx, other, 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n := rdb.Exists(ctx, keys...).Val(); n != int64(len(keys)) {
			t.Fatalf("EXISTS = %d, want %d", n, len(keys))
		}
	})
	if n := rdb.Exists(ctx, keys...).Val(); n != 0 {
		t.Errorf("CleanupKeys left %d of the test's keys", n)
	}
	if n := rdb.Exists(ctx, other).Val(); n != 1 {
		t.Errorf("CleanupKeys deleted a key that did not match its pattern")
	}
}

// TestCleanupKeysAfterClose checks that keys are still removed when the test
// closed its client before the cleanups ran.
func TestCleanupKeysAfterClose(t *testing.T) {
	ctx := context.Background()
	ns := testutil.UniqueName(t)
	key := "fs:{" + ns + "/sale}:stock"
	t.Run("closes its client", func(t *testing.T) {
		rdb := testutil.Redis(t)
		testutil.CleanupKeys(t, rdb, "*"+ns+"/*")
		if err := rdb.Set(ctx, key, 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Close(); err != nil {
			t.Fatal(err)
		}
	})
	if n := testutil.Redis(t).Exists(ctx, key).Val(); n != 0 {
		t.Errorf("key %s survived cleanup", key)
	}
}

// fatalRecorder is a testing.TB whose Fatalf only records the message.
type fatalRecorder struct {
	testing.TB
	msg             string
	cleanups        int
	forwardCleanups bool
}

func (f *fatalRecorder) Helper()                           {}
func (f *fatalRecorder) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }
func (f *fatalRecorder) Cleanup(fn func()) {
	f.cleanups++
	if f.forwardCleanups {
		f.TB.Cleanup(fn)
	}
}

func TestCleanupKeysRefusesCatchAll(t *testing.T) {
	rdb := testutil.Redis(t)
	for _, p := range []string{"", "*", "**", "?*", "[*]", "fs:*"} {
		f := &fatalRecorder{TB: t}
		testutil.CleanupKeys(f, rdb, p)
		if p == "fs:*" {
			// Contains literal characters: accepted.
			if f.msg != "" || f.cleanups != 1 {
				t.Errorf("CleanupKeys(%q): fatal %q, %d cleanups; want accepted", p, f.msg, f.cleanups)
			}
			continue
		}
		if f.msg == "" || f.cleanups != 0 {
			t.Errorf("CleanupKeys(%q) was accepted; want refused", p)
		}
	}
}

func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	var addrs []string
	t.Run("cluster", func(t *testing.T) {
		start := time.Now()
		cl := testutil.RedisCluster(t)
		t.Logf("cluster %v up in %v", cl.Addrs, time.Since(start).Round(time.Millisecond))
		addrs = cl.Addrs
		if len(cl.Addrs) != 3 {
			t.Fatalf("Addrs = %v, want 3 masters", cl.Addrs)
		}
		cc := cl.Client(t)
		ns := testutil.UniqueName(t)

		keys := make([]string, 100)
		t.Run("keys across slots", func(t *testing.T) {
			testutil.CleanupKeys(t, cc, "*"+ns+"/*")
			for i := range keys {
				// One hash tag per key: the keys land on every master.
				keys[i] = fmt.Sprintf("fs:{%s/sale:%d}:stock", ns, i)
				if err := cc.Set(ctx, keys[i], i, 0).Err(); err != nil {
					t.Fatalf("SET %s: %v", keys[i], err)
				}
			}
			// A script over keys that share one hash tag works in a cluster.
			tag := "{" + ns + "/sale:tagged}"
			n, err := cc.Eval(ctx, `redis.call("SET", KEYS[1], 5); return redis.call("INCRBY", KEYS[2], 2)`,
				[]string{"fs:" + tag + ":stock", "fs:" + tag + ":sold"}).Int()
			if err != nil || n != 2 {
				t.Fatalf("EVAL on one hash tag = %d, %v", n, err)
			}
			err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
				if node.DBSize(ctx).Val() == 0 {
					return errors.New("a master holds no key")
				}
				return nil
			})
			if err != nil {
				t.Fatalf("keys did not spread: %v", err)
			}
			for i, k := range keys {
				if v, err := cc.Get(ctx, k).Int(); err != nil || v != i {
					t.Fatalf("GET %s = %d, %v; want %d", k, v, err, i)
				}
			}
		})
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			if left := node.Keys(ctx, "*"+ns+"/*").Val(); len(left) != 0 {
				return fmt.Errorf("%s still holds %v", node.Options().Addr, left)
			}
			return nil
		})
		if err != nil {
			t.Errorf("CleanupKeys on the cluster left keys: %v", err)
		}
	})
	// The cluster's processes were killed and waited for at cleanup.
	for _, a := range addrs {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			_ = conn.Close()
			t.Errorf("node %s still accepts connections after cleanup", a)
		}
	}
}

// TestRedisClusterFailure checks that a cluster that cannot be created fails
// the test with redis-cli's output and the nodes' logs, and leaves no process.
func TestRedisClusterFailure(t *testing.T) {
	bin := t.TempDir()
	fake := "#!/bin/sh\necho 'fake redis-cli: cannot create cluster' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "redis-cli"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	f := &fatalRecorder{TB: t, forwardCleanups: true}
	if c := testutil.RedisCluster(f); c != nil {
		t.Fatalf("RedisCluster succeeded with a failing redis-cli: %v", c.Addrs)
	}
	for _, want := range []string{"fake redis-cli: cannot create cluster", "--- log of node 127.0.0.1:", "Ready to accept connections"} {
		if !strings.Contains(f.msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, f.msg)
		}
	}
	for _, port := range regexp.MustCompile(`log of node (127\.0\.0\.1:\d+)`).FindAllStringSubmatch(f.msg, -1) {
		if conn, err := net.DialTimeout("tcp", port[1], time.Second); err == nil {
			_ = conn.Close()
			t.Errorf("node %s still runs after a failed start", port[1])
		}
	}
}

func TestMySQL(t *testing.T) {
	ctx := context.Background()
	var name string
	ok := t.Run("fresh database", func(t *testing.T) {
		db, dsn := testutil.MySQL(t)
		for _, p := range []string{"parseTime=true", "multiStatements=true"} {
			if !strings.Contains(dsn, p) {
				t.Errorf("DSN %q lacks %s", dsn, p)
			}
		}
		if err := db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^t_[0-9a-f]{12}$`).MatchString(name) || !strings.Contains(dsn, "/"+name+"?") {
			t.Fatalf("database %q, DSN %q", name, dsn)
		}
		var tables int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", name).Scan(&tables); err != nil || tables != 0 {
			t.Fatalf("fresh database has %d tables (%v)", tables, err)
		}
		// multiStatements: one Exec creates the table and fills it.
		_, err := db.ExecContext(ctx, `
			CREATE TABLE orders (order_no VARCHAR(64) PRIMARY KEY, created_at DATETIME(6) NOT NULL);
			INSERT INTO orders VALUES ('o-1', '2026-11-11 12:00:00.5');`)
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time // parseTime: DATETIME scans into time.Time
		if err := db.QueryRowContext(ctx, "SELECT created_at FROM orders WHERE order_no = 'o-1'").Scan(&at); err != nil {
			t.Fatal(err)
		}
		if want := time.Date(2026, 11, 11, 12, 0, 0, 5e8, time.UTC); !at.Equal(want) {
			t.Errorf("created_at = %v, want %v", at, want)
		}
	})
	if !ok {
		return
	}
	db, _ := testutil.MySQL(t)
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after cleanup", name)
	}
}
