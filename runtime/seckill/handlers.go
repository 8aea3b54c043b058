package seckill

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/access"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/ratelimit"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/risk"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
)

// purchaseTimeout bounds one purchase script call.
const purchaseTimeout = 3 * time.Second

// MaxBodyBytes caps request bodies: a purchase is under 200 bytes, so
// anything near this is a client bug or an attack.
const MaxBodyBytes = 4 << 10

type tokenRequest struct {
	SKU string `json:"sku"`
	// Ticket is the buyer's admitted queue ticket (a queued sale only;
	// ignored otherwise).
	Ticket string `json:"ticket"`
}

type tokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

type purchaseRequest struct {
	SKU   string `json:"sku"`
	Token string `json:"token"`
}

type orderResponse struct {
	OrderNo string `json:"orderNo"`
	SKU     string `json:"sku,omitempty"`
	Status  string `json:"status"`
	// Durable is set when the sale asks for durability: false means the
	// wait for replicas or the AOF did not confirm the order (durable.go).
	Durable *bool `json:"durable,omitempty"`
}

type skuResponse struct {
	SKU       string `json:"sku"`
	Remaining int64  `json:"remaining"`
	SoldOut   bool   `json:"soldOut"`
}

// buyer is who is asking and from where.
type buyer struct {
	user    string
	ip      netip.Addr
	allowed bool // on an allow list: skips rate limits and the risk check
}

// identify checks the user header and the block and allow lists.
func (s *Server) identify(r *http.Request) (buyer, *apiError) {
	user := r.Header.Get("X-User-ID")
	if user == "" {
		return buyer{}, errNoUser
	}
	if !access.ValidUserID(user) {
		return buyer{}, errBadUser
	}
	b := buyer{user: user, ip: access.ClientIP(r, s.trusted)}
	if s.access != nil {
		switch s.access.Check(user, b.ip) {
		case access.Blocked:
			return buyer{}, errBlocked
		case access.Allowed:
			b.allowed = true
		}
	}
	return b, nil
}

// window says whether purchases are open now, by the pod's clock and the
// switches in Redis: NOT_STARTED, then ENDED (or closed early), then held by
// the operator's go-live gate (NOT_READY), then PAUSED.
func (s *Server) window(now time.Time) *apiError {
	spec := &s.sale.Spec
	if now.Before(spec.StartTime.Time) {
		wait := int(math.Ceil(spec.StartTime.Sub(now).Seconds()))
		return &apiError{status: http.StatusTooEarly, code: CodeNotStarted,
			message: "the sale starts at " + spec.StartTime.UTC().Format(time.RFC3339), retryAfter: wait}
	}
	if !now.Before(spec.EndTime.Time) || s.state.closed.Load() {
		return errEnded
	}
	if s.state.held.Load() {
		return errHeld
	}
	if s.state.paused.Load() {
		return errPaused
	}
	return nil
}

// rateLimit charges a token request or a purchase to the buyer's, their
// address' and the sale-wide buckets.
func (s *Server) rateLimit(b buyer) *apiError {
	if b.allowed {
		return nil
	}
	return rateLimited(s.limiter.AllowAddr(b.user, b.ip), "requests")
}

// rateLimited is the 429 of a refusing decision (nil when it allows).
func rateLimited(d ratelimit.Decision, what string) *apiError {
	if d.Allowed {
		return nil
	}
	return &apiError{status: http.StatusTooManyRequests, code: CodeRateLimited,
		message: "too many " + what + " (" + d.Limit.String() + " limit)", retryAfter: d.RetryAfterSeconds()}
}

// decode reads a small JSON body strictly: one object, capped in size.
func decode(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return refuse(http.StatusRequestEntityTooLarge, CodeTooLarge, "the request body is larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
		}
		return refuse(http.StatusBadRequest, CodeBadRequest, "the request body must be a JSON object: "+jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return refuse(http.StatusRequestEntityTooLarge, CodeTooLarge, "the request body is larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
		}
		return refuse(http.StatusBadRequest, CodeBadRequest, "the request body must hold exactly one JSON object")
	}
	return nil
}

