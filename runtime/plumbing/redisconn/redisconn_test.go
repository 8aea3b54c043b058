package redisconn_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// redisAddr is the standalone Redis of the tests.
func redisAddr() string {
	if addr := os.Getenv("FLASHSALE_TEST_REDIS_ADDR"); addr != "" {
		return addr
	}
	return testutil.DefaultRedisAddr
}

// client calls o.Client and closes the client at cleanup.
func client(t *testing.T, o redisconn.Options) redis.UniversalClient {
	t.Helper()
	c, err := o.Client(context.Background())
	if err != nil {
		t.Fatalf("Client(%+v): %v", o, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestStandalone connects to one Redis, in the database and with the pool
// size asked for.
func TestStandalone(t *testing.T) {
	t.Setenv("FLASHSALE_REDIS_PASSWORD", "")
	ctx := context.Background()
	c := client(t, redisconn.Options{Addr: redisAddr(), DB: 3, PoolSize: 7})
	rc, ok := c.(*redis.Client)
	if !ok {
		t.Fatalf("Client returned a %T for one address, want a *redis.Client", c)
	}
	if rc.Options().PoolSize != 7 {
		t.Errorf("pool size %d, want 7", rc.Options().PoolSize)
	}

	// The key lands in database 3, not 0.
	key := "redisconn/" + testutil.UniqueName(t) + "/db"
	if err := c.Set(ctx, key, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	db3 := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: 3})
	defer db3.Close()
	defer db3.Del(ctx, key)
	db0 := testutil.Redis(t)
	if n, err := db3.Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Errorf("key not in database 3 (%d, %v)", n, err)
	}
	if n, err := db0.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Errorf("key in database 0 (%d, %v)", n, err)
	}
}

// TestCluster connects to a Redis Cluster from its seed addresses (which
// take precedence over --redis-addr) and reaches every master.
func TestCluster(t *testing.T) {
	t.Setenv("FLASHSALE_REDIS_PASSWORD", "")
	cluster := testutil.RedisCluster(t)
	ctx := context.Background()
	c := client(t, redisconn.Options{Addr: "127.0.0.1:1", Cluster: cluster.Addrs[:1], PoolSize: 5})
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("Client returned a %T for --redis-cluster, want a *redis.ClusterClient", c)
	}
	if cc.Options().PoolSize != 5 {
		t.Errorf("pool size %d, want 5", cc.Options().PoolSize)
	}
	// Keys of many slots, so every master is written to through the one seed.
	name := testutil.UniqueName(t)
	testutil.CleanupKeys(t, c, "redisconn/"+name+"/*")
	for i := range 30 {
		if err := c.Set(ctx, "redisconn/"+name+"/"+strconv.Itoa(i), i, time.Minute).Err(); err != nil {
			t.Fatalf("set through the cluster client: %v", err)
		}
	}
	var masters atomic.Int32 // ForEachMaster calls in parallel
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n, err := node.DBSize(ctx).Result()
		if n > 0 {
			masters.Add(1)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if int(masters.Load()) != len(cluster.Addrs) {
		t.Errorf("keys on %d masters, want all %d", masters.Load(), len(cluster.Addrs))
	}
}

// TestPassword starts a Redis of its own that requires a password: the
// password comes from --redis-password-file (trimmed) or
// FLASHSALE_REDIS_PASSWORD, the file winning; a wrong or missing one fails
// at Client, not at the first command.
func TestPassword(t *testing.T) {
	addr := startRedis(t, "--requirepass", "s3cret")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, wrong := write("good", "s3cret\n"), write("wrong", "nope\n")
	cases := []struct {
		name, env, file string
		wantErr         string // empty: connects
	}{
		{"file", "", good, ""},
		{"environment", "s3cret", "", ""},
		{"file over environment", "nope", good, ""},
		{"wrong password", "", wrong, "connect to redis " + addr},
		{"none", "", "", "connect to redis " + addr},
		{"missing file", "s3cret", filepath.Join(dir, "absent"), "read redis password"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("FLASHSALE_REDIS_PASSWORD", c.env)
			rdb, err := (&redisconn.Options{Addr: addr, PasswordFile: c.file}).Client(context.Background())
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("Client: %v", err)
				}
				defer rdb.Close()
				if err := rdb.Set(context.Background(), "k", "v", 0).Err(); err != nil {
					t.Fatalf("a command after connecting: %v", err)
				}
				return
			}
			if err == nil {
				_ = rdb.Close()
				t.Fatalf("Client connected, want an error containing %q", c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Client: %v, want an error containing %q", err, c.wantErr)
			}
		})
	}
}

