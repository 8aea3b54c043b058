package seckill

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
)

// The waiting room (spec.queue): buyers join (POST …/queue) and get a
// signed ticket, poll their place (GET …/queue/{ticket}), and once admitted
// exchange the ticket for path tokens (/token). Who is admitted is decided
// by the admitter loop (admitter.go) in Redis, sale-wide; these handlers
// only read it.
//
// An admission is a session: the admitted buyer fetches path tokens while
// it is live (in Redis's admissions set and younger than admissionTTL). It
// ends when used (a purchase admitted; a purchase or /token refused
// SOLD_OUT or ALREADY_PURCHASED with no other SKU on sale) or when it
// lapses; the wait endpoint then answers status "done" and /token
// NOT_ADMITTED. A refusal of one SKU while another is on sale shortens it
// instead: it lapses refusalGrace later (unless sooner anyway), so the
// buyer may still choose the other SKU, and one who leaves frees the
// budget for the next in line. A place is admitted once.

// queueTimeout bounds one queue call to Redis (join, position).
const queueTimeout = 2 * time.Second

// maxPollAfter caps how long a waiting buyer is told to wait before the
// next poll, so that a buyer learns of an admission (or a sell-out) soon.
const maxPollAfter = 10

// waitResponse is the body of join and wait.
type waitResponse struct {
	Ticket string `json:"ticket"`
	// Status is "waiting", "admitted" (a live admission: fetch tokens) or
	// "done" (the place was admitted, and the admission was used or has
	// expired: nothing more to wait for; not to be polled again).
	Status string `json:"status"`
	// Message explains a "done".
	Message string `json:"message,omitempty"`
	// Place is 1-based; null before the start: places are drawn at the
	// start.
	Place *int64 `json:"place"`
	// Ahead is how many are before the buyer in the queue and not admitted
	// yet. Before the start it is everyone else in the room: any of them
	// may be drawn ahead.
	Ahead                int64     `json:"ahead"`
	EstimatedWaitSeconds int64     `json:"estimatedWaitSeconds"`
	StartTime            time.Time `json:"startTime"`
	ServerTime           time.Time `json:"serverTime"`
	PollAfterSeconds     int64     `json:"pollAfterSeconds"`
	// Next says what an admitted buyer does next.
	Next string `json:"next,omitempty"`
}

// handleJoin puts the buyer in the waiting room (once, however often they
// join) and answers their ticket and place: 201 the first time, 200 after.
func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	b, aerr := s.queueBuyer(r)
	if aerr != nil {
		return "", aerr
	}
	if aerr := emptyBody(w, r); aerr != nil {
		return "", aerr
	}
	now := s.clk.Now()
	if aerr := s.joinWindow(now); aerr != nil {
		return "", aerr
	}
	ticket, err := s.signer.Ticket(s.saleKey, b.user)
	if err != nil {
		return "", refuse(http.StatusBadRequest, CodeBadRequest, err.Error())
	}
	ctx, cancel := context.WithTimeout(r.Context(), queueTimeout)
	defer cancel()
	start := time.Now()
	place, err := s.queue.Join(ctx, b.user, now)
	s.metrics.observeRedis("queue_join", time.Since(start), err)
	if err != nil {
		return "", s.queueFailure("Joining the queue", err)
	}
	status := http.StatusOK
	if place.New {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.waitBody(ticket, place, now))
	return "ok", nil
}

// joinWindow says whether buyers may join now: from the queue's opening
// until the end (or an early close), and not once everything sold out
// after the start (nobody should queue for nothing).
func (s *Server) joinWindow(now time.Time) *apiError {
	if opens := s.sale.QueueOpensAt(); now.Before(opens) {
		return &apiError{status: http.StatusTooEarly, code: CodeNotStarted,
			message:    "the waiting room opens at " + opens.UTC().Format(time.RFC3339),
			retryAfter: ceilSeconds(opens.Sub(now))}
	}
	if s.over(now) {
		return errEnded
	}
	if s.allSoldOut(now) {
		return errAllSoldOut
	}
	return nil
}

// handleWait answers the buyer's place, or that they are admitted, or
// SOLD_OUT the moment every SKU is gone (a returned unit reopens it).
func (s *Server) handleWait(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	b, aerr := s.queueBuyer(r)
	if aerr != nil {
		return "", aerr
	}
	ticket := r.PathValue("ticket")
	if aerr := s.verifyTicket(ticket, b.user); aerr != nil {
		return "", aerr
	}
	now := s.clk.Now()
	if s.over(now) {
		return "", errEnded
	}
	if s.allSoldOut(now) {
		return "", errAllSoldOut
	}
	place, aerr := s.position(r.Context(), b.user)
	if aerr != nil {
		return "", aerr
	}
	body := s.waitBody(ticket, place, now)
	writeJSON(w, http.StatusOK, body)
	return body.Status, nil
}

// gateToken lets the holder of a live admission of a queued sale fetch a
// path token. Its Redis read (the buyer's rank against the admitted count,
// and their admission) is fresh, not a cache: admission is decided in Redis
// by whichever pod ran the admitter. The ticket's HMAC is checked by
// verifyTicket before any rate bucket is charged (see handleToken).
func (s *Server) gateToken(ctx context.Context, user string) *apiError {
	place, aerr := s.position(ctx, user)
	if aerr != nil {
		return aerr
	}
	if place.Live(s.clk.Now(), s.queueCfg.AdmissionTTL) {
		return nil
	}
	if place.IsAdmitted() {
		return &apiError{status: http.StatusForbidden, code: CodeNotAdmitted, message: admissionOver}
	}
	ahead := place.Ahead()
	rank := place.Rank + 1
	return &apiError{status: http.StatusForbidden, code: CodeNotAdmitted,
		message: "not admitted yet: place " + strconv.FormatInt(rank, 10) + ", " + strconv.FormatInt(ahead, 10) +
			" ahead; wait with GET /api/v1/sales/" + s.ns + "/" + s.name + "/queue/{ticket}",
		place: &rank, ahead: &ahead, retryAfter: 1}
}

