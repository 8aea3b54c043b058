package seckill

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
)

// Refusals of the pay endpoint.
var (
	errPayNotConfigured = &apiError{status: http.StatusServiceUnavailable, code: CodeNotConfigured,
		message: "payments are not configured on this pod (no MySQL DSN or no payment secret)"}
	errUnauthorized = refuse(http.StatusUnauthorized, CodeUnauthorized,
		"the Authorization header must be \"Bearer <payment secret>\"")
	errPayCancelled = refuse(http.StatusConflict, CodeCancelled,
		"the order was cancelled because its payment deadline passed; its stock went back on sale")
	errPayPending = &apiError{status: http.StatusTooEarly, code: CodePending,
		message: "the order is admitted but not durable yet; retry shortly", retryAfter: 1}
	errPayUnavailable = &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable,
		message: "the payment could not be recorded; retry (a repeat is safe)", retryAfter: 1}
)

// settleTimeout bounds the best-effort Redis update after a payment.
const settleTimeout = 2 * time.Second

// SetPaymentSecret replaces the shared secret of the pay endpoint (a rotated
// Secret); an empty secret turns payments off (503 NOT_CONFIGURED).
func (s *Server) SetPaymentSecret(secret []byte) {
	if len(secret) == 0 {
		s.paySecret.Store(nil)
		return
	}
	sum := sha256.Sum256(secret)
	b := sum[:]
	s.paySecret.Store(&b)
}

// authorized compares the bearer token with the secret in constant time.
// Both sides are hashed first so that not even the secret's length leaks.
func authorized(r *http.Request, secretSum []byte) bool {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], secretSum) == 1
}

// handlePay is called by the shop's payment service: the compare-and-set
// created → paid in MySQL before the deadline (by this pod's clock), then the
// Redis side (expiry set, visible status) follows. The rollback's cancel is
// the same CAS from the other side, so exactly one of them wins.
func (s *Server) handlePay(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	sum := s.paySecret.Load()
	if s.orders == nil || sum == nil {
		return "", errPayNotConfigured
	}
	if !authorized(r, *sum) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="flashsale-payments"`)
		return "", errUnauthorized
	}
	orderNo := r.PathValue("orderNo")
	skuID, aerr := s.orderSKU(orderNo)
	if aerr != nil {
		return "", aerr
	}
	ctx := r.Context()
	res, row, err := s.orders.Pay(ctx, s.saleKey, orderNo, s.clk.Now())
	if errors.Is(err, orderdb.ErrNotFound) {
		// Not durable yet, or unknown: the Redis orders hash knows every
		// admitted order from the moment the purchase script ran.
		if _, aerr := s.orderRecord(ctx, skuID, orderNo); aerr != nil {
			return "", aerr
		}
		return "", errPayPending
	}
	if err != nil {
		s.log.Error("Payment failed in MySQL; the payment service should retry", "sale", s.saleKey, "order", orderNo, "err", err)
		return "", errPayUnavailable
	}
	switch res {
	case orderdb.PaidNow, orderdb.AlreadyPaid:
		// Best effort: the unit is sold for good in MySQL whatever happens
		// here; a repeat payment or the audit settles Redis later. The
		// caller's cancellation must not abandon it half-way.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		if err := orderstate.Settle(sctx, s.rdb, &row.Order, s.skus[skuID].BucketCount()); err != nil {
			s.log.Warn("Order paid in MySQL but not settled in Redis; a repeat payment or `flashsale audit --repair` settles it",
				"sale", s.saleKey, "order", orderNo, "err", err)
		}
		cancel()
		writeJSON(w, http.StatusOK, orderResponse{OrderNo: orderNo, SKU: skuID, Status: "paid"})
		if res == orderdb.AlreadyPaid {
			return "repeat", nil
		}
		return "paid", nil
	case orderdb.AlreadyCancelled:
		return "", errPayCancelled
	default: // orderdb.Expired: past the deadline, the rollback has not cancelled it yet
		return "", refuse(http.StatusConflict, CodeExpired,
			"the payment deadline passed at "+row.Deadline.UTC().Format(time.RFC3339Nano)+"; the order will be cancelled")
	}
}
