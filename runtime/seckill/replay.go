package seckill

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
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
// Only refusals pay for the lookup (one HGET; in a durable sale one small
// script and the durability wait, see lookupReplay): a purchase that passes the
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
	orderNo, durable, err := s.lookupReplay(r.Context(), s.homeKeys(s.skus[sku], b.user), c.NonceString())
	switch {
	case err == nil && orderNo != "":
		writeJSON(w, http.StatusAccepted, orderResponse{OrderNo: orderNo, Status: "queued", Durable: durable})
		return "replayed", nil
	case err != nil && final && !errors.Is(err, context.Canceled):
		s.log.Error("Replay lookup in Redis failed; buyer told to retry", "sale", s.saleKey, "sku", sku, "err", err)
		return "", errReplayLookup
	}
	return "", refusal
}

// lookupReplay finds the order the token nonce already made ("" if none) in
// bucket k, the buyer's home bucket of the SKU: every purchase with the
// token ran there.
// Bounded: a pause is often called because Redis is in trouble, and a
// refused request must not hang on it.
//
// In a durable sale the answer must promise no more than a new order's:
// the lookup runs replay.lua through the durable client, which rewrites the
// token's record unchanged and waits for the replicas/AOF like a purchase, so
// that "durable" says whether the earlier order reached them (its first
// answer may have been lost while its wait still ran). The bound is then
// the lookup's plus the wait's. If that fails (min-replicas-to-write
// refusing writes, say), a plain read still finds the order, answered
// "durable": false.
func (s *Server) lookupReplay(ctx context.Context, k keys.SKU, nonce string) (string, *bool, error) {
	timeout := replayLookupTimeout
	if s.durable != nil {
		timeout += s.durable.d.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var derr error // the durable lookup's failure
	if s.durable != nil {
		a := &ack{}
		res, err := s.script.Replay(context.WithValue(ctx, ackKey{}, a), k, nonce)
		switch {
		case err == nil && res.Outcome == purchase.Replayed:
			durable := a.durable
			if !durable {
				s.durable.notDurable(k.ID, res.OrderNo, a)
			}
			return res.OrderNo, &durable, nil
		case err == nil:
			return "", nil, nil
		case errors.Is(err, context.Canceled):
			return "", nil, err
		}
		derr = err
	}
	start := time.Now()
	orderNo, err := s.rdb.HGet(ctx, k.Tokens, nonce).Result()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	s.metrics.observeRedis("replay_lookup", time.Since(start), err)
	if err != nil || orderNo == "" || s.durable == nil {
		return orderNo, nil, err
	}
	notDurable := false
	s.durable.notDurable(k.ID, orderNo, &ack{reason: notDurableError, err: fmt.Errorf("replay lookup: %w", derr)})
	return orderNo, &notDurable, nil
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