// verifyTicket checks the ticket's HMAC against the sale and the buyer:
// a forged ticket or another user's is BAD_TICKET.
func (s *Server) verifyTicket(ticket, user string) *apiError {
	if ticket == "" {
		return errNoTicket
	}
	// Refusals are counted by the request metrics (outcome BAD_TICKET).
	if err := s.signer.VerifyTicket(ticket, s.saleKey, user); err != nil {
		return errBadTicket
	}
	return nil
}

// position reads the buyer's place: NOT_QUEUED for a genuine ticket whose
// user is not in the queue (the sale's keys were rebuilt).
func (s *Server) position(ctx context.Context, user string) (queue.Place, *apiError) {
	ctx, cancel := context.WithTimeout(ctx, queueTimeout)
	defer cancel()
	start := time.Now()
	place, err := s.queue.Position(ctx, user)
	s.metrics.observeRedis("queue_position", time.Since(start), err)
	if err != nil {
		return queue.Place{}, s.queueFailure("Reading a queue position", err)
	}
	if !place.Queued {
		return queue.Place{}, errNotQueued
	}
	return place, nil
}

// queueFailure is the answer to a failed queue call.
func (s *Server) queueFailure(what string, err error) *apiError {
	if errors.Is(err, queue.ErrNotWarmed) {
		return &apiError{status: http.StatusServiceUnavailable, code: CodeNotReady,
			message: "the waiting room is not ready yet: run flashsale warm", retryAfter: 1}
	}
	s.log.Error(what+" in Redis failed", "sale", s.saleKey, "err", err)
	return &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable,
		message: "the waiting room could not be reached; retry", retryAfter: 1}
}

// admissionOver is why an admitted buyer's admission no longer opens /token.
const admissionOver = "your admission was used (a purchase was made or refused) or has expired: it opens no more tokens"

// waitBody renders a place. Before the start nobody has a place yet (the
// pre-queue is shuffled at the start), so the estimate is the time to the
// start plus the expected wait of a random place among those who joined.
func (s *Server) waitBody(ticket string, p queue.Place, now time.Time) waitResponse {
	start := s.sale.Spec.StartTime.Time
	body := waitResponse{Ticket: ticket, Status: "waiting", StartTime: start.UTC(), ServerTime: now.UTC()}
	rate := max(s.queueCfg.AdmitPerSecond, 1)
	if now.Before(start) {
		others := max(p.Length-1, 0)
		body.Ahead = others
		body.EstimatedWaitSeconds = int64(ceilSeconds(start.Sub(now))) + int64(math.Ceil(float64(others)/2/rate))
		body.PollAfterSeconds = int64(min(max(ceilSeconds(start.Sub(now)), 1), maxPollAfter))
		return body
	}
	place := p.Rank + 1
	body.Place = &place
	if p.Live(now, s.queueCfg.AdmissionTTL) {
		body.Status = "admitted"
		body.Next = "POST /api/v1/sales/" + s.ns + "/" + s.name + `/token with {"sku":…,"ticket":…}`
		return body
	}
	if p.IsAdmitted() {
		body.Status, body.Message = "done", admissionOver
		return body
	}
	body.Ahead = p.Ahead()
	body.EstimatedWaitSeconds = int64(math.Ceil(float64(body.Ahead+1) / rate))
	body.PollAfterSeconds = min(max(body.EstimatedWaitSeconds/2, 1), maxPollAfter)
	return body
}

// over says whether the sale has ended (or was closed early).
func (s *Server) over(now time.Time) bool {
	return !now.Before(s.sale.Spec.EndTime.Time) || s.state.closed.Load()
}

// allSoldOut says whether every SKU is sold out, as this pod knows it,
// once the sale has started (nothing sells before it).
func (s *Server) allSoldOut(now time.Time) bool {
	if now.Before(s.sale.Spec.StartTime.Time) {
		return false
	}
	for _, id := range s.state.order {
		if !s.state.skus[id].soldOut.Load() {
			return false
		}
	}
	return true
}

// queueBuyer is who joins or waits: NO_QUEUE for a sale without a waiting
// room, then the buyer's checks (identify), then the charge to the buyer's
// and their address' queue buckets (the read rates, in buckets of their own
// so that queue polling never starves order polling or replay lookups): a
// waiting room is polled, and a bot that joins in a loop gets 429s, not
// extra Redis calls.
func (s *Server) queueBuyer(r *http.Request) (buyer, *apiError) {
	if s.queue == nil {
		return buyer{}, errNoQueue
	}
	b, aerr := s.identify(r)
	if aerr != nil || b.allowed {
		return b, aerr
	}
	return b, rateLimited(s.queueReads.AllowAddr(b.user, b.ip), "queue requests")
}

// emptyBody accepts an empty body or one JSON object (its fields are
// ignored: a join carries nothing).
func emptyBody(w http.ResponseWriter, r *http.Request) *apiError {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		return refuse(http.StatusRequestEntityTooLarge, CodeTooLarge, "the request body is larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	var v struct{}
	return decode(w, r, &v)
}

func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
