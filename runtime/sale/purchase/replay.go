package purchase

import (
	"context"
	"crypto/sha1" //nolint:gosec // must match Redis' script naming; not used for security
	_ "embed"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

//go:embed replay.lua
var replaySource string

var replaySHA = func() string {
	sum := sha1.Sum([]byte(replaySource)) //nolint:gosec // Redis names scripts by SHA-1
	return hex.EncodeToString(sum[:])
}()

// Replay finds the order the token nonce already made in bucket k (the
// buyer's home bucket of the SKU), without making one: Replayed with its
// number, or NoOrder. Unlike a plain HGET it
// writes (the token's record, unchanged), so that a durability wait on the
// connection it ran on covers that order; a sale without durability has no
// use for it and reads the record instead.
func (s *Script) Replay(ctx context.Context, k keys.SKU, nonce string) (Result, error) {
	ks := []string{k.Tokens}
	start := time.Now()
	res, err := s.exec.EvalSha(ctx, replaySHA, ks, nonce).Slice()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Loaded on first use (a refused retry is rare); the call did not
		// run, so loading and calling again is safe.
		if _, lerr := s.loader.ScriptLoad(ctx, replaySource).Result(); lerr != nil {
			s.observe("replay_touch", time.Since(start), lerr)
			return Result{}, fmt.Errorf("load replay script: %w", lerr)
		}
		res, err = s.exec.EvalSha(ctx, replaySHA, ks, nonce).Slice()
	}
	s.observe("replay_touch", time.Since(start), err)
	if err != nil {
		return Result{}, fmt.Errorf("replay script: %w", err)
	}
	return parse(res)
}
