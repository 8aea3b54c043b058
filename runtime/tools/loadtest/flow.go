package loadtest

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// orderRec is one order the API admitted (answered 202) to this run.
type orderRec struct {
	no, user, sku string
	wantPay       bool
	paid          bool   // the pay endpoint answered 200
	payRefused    string // its refusal code (EXPIRED, CANCELLED, ...)
	polled        string // the last status result polling showed
	pollTimedOut  bool
}

func (o *orderRec) cancelled() bool { return o.polled == "cancelled" || o.payRefused == "CANCELLED" }

type userSKU struct{ user, sku string }

// ledger is what this run was told: every admitted order, by number and by
// buyer, and the repeat clickers' and bots' results.
type ledger struct {
	mu      sync.Mutex
	orders  map[string]*orderRec
	byBuyer map[userSKU][]string

	// Repeat clickers: a retry with the same token must bring the same order.
	repeats       int64
	retrySame     int64
	retryNew      []string // orderNo pairs "first -> second": a violation
	retryOutcomes map[string]int64
	againOutcomes map[string]int64
	bots          [numKinds]botTally
	pollTimeouts  int64
	// q is what the waiting room told this run (a queued sale).
	q *queueLedger
}

type botTally struct {
	sessions    int64
	admitted    []string // order numbers a bot got: a violation
	outcomes    map[string]int64
	unthrottled int64 // hammering bots served every request, never 429
	throttled   int64
	// inconclusive: hammering bots refused for another reason (paused, sold
	// out, ended) before the rate limiter was asked.
	inconclusive int64
}

func newLedger() *ledger {
	l := &ledger{orders: map[string]*orderRec{}, byBuyer: map[userSKU][]string{},
		retryOutcomes: map[string]int64{}, againOutcomes: map[string]int64{}, q: newQueueLedger()}
	for i := range l.bots {
		l.bots[i].outcomes = map[string]int64{}
	}
	return l
}

// admit records an order; it returns the record and whether it is new.
func (l *ledger) admit(no, user, sku string, wantPay bool) (*orderRec, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o, ok := l.orders[no]; ok {
		return o, false
	}
	o := &orderRec{no: no, user: user, sku: sku, wantPay: wantPay}
	l.orders[no] = o
	k := userSKU{user, sku}
	l.byBuyer[k] = append(l.byBuyer[k], no)
	return o, true
}

func (l *ledger) update(f func()) {
	l.mu.Lock()
	f()
	l.mu.Unlock()
}

// runSession runs one arrival to its end.
func (r *run) runSession(ctx context.Context, s session) {
	switch {
	case s.kind == buyer && r.o.queued:
		r.queueBuy(ctx, s)
	case s.kind == buyer:
		r.buy(ctx, s, "")
	default:
		r.bot(ctx, s)
	}
}

// tokenBody is the body of a token request: with the buyer's ticket in a
// queued sale.
func (r *run) tokenBody(s session, ticket string) []byte {
	if ticket == "" {
		return r.tokenBodies[s.sku]
	}
	return ticketTokenBody(r.o.SKUs[s.sku].ID, ticket)
}

// buy is a buyer's flow: a token (with the waiting room's ticket, when
// admitted by one), the purchase, polling until the order is durable, then
// paying or walking away; a repeat clicker then clicks again.
func (r *run) buy(ctx context.Context, s session, ticket string) {
	who := r.buyerID(s.index)
	sku := r.o.SKUs[s.sku].ID
	t := r.c.do(ctx, r.st.steps[stepToken], http.MethodPost, "/token", r.tokenBody(s, ticket), who, false)
	var p answer
	if t.status == http.StatusOK {
		p = r.c.do(ctx, r.st.steps[stepPurchase], http.MethodPost, "/purchase", purchaseBody(sku, t.token), who, false)
		if p.status == http.StatusAccepted && p.orderNo != "" {
			r.complete(ctx, p.orderNo, who, sku, s.pays)
		}
	}
	if ticket != "" {
		r.usedAdmission(t, p)
	}
	if !s.repeat || ctx.Err() != nil {
		return
	}
	r.l.update(func() { r.l.repeats++ })
	if sleep(ctx, r.o.RepeatDelay) != nil {
		return
	}
	if p.status == http.StatusAccepted && p.orderNo != "" {
		// The buyer's browser retries the purchase it already made (a
		// timeout, a double click): the same token must bring the same order.
		rp := r.c.do(ctx, r.st.steps[stepPurchase], http.MethodPost, "/purchase", purchaseBody(sku, t.token), who, false)
		r.l.update(func() {
			switch {
			case rp.status == http.StatusAccepted && rp.orderNo == p.orderNo:
				r.l.retrySame++
				r.l.retryOutcomes["202 same order"]++
			case rp.status == http.StatusAccepted:
				r.l.retryNew = append(r.l.retryNew, p.orderNo+" -> "+rp.orderNo)
				r.l.retryOutcomes["202 another order"]++
			default:
				r.l.retryOutcomes[rp.outcome.String()]++
			}
		})
	}
	r.again(ctx, s, who, ticket)
}

// again is a click with a fresh token by a buyer who tried already: refused
// ALREADY_PURCHASED once they hold their limit (or SOLD_OUT, RATE_LIMITED).
func (r *run) again(ctx context.Context, s session, who identity, ticket string) {
	sku := r.o.SKUs[s.sku].ID
	t := r.c.do(ctx, r.st.steps[stepToken], http.MethodPost, "/token", r.tokenBody(s, ticket), who, false)
	if t.status != http.StatusOK {
		r.l.update(func() { r.l.againOutcomes["token "+t.outcome.String()]++ })
		return
	}
	p := r.c.do(ctx, r.st.steps[stepPurchase], http.MethodPost, "/purchase", purchaseBody(sku, t.token), who, false)
	r.l.update(func() { r.l.againOutcomes["purchase "+p.outcome.String()]++ })
	if p.status == http.StatusAccepted && p.orderNo != "" {
		r.complete(ctx, p.orderNo, who, sku, s.pays)
	}
}