// TestUnreachable: a wrong address fails at Client with an error that names
// it, within seconds (Client's ping gives up after 5 s) whether nothing
// listens there or something that never answers.
func TestUnreachable(t *testing.T) {
	t.Setenv("FLASHSALE_REDIS_PASSWORD", "")
	closed := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	silent := silentListener(t)
	cases := []struct {
		name    string
		opts    redisconn.Options
		wantErr string
		within  time.Duration
	}{
		{"no address", redisconn.Options{}, "no Redis address: set --redis-addr or --redis-cluster", time.Second},
		{"closed port", redisconn.Options{Addr: closed}, "connect to redis " + closed + ":", 7 * time.Second},
		{"closed cluster seeds", redisconn.Options{Cluster: []string{closed, closed}}, "connect to redis cluster " + closed + "," + closed + ":", 7 * time.Second},
		{"silent server", redisconn.Options{Addr: silent}, "connect to redis " + silent + ":", 7 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			rdb, err := c.opts.Client(context.Background())
			took := time.Since(start)
			if err == nil {
				_ = rdb.Close()
				t.Fatalf("Client(%+v) connected, want an error containing %q", c.opts, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Client(%+v): %v, want an error containing %q", c.opts, err, c.wantErr)
			}
			if took > c.within {
				t.Errorf("Client(%+v) took %s to fail, want under %s", c.opts, took.Round(time.Millisecond), c.within)
			}
		})
	}
}

// TestBind: the flags default to the environment, and flags override it.
func TestBind(t *testing.T) {
	t.Setenv("FLASHSALE_REDIS_ADDR", "redis.shop:6380")
	t.Setenv("FLASHSALE_REDIS_CLUSTER", "a:7000,b:7001")
	t.Setenv("FLASHSALE_REDIS_PASSWORD_FILE", "/run/secrets/redis")
	var env redisconn.Options
	fs := pflag.NewFlagSet("env", pflag.ContinueOnError)
	env.Bind(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	want := redisconn.Options{Addr: "redis.shop:6380", Cluster: []string{"a:7000", "b:7001"}, PasswordFile: "/run/secrets/redis"}
	if env.Addr != want.Addr || strings.Join(env.Cluster, ",") != "a:7000,b:7001" || env.PasswordFile != want.PasswordFile {
		t.Errorf("from the environment: %+v, want %+v", env, want)
	}

	var flags redisconn.Options
	fs = pflag.NewFlagSet("flags", pflag.ContinueOnError)
	flags.Bind(fs)
	if err := fs.Parse([]string{"--redis-addr", "10.0.0.1:6379", "--redis-cluster", "c:7000", "--redis-db", "2",
		"--redis-pool-size", "50", "--redis-password-file", "/p"}); err != nil {
		t.Fatal(err)
	}
	if flags.Addr != "10.0.0.1:6379" || strings.Join(flags.Cluster, ",") != "c:7000" || flags.DB != 2 || flags.PoolSize != 50 || flags.PasswordFile != "/p" {
		t.Errorf("from flags: %+v", flags)
	}
}

// startRedis starts a redis-server of the test's own on a free port, with
// extra arguments, and returns its address; it is killed at cleanup.
func startRedis(t *testing.T, args ...string) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found in PATH (%v); install it with `apt-get install -y redis-server` or run `bash hack/services.sh`", err)
	}
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(server, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir()}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not start: %v\n%s", addr, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// silentListener accepts connections and never answers, like a port that
// is not Redis; it returns its address.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					_ = c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}