func jsonProblem(err error) string {
	if errors.Is(err, io.EOF) {
		return "the body is empty"
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}

func (s *Server) lookupSKU(id string) (v1alpha1.SKU, *apiError) {
	if id == "" {
		return v1alpha1.SKU{}, refuse(http.StatusBadRequest, CodeBadRequest, `the field "sku" is required`)
	}
	sku, ok := s.skus[id]
	if !ok {
		return v1alpha1.SKU{}, errUnknownSKU
	}
	return sku, nil
}

// handleToken issues the short-lived path token a purchase must present.
// A queued sale's buyer must hold an admitted ticket: its HMAC is checked
// before any rate bucket is charged (forged tickets use up no real buyer's
// capacity), its admission in Redis last, after every check answered from
// memory.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	b, aerr := s.identify(r)
	if aerr != nil {
		return "", aerr
	}
	if aerr := s.window(s.clk.Now()); aerr != nil {
		return "", aerr
	}
	var req tokenRequest
	if aerr := decode(w, r, &req); aerr != nil {
		return "", aerr
	}
	if _, aerr := s.lookupSKU(req.SKU); aerr != nil {
		return "", aerr
	}
	if s.queue != nil {
		if aerr := s.verifyTicket(req.Ticket, b.user); aerr != nil {
			return "", aerr
		}
	}
	if aerr := s.rateLimit(b); aerr != nil {
		return "", aerr
	}
	if s.state.skus[req.SKU].soldOut.Load() {
		// With another SKU still on sale the buyer keeps their admission
		// for a short grace (they may choose that one); with nothing left
		// it is used.
		s.queueRefused(b.user, req.SKU)
		return "", errSoldOut
	}
	if s.queue != nil {
		if aerr := s.gateToken(r.Context(), b.user); aerr != nil {
			return "", aerr
		}
	}
	tok, exp, err := s.signer.Issue(s.saleKey, req.SKU, b.user)
	if err != nil {
		return "", refuse(http.StatusBadRequest, CodeBadRequest, err.Error())
	}
	writeJSON(w, http.StatusOK, tokenResponse{Token: tok, ExpiresAt: exp.UTC()})
	return "ok", nil
}

// handlePurchase buys, and in a queued sale records what the purchase did
// to the buyer's admission, for the admitter to apply at its next tick
// (batched: no extra Redis call on the hot path): a purchase admitted uses
// it; a refusal of this SKU (SOLD_OUT, ALREADY_PURCHASED) shortens it to a
// grace while another SKU is on sale (the buyer may choose that one) and
// uses it when nothing else is. Those refusals come only after the token's
// HMAC was checked, so the user is genuine.
func (s *Server) handlePurchase(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	sku, outcome, aerr := s.buyWithToken(w, r)
	if s.queue != nil {
		user := r.Header.Get("X-User-ID")
		switch {
		case outcome == "ok":
			s.queueDone(user)
		case aerr == errSoldOut || aerr == errLimit:
			s.queueRefused(user, sku)
		}
	}
	return outcome, aerr
}

// buyWithToken runs the checks cheapest first, so that a flood of doomed
// requests (forged, sold out, paused, over the limit) never reaches Redis:
// the buyer and the body, then the token's HMAC (microseconds, and before
// any rate bucket is charged, so forged tokens use up no real buyer's
// capacity), then admit's window, rate limits, sell-out and risk check. A
// genuine token that admit refuses may be the retry of a purchase whose
// answer was lost: replayOr gives it its order back instead of the refusal.
// It returns the SKU asked for ("" before it is known) with the outcome.
func (s *Server) buyWithToken(w http.ResponseWriter, r *http.Request) (string, string, *apiError) {
	b, aerr := s.identify(r)
	if aerr != nil {
		return "", "", aerr
	}
	var req purchaseRequest
	if aerr := decode(w, r, &req); aerr != nil {
		return "", "", aerr
	}
	sku, aerr := s.lookupSKU(req.SKU)
	if aerr != nil {
		return "", "", aerr
	}
	outcome, aerr := s.buySKU(w, r, b, sku, req.Token)
	return sku.ID, outcome, aerr
}

