package redisconn_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
)

// TestMasterForRefusesOtherClients: a standalone client is its own master
// (the cluster path is exercised by the seckill's and the stream reader's
// cluster tests); a client that cannot name one server per key is refused
// with a clear error instead of waiting on the wrong server.
func TestMasterForRefusesOtherClients(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer func() { _ = c.Close() }()
	if m, err := redisconn.MasterFor(ctx, c, "k", false); err != nil || m != c {
		t.Fatalf("standalone: %v %v, want the client itself", m, err)
	}
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer func() { _ = ring.Close() }()
	if _, err := redisconn.MasterFor(ctx, ring, "k", false); err == nil || !strings.Contains(err.Error(), "needs a Redis or Redis Cluster client") {
		t.Fatalf("ring: %v, want a refusal", err)
	}
}
