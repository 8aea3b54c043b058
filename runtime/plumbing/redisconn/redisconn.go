// Package redisconn builds the Redis client every data-plane command uses,
// from the same flags everywhere: one address for a standalone Redis, or
// several seed addresses for a Redis Cluster.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
)

// Options are the connection flags.
type Options struct {
	Addr         string
	Cluster      []string
	PasswordFile string
	DB           int
	PoolSize     int
}

// Bind registers the flags on fs, with defaults from the environment
// (FLASHSALE_REDIS_ADDR, FLASHSALE_REDIS_CLUSTER).
func (o *Options) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.Addr, "redis-addr", envOr("FLASHSALE_REDIS_ADDR", "127.0.0.1:6379"), "address HOST:PORT of a standalone Redis")
	fs.StringSliceVar(&o.Cluster, "redis-cluster", splitEnv("FLASHSALE_REDIS_CLUSTER"), "seed addresses of a Redis Cluster (comma separated); overrides --redis-addr")
	fs.StringVar(&o.PasswordFile, "redis-password-file", os.Getenv("FLASHSALE_REDIS_PASSWORD_FILE"), "file holding the Redis password (a mounted Secret); env FLASHSALE_REDIS_PASSWORD also works")
	fs.IntVar(&o.DB, "redis-db", 0, "database number (standalone only)")
	fs.IntVar(&o.PoolSize, "redis-pool-size", 0, "connections per Redis node (0: go-redis default, 10 per CPU)")
}

// Client connects and pings, so a wrong address fails at start-up with a
// clear error instead of at the first buyer.
func (o *Options) Client(ctx context.Context) (redis.UniversalClient, error) {
	password := os.Getenv("FLASHSALE_REDIS_PASSWORD")
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read redis password: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	var c redis.UniversalClient
	if len(o.Cluster) > 0 {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Cluster, Password: password, PoolSize: o.PoolSize})
	} else {
		if o.Addr == "" {
			return nil, errors.New("no Redis address: set --redis-addr or --redis-cluster")
		}
		c = redis.NewClient(&redis.Options{Addr: o.Addr, Password: password, DB: o.DB, PoolSize: o.PoolSize})
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("connect to redis %s: %w", o.describe(), err)
	}
	return c, nil
}

func (o *Options) describe() string {
	if len(o.Cluster) > 0 {
		return "cluster " + strings.Join(o.Cluster, ",")
	}
	return o.Addr
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func splitEnv(k string) []string {
	if v := os.Getenv(k); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}