// buySKU is buyWithToken once the buyer and the SKU are known.
func (s *Server) buySKU(w http.ResponseWriter, r *http.Request, b buyer, sku v1alpha1.SKU, tok string) (string, *apiError) {
	claims, err := s.signer.Verify(tok, s.saleKey, sku.ID, b.user)
	if err != nil {
		s.metrics.tokenRejected.WithLabelValues(token.Reason(err)).Inc()
		if mayHaveBought(err) {
			return s.replayOr(w, r, b, sku.ID, claims, errBadToken)
		}
		return "", errBadToken
	}
	now := s.clk.Now()
	if aerr := s.admit(r, b, sku.ID, now); aerr != nil {
		return s.replayOr(w, r, b, sku.ID, claims, aerr)
	}
	res, aerr := s.runPurchase(r, b, sku, claims, now)
	if aerr != nil {
		return "", aerr
	}
	return s.answerPurchase(w, sku.ID, res)
}

// mayHaveBought reports whether a token Verify refused is genuine and may
// have made an order: expired (however long ago: the record of its order
// lives as long as the sale's keys, so a buyer whose answer was lost gets
// their order back whenever they retry), or too far ahead (minted by a pod
// whose clock runs ahead, or before the TTL was lowered: another pod may
// have taken it).
func mayHaveBought(err error) bool {
	return errors.Is(err, token.ErrTooFarAhead) || errors.Is(err, token.ErrExpired)
}

// runPurchase calls the purchase script for a buyer who passed every check.
// An error means the outcome is unknown: the buyer retries with the same
// token and gets the same order.
func (s *Server) runPurchase(r *http.Request, b buyer, sku v1alpha1.SKU, claims token.Claims, now time.Time) (admission, *apiError) {
	// Once admitted this far the purchase runs to its end even if the buyer
	// hangs up: cancelling a call already on the wire would only turn a
	// known outcome into an unknown one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), purchaseTimeout)
	defer cancel()
	home := s.homeKeys(sku, b.user)
	res, aerr, err := s.purchaseRefilling(ctx, purchase.Request{
		SKU:      sku.ID,
		Bucket:   home.Bucket,
		Buckets:  sku.BucketCount(),
		User:     b.user,
		Limit:    sku.PerUserLimit,
		Amount:   sku.Price,
		Nonce:    claims.NonceString(),
		Now:      now,
		Deadline: now.Add(s.sale.PaymentTimeout()),
	})
	if errors.Is(err, purchase.ErrBusy) {
		return admission{}, errBusy // never sent; a stall refuses many: no log line each
	}
	if err != nil {
		s.log.Error("Purchase script failed; outcome unknown, buyer told to retry with the same token", "sale", s.saleKey, "sku", sku.ID, "err", err)
		return admission{}, &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable,
			message: "the purchase could not be confirmed; retry with the same token to get the same order", retryAfter: 1}
	}
	return res, aerr
}

// answerPurchase answers what the purchase script decided, and records a
// sell-out or a lower stock figure it learnt on the way. The figures of a
// SKU split into buckets are its home bucket's, not the SKU's: the state
// refresh sums the buckets, and a SOLD_OUT answer for such a SKU comes only
// when the refiller found every bucket out.
func (s *Server) answerPurchase(w http.ResponseWriter, sku string, res admission) (string, *apiError) {
	split := s.skus[sku].BucketCount() > 1
	switch res.Outcome {
	case purchase.Admitted:
		s.metrics.ordersAdmitted.WithLabelValues(s.saleKey, sku).Inc()
		switch {
		case split:
		case res.Remaining <= 0:
			s.state.markSoldOut(sku)
		default:
			s.state.skus[sku].lower(res.Remaining)
		}
		writeJSON(w, http.StatusAccepted, orderResponse{OrderNo: res.OrderNo, Status: "queued", Durable: res.durable})
		return "ok", nil
	case purchase.Replayed:
		writeJSON(w, http.StatusAccepted, orderResponse{OrderNo: res.OrderNo, Status: "queued", Durable: res.durable})
		return "replayed", nil
	case purchase.SoldOut:
		s.state.markSoldOut(sku)
		return "", errSoldOut
	case purchase.LimitReached:
		return "", errLimit
	default: // NotWarmed
		return "", &apiError{status: http.StatusServiceUnavailable, code: CodeNotReady,
			message: "SKU " + sku + " is not warmed yet", retryAfter: 1}
	}
}

