package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestSeckillDurabilityFlags: --wait-aof on a server that cannot give it
// (Redis < 7.2, or appendonly no) stops the seckill at start-up with what to
// configure, before it serves a buyer; a --wait-timeout outside 1ms..2s is
// refused (WAIT counts whole milliseconds, and a purchase gives up after 3 s).
func TestSeckillDurabilityFlags(t *testing.T) {
	path, _ := writeSale(t)
	srv := testutil.StartRedisServer(t) // appendonly no
	info, err := srv.Client(t).Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := "appendonly yes"
	if strings.Contains(info, "redis_version:7.0.") || strings.Contains(info, "redis_version:7.1.") {
		want = "WAITAOF (Redis 7.2 or later)"
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"seckill", "--file", path, "--redis-addr", srv.Addr, "--listen", "127.0.0.1:0", "--wait-aof"}, want},
		{[]string{"seckill", "--file", path, "--redis-addr", srv.Addr, "--listen", "127.0.0.1:0", "--wait-replicas", "1", "--wait-timeout", "0s"}, "--wait-timeout must be between 1ms and 2s"},
		{[]string{"seckill", "--file", path, "--redis-addr", srv.Addr, "--listen", "127.0.0.1:0", "--wait-replicas", "1", "--wait-timeout", "500us"}, "--wait-timeout must be between 1ms and 2s"},
		{[]string{"seckill", "--file", path, "--redis-addr", srv.Addr, "--listen", "127.0.0.1:0", "--wait-replicas", "1", "--wait-timeout", "2001ms"}, "--wait-timeout must be between 1ms and 2s"},
	}
	for _, tc := range cases {
		out, err := run(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%v: err %v out %q, want %q", tc.args, err, out, tc.want)
		}
	}
}
