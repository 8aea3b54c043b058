package seckill

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
)

// Refiller moves unsold units of a SKU split into buckets into a bucket that
// ran out (package buckets implements it): the number moved, 0 with a nil
// error when every bucket is out, that is the SKU is sold out; an error
// (buckets.ErrHeld among them: units on sale that may not move now) is
// never a sell-out. A positive
// answer means "try again" (the units may be taken by other buyers first).
type Refiller interface {
	Refill(ctx context.Context, sku string, n, to int) (int64, error)
}

// maxRefills bounds the refills one purchase asks for before giving up:
// each one moved units that other buyers of the bucket took first, so the
// sale is moving; the buyer retries later.
const maxRefills = 8

var errStockMoving = &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable,
	message: "the stock is moving between buckets; retry with the same token", retryAfter: 1}

// homeKeys are the keys of the bucket user buys sku from: the SKU's only
// bucket, or, for a SKU split into buckets, the user's home bucket (a hash
// of the user, so every pod checks their limit and their tokens in one
// place).
func (s *Server) homeKeys(sku v1alpha1.SKU, user string) keys.SKU {
	n := sku.BucketCount()
	return keys.ForBucket(s.saleKey, sku.ID, keys.Home(user, n), n)
}

// purchaseRefilling runs the purchase in the buyer's home bucket; when that
// bucket is out but its SKU is split, it asks the refiller for units from
// the other buckets and tries again, so that nobody is told SOLD_OUT while
// units of their SKU are on sale elsewhere. SOLD_OUT is the answer only when
// the refiller finds every bucket out. A nil *apiError with an error-free
// admission is the script's answer; a non-nil one is what to answer instead.
func (s *Server) purchaseRefilling(ctx context.Context, req purchase.Request) (admission, *apiError, error) {
	for range maxRefills {
		res, err := s.purchase(ctx, req)
		if err != nil || res.Outcome != purchase.SoldOut || req.Buckets <= 1 {
			return res, nil, err
		}
		start := time.Now()
		moved, err := s.refiller.Refill(ctx, req.SKU, req.Buckets, req.Bucket)
		s.metrics.observeRedis("refill", time.Since(start), err)
		if err != nil {
			// Held (a lowering being applied or owed): units are on sale in
			// bucket 0 but may not move here now. Not a sell-out (no 410, no
			// markSoldOut): the buyer retries once the Holds are cleared.
			if !errors.Is(err, buckets.ErrHeld) {
				s.log.Warn("Refilling a sold-out bucket failed; buyer told to retry", "sale", s.saleKey, "sku", req.SKU,
					"bucket", req.Bucket, "err", err)
			}
			return admission{}, errStockMoving, nil
		}
		if moved == 0 {
			// The only SOLD_OUT of a split SKU (answerPurchase marks it
			// sold out in memory): the refiller confirmed every bucket out.
			return res, nil, nil
		}
	}
	return admission{}, errStockMoving, nil
}

// confirmTimeout bounds the confirmation of a sell-out by the state refresh,
// which waits for it.
const confirmTimeout = time.Second

// outEverywhere asks the refiller to fill bucket 0 of sku, split into
// buckets, whose buckets all read out: it completes the transfers in flight
// and reads twice before it answers 0, out everywhere. Anything else (units
// found, an error) is not a sell-out: the buyers' purchases find out.
func (s *Server) outEverywhere(ctx context.Context, sku string) bool {
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	start := time.Now()
	moved, err := s.refiller.Refill(ctx, sku, s.skus[sku].BucketCount(), 0)
	s.metrics.observeRedis("refill", time.Since(start), err)
	if err != nil && ctx.Err() == nil && !errors.Is(err, buckets.ErrHeld) {
		s.log.Warn("Confirming a sell-out failed; the SKU stays open", "sale", s.saleKey, "sku", sku, "err", err)
	}
	return err == nil && moved == 0
}
