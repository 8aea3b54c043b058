package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/utils/clock"
)

// Registry is the heartbeat of one seckill pod in a Redis sorted set shared
// by all pods of a sale (member: pod id, score: time of the last beat in Unix
// milliseconds). The number of members beaten within ttl is the number of
// live pods, the N of the fair share.
//
// Scores come from each pod's own clock, so pods' clocks must agree to well
// within ttl (NTP); choose ttl as a few beat intervals (3 s for a 1 s beat).
type Registry struct {
	rdb   redis.UniversalClient
	key   string
	podID string
	ttl   time.Duration
	clk   clock.Clock

	// OnError, when set before Run, is called with every failed heartbeat
	// (Run then keeps the last known count).
	OnError func(error)
}

// NewRegistry returns the registry of pod podID under key (for a sale,
// "fs:{ns/name}:pods"). A pod that has not beaten for ttl is no longer
// counted. A nil clk means the real clock.
func NewRegistry(rdb redis.UniversalClient, key, podID string, ttl time.Duration, clk clock.Clock) *Registry {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Registry{rdb: rdb, key: key, podID: podID, ttl: ttl, clk: clk}
}

// Beat records that this pod is alive, drops pods silent for longer than ttl
// and returns the number of live pods (this one included), all in one
// MULTI/EXEC round trip: ZADD, ZREMRANGEBYSCORE, ZCARD, PEXPIRE. The key
// expires after 3 x ttl without any beat so a finished sale leaves nothing.
func (g *Registry) Beat(ctx context.Context) (int, error) {
	now := g.clk.Now().UnixMilli()
	cutoff := now - g.ttl.Milliseconds()
	var card *redis.IntCmd
	_, err := g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, g.key, redis.Z{Score: float64(now), Member: g.podID})
		p.ZRemRangeByScore(ctx, g.key, "-inf", "("+strconv.FormatInt(cutoff, 10))
		card = p.ZCard(ctx, g.key)
		p.PExpire(ctx, g.key, 3*g.ttl)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("heartbeat %s in %s: %w", g.podID, g.key, err)
	}
	return int(card.Val()), nil
}

// Leave removes this pod at once (on shutdown), so the other pods take over
// its share at their next beat instead of after ttl.
func (g *Registry) Leave(ctx context.Context) error {
	if err := g.rdb.ZRem(ctx, g.key, g.podID).Err(); err != nil {
		return fmt.Errorf("leave %s from %s: %w", g.podID, g.key, err)
	}
	return nil
}

// Run beats now and then every interval until ctx is done, calling onLive
// with the number of live pods after every successful beat (feed it to
// Limiter.SetShare). A failed beat is reported to OnError and the last known
// count stays in force. When ctx is done Run calls Leave (bounded by one
// second, on a context that is not cancelled) and returns.
func (g *Registry) Run(ctx context.Context, every time.Duration, onLive func(int)) {
	beat := func() {
		bctx, cancel := context.WithTimeout(ctx, every)
		n, err := g.Beat(bctx)
		cancel()
		switch {
		case err != nil:
			if g.OnError != nil && ctx.Err() == nil {
				g.OnError(err)
			}
		case onLive != nil:
			onLive(n)
		}
	}
	beat()
	timer := g.clk.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if err := g.Leave(lctx); err != nil && g.OnError != nil {
				g.OnError(err)
			}
			cancel()
			return
		case <-timer.C():
			beat()
			timer.Reset(every)
		}
	}
}