// complete records an admitted order, polls it until it is durable, and pays
// for it or walks away.
func (r *run) complete(ctx context.Context, no string, who identity, sku string, pays bool) {
	rec, fresh := r.l.admit(no, who.user, sku, pays)
	if !fresh {
		return
	}
	r.st.admitted.Add(1)
	deadline := time.Now().Add(r.o.PollTimeout)
	state := ""
	for {
		a := r.c.do(ctx, r.st.steps[stepPoll], http.MethodGet, "/orders/"+no, nil, who, false)
		if a.status == http.StatusOK && a.state != "queued" {
			state = a.state
			break
		}
		if a.status == http.StatusNotFound || a.code == "canceled" {
			break
		}
		if time.Now().After(deadline) {
			r.l.update(func() { rec.pollTimedOut = true; r.l.pollTimeouts++ })
			break
		}
		if sleep(ctx, r.o.PollInterval) != nil {
			return
		}
	}
	r.l.update(func() { rec.polled = state })
	if !pays || ctx.Err() != nil {
		return
	}
	// The shop's payment service calls the pay endpoint. PENDING (not
	// durable yet) and UNAVAILABLE are retried; a refusal is final.
	for {
		a := r.c.do(ctx, r.st.steps[stepPay], http.MethodPost, "/orders/"+no+"/pay", nil, identity{}, true)
		retry := a.status == http.StatusTooEarly || a.code == "UNAVAILABLE" || a.code == "timeout" || a.code == "transport_error"
		if retry && time.Now().Before(deadline) {
			if sleep(ctx, r.o.PollInterval) != nil {
				return
			}
			continue
		}
		r.l.update(func() {
			if a.status == http.StatusOK {
				rec.paid = true
			} else {
				rec.payRefused = a.outcome.String()
				if a.code != "" {
					rec.payRefused = a.code
				}
			}
		})
		return
	}
}

// bot is one bot's attack. None of them may ever be admitted.
func (r *run) bot(ctx context.Context, s session) {
	sku := r.o.SKUs[s.sku].ID
	st := r.st.steps[stepBot]
	var answers []answer
	switch s.kind {
	case botForged:
		who := r.botID(s.index, "")
		answers = append(answers, r.c.do(ctx, st, http.MethodPost, "/purchase", purchaseBody(sku, forgedToken(s.noise)), who, false))
	case botNoToken:
		who := r.botID(s.index, "")
		answers = append(answers, r.c.do(ctx, st, http.MethodPost, "/purchase", []byte(`{"sku":"`+sku+`"}`), who, false))
	case botBorrowed:
		// A genuine token, fetched by an accomplice, presented by another user.
		owner, thief := r.botID(s.index, "a"), r.botID(s.index, "b")
		t := r.c.do(ctx, st, http.MethodPost, "/token", r.tokenBodies[s.sku], owner, false)
		if t.status == http.StatusOK {
			answers = append(answers, r.c.do(ctx, st, http.MethodPost, "/purchase", purchaseBody(sku, t.token), thief, false))
		} else {
			answers = append(answers, t)
		}
	case botHammer:
		who := r.botID(s.index, "")
		answers = make([]answer, 0, r.o.HammerRequests)
		for range r.o.HammerRequests {
			a := r.c.do(ctx, st, http.MethodPost, "/token", r.tokenBodies[s.sku], who, false)
			if a.code == "canceled" {
				return
			}
			answers = append(answers, a)
		}
	case botForgedTicket, botBorrowedTicket:
		answers = r.ticketBot(ctx, s)
	}
	r.l.update(func() {
		b := &r.l.bots[s.kind]
		b.sessions++
		limited, served := false, 0
		for _, a := range answers {
			b.outcomes[a.outcome.String()]++
			if a.status == http.StatusAccepted {
				b.admitted = append(b.admitted, a.orderNo)
			}
			if (s.kind == botForgedTicket || s.kind == botBorrowedTicket) && a.status == http.StatusOK {
				// A place told or a token issued for a ticket not the bot's own.
				b.admitted = append(b.admitted, "200 to a "+s.kind.String())
			}
			if a.status == http.StatusOK {
				served++
			}
			limited = limited || a.status == http.StatusTooManyRequests
		}
		if s.kind == botHammer {
			switch {
			case limited:
				b.throttled++
			case len(answers) == r.o.HammerRequests && served == len(answers):
				// Every request served: the limiter let them all through.
				b.unthrottled++
			default:
				// Refused before the limiter is asked (paused, sold out,
				// ended): says nothing about the limit.
				b.inconclusive++
			}
		}
	})
}

// usedAdmission records what an admitted buyer was answered next. A
// purchase answered 202, 409 or 410 uses the admission up (the queue
// stops counting it as outstanding); a refused token does not.
func (r *run) usedAdmission(t, p answer) {
	next := "token " + t.outcome.String()
	if t.status == http.StatusOK {
		next = "purchase " + p.outcome.String()
		if p.status == http.StatusAccepted || p.status == http.StatusConflict || p.status == http.StatusGone {
			r.st.outstanding.Add(-1)
		}
	}
	r.l.update(func() { r.l.q.afterAdmission[next]++ })
}
