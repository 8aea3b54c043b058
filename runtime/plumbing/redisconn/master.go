package redisconn

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// MasterFor is the client of the server that holds key: rdb itself on a
// standalone server, the master of key's slot on a cluster (after
// refreshing the slot map when reload, as after a failed connection). WAIT
// and WAITAOF need it: they count what follows the writes of one
// connection, so the writes and the wait must go to the same server.
func MasterFor(ctx context.Context, rdb redis.UniversalClient, key string, reload bool) (*redis.Client, error) {
	switch c := rdb.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		if reload {
			c.ReloadState(ctx)
		}
		m, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("find the master of %s: %w", key, err)
		}
		return m, nil
	default:
		return nil, fmt.Errorf("waiting for replicas needs a Redis or Redis Cluster client, not %T", rdb)
	}
}
