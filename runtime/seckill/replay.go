package seckill

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
)

// admit runs the checks a purchase with a genuine token must pass before
// the purchase script: the sale's window (NOT_STARTED, ENDED, NOT_READY,
// PAUSED), the rate limits, this pod's sell-out knowledge and the risk check.
func (s *Server) admit(r *http.Request, b buyer, sku string, now time.Time) *apiError {
	if aerr := s.window(now); aerr != nil {
		return aerr
	}
	if aerr := s.rateLimit(b); aerr != nil {
		return aerr
	}
	if s.state.skus[sku].soldOut.Load() {
		return errSoldOut
	}
	if b.allowed {
		return nil
	}
	return s.checkRisk(r, b, sku)
}

// replayOr answers a refused purchase with a genuine token: if the token
// already made an order (a retry whose first answer was lost, in a timeout
// or a 503), the buyer gets that order back, 202 as any replay, whatever
// the refusal; otherwise the refusal.
//
// Only refusals pay for the lookup (one GET): a purchase that passes the
// checks runs the script, which finds the token's order itself, atomically.
// Lookups are charged to the buyer's read buckets, so one token replayed in
// a loop cannot turn into a stream of Redis calls. When those are empty, a
// refusal the buyer retries anyway (429, 425, 503) is answered as it is; a
// final one (410, 403) would be wrong if the token did buy, so the buyer is
// told to come back instead (429, Retry-After).
func (s *Server) replayOr(w http.ResponseWriter, r *http.Request, b buyer, sku string, c token.Claims, refusal *apiError) (string, *apiError) {
	final := refusal.status == http.StatusGone || refusal.status == http.StatusForbidden
	if aerr := s.readLimit(b); aerr != nil {
		if final {
			return "", aerr
		}
		return "", refusal
	}
	// Bounded: a pause is often called because Redis is in trouble, and a
	// refused request must not hang on it.
	ctx, cancel := context.WithTimeout(r.Context(), replayLookupTimeout)
	defer cancel()
	start := time.Now()
	orderNo, err := s.rdb.Get(ctx, keys.ForSKU(s.saleKey, sku).Token(c.NonceString())).Result()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	s.metrics.observeRedis("replay_lookup", time.Since(start), err)
	switch {
	case err == nil && orderNo != "":
		writeJSON(w, http.StatusAccepted, orderResponse{OrderNo: orderNo, Status: "queued"})
		return "replayed", nil
	case err != nil && final && !errors.Is(err, context.Canceled):
		s.log.Error("Replay lookup in Redis failed; buyer told to retry", "sale", s.saleKey, "sku", sku, "err", err)
		return "", errReplayLookup
	}
	return "", refusal
}

// replayLookupTimeout bounds the replay lookup of a refused purchase.
const replayLookupTimeout = 500 * time.Millisecond

var errReplayLookup = &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable,
	message: "could not check whether this token already made an order; retry with the same token", retryAfter: 1}

// readLimit charges an order lookup (result polling, a replay lookup) to the
// buyer's and their address' read buckets.
func (s *Server) readLimit(b buyer) *apiError {
	if b.allowed {
		return nil
	}
	return rateLimited(s.reads.AllowAddr(b.user, b.ip), "order lookups")
}