func (s *Server) checkRisk(r *http.Request, b buyer, sku string) *apiError {
	d, err := s.risk.Check(r.Context(), risk.Request{
		Sale: s.saleKey, SKU: sku, User: b.user, IP: b.ip,
		UserAgent: r.UserAgent(), Captcha: r.Header.Get("X-Captcha-Token"),
	})
	switch {
	case err != nil:
		s.metrics.riskChecks.WithLabelValues("error").Inc()
	case d.Allow:
		s.metrics.riskChecks.WithLabelValues("allow").Inc()
	default:
		s.metrics.riskChecks.WithLabelValues("deny").Inc()
	}
	if d.Allow {
		return nil
	}
	msg := "the purchase was refused by the risk check"
	if d.Reason != "" {
		msg += ": " + d.Reason
	}
	return refuse(http.StatusForbidden, CodeRiskRejected, msg)
}

// handleOrder answers result polling: queued until the order pipeline made it
// durable. Only the buyer who made the order may see it.
//
// Every poll reads Redis, so polls are charged to the buyer's and their
// address' read buckets (the sale's per-user and per-IP rates, kept apart
// from the purchase buckets so that polling never costs a buyer a purchase,
// and never to the sale-wide bucket, which is the purchases' own).
func (s *Server) handleOrder(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	b, aerr := s.identify(r)
	if aerr != nil {
		return "", aerr
	}
	if aerr := s.readLimit(b); aerr != nil {
		return "", aerr
	}
	orderNo := r.PathValue("orderNo")
	skuID, aerr := s.orderSKU(orderNo)
	if aerr != nil {
		return "", aerr
	}
	rec, aerr := s.orderRecord(r.Context(), skuID, orderNo)
	if aerr != nil {
		return "", aerr
	}
	if rec.User != b.user {
		return "", errUnknownOrder
	}
	writeJSON(w, http.StatusOK, orderResponse{OrderNo: orderNo, SKU: skuID, Status: rec.Status.String()})
	return "ok", nil
}

// handleSKU answers the stock of a SKU from this pod's cache: the sum over
// its buckets for a SKU split into buckets.
func (s *Server) handleSKU(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	id := r.PathValue("sku")
	st, ok := s.state.skus[id]
	if !ok {
		return "", errUnknownSKU
	}
	w.Header().Set("Cache-Control", "max-age=1")
	writeJSON(w, http.StatusOK, skuResponse{SKU: id, Remaining: max(st.remaining.Load(), 0), SoldOut: st.soldOut.Load()})
	return "ok", nil
}

var errOrderLookup = &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable, message: "order lookup failed; retry", retryAfter: 1}

// orderSKU returns the SKU an order number belongs to, if it is one of this
// sale's: the SKU is part of the number, so no lookup is needed.
func (s *Server) orderSKU(orderNo string) (string, *apiError) {
	skuID, ok := purchase.SKUOf(orderNo)
	if !ok {
		return "", errUnknownOrder
	}
	if _, known := s.skus[skuID]; !known {
		return "", errUnknownOrder
	}
	return skuID, nil
}

// orderRecord reads the order's record (package orderstate), which Redis
// holds from the moment the purchase script admitted the order.
func (s *Server) orderRecord(ctx context.Context, skuID, orderNo string) (orderstate.Record, *apiError) {
	start := time.Now()
	rec, ok, err := orderstate.Lookup(ctx, s.rdb, s.saleKey, skuID, s.skus[skuID].BucketCount(), orderNo)
	s.metrics.observeRedis("order_lookup", time.Since(start), err)
	if err != nil {
		s.log.Error("Order lookup in Redis failed", "sale", s.saleKey, "order", orderNo, "err", err)
		return orderstate.Record{}, errOrderLookup
	}
	if !ok {
		return orderstate.Record{}, errUnknownOrder
	}
	return rec, nil
}
