package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// queueInfo is what the run knows of the sale's waiting room.
type queueInfo struct {
	admitPerSecond float64
	// overbook and ttl are 0 when unknown (no manifest, no FlashSale).
	overbook float64
	ttl      time.Duration
	opensAt  time.Time
	// source says where the run learnt that the sale is queued.
	source string
}

// Wait states a buyer's stay in the waiting room ends with.
const (
	waitAdmitted = "admitted"
	waitGaveUp   = "gave up"
)

// queueLedger is what the waiting room told this run's buyers. It is
// guarded by the ledger's mutex.
type queueLedger struct {
	tickets  map[string]string // user -> the first ticket they were given
	byTicket map[string]string // ticket -> user
	// Violations of "one ticket per user": a user given two tickets, a
	// ticket given to two users, a join after the first answered 201 (a
	// second place) instead of 200.
	twoTickets, sharedTickets, newAgain []string
	rejoins                             int64
	rejoinOutcomes                      map[string]int64

	// joinRefused counts the buyers who never got a ticket, by answer.
	joinRefused map[string]int64
	joined      int64
	// ends counts how each buyer's wait ended: admitted, 410 SOLD_OUT,
	// 410 ENDED, gave up (still waiting at QueueTimeout), another answer.
	ends map[string]int64
	// waits are the join -> admission times the buyers saw (their poll
	// interval is the resolution).
	waits []time.Duration
	// afterAdmission counts what admitted buyers were answered next: the
	// token, then the purchase ("purchase 202", "token 410 SOLD_OUT", ...).
	afterAdmission map[string]int64

	// Probes: a token asked with a genuine ticket before admission.
	probes        map[string]int64
	probeTokens   []string // tokens issued to a buyer the queue then said was waiting
	probeUnproven int64    // a token issued, but the buyer was admitted meanwhile
}

func newQueueLedger() *queueLedger {
	return &queueLedger{tickets: map[string]string{}, byTicket: map[string]string{}, rejoinOutcomes: map[string]int64{},
		joinRefused: map[string]int64{}, ends: map[string]int64{}, afterAdmission: map[string]int64{}, probes: map[string]int64{}}
}

// ticket records a ticket given to user; first says whether it answered a
// user's first join (201 expected) or a later one (200 expected).
func (q *queueLedger) ticket(user string, a answer, first bool) {
	if prev, ok := q.tickets[user]; ok && prev != a.ticket {
		q.twoTickets = append(q.twoTickets, user+": "+short(prev)+" then "+short(a.ticket))
	} else if !ok {
		q.tickets[user] = a.ticket
	}
	if other, ok := q.byTicket[a.ticket]; ok && other != user {
		q.sharedTickets = append(q.sharedTickets, short(a.ticket)+" given to "+other+" and "+user)
	} else if !ok {
		q.byTicket[a.ticket] = user
	}
	if !first && a.status == http.StatusCreated {
		q.newAgain = append(q.newAgain, user)
	}
}

func short(ticket string) string {
	if len(ticket) > 20 {
		return ticket[:20] + "…"
	}
	return ticket
}

// queueBuy is a queued sale's buyer: join the waiting room (rejoiners join
// again), wait for admission, then buy with the ticket as any buyer does.
func (r *run) queueBuy(ctx context.Context, s session) {
	who := r.buyerID(s.index)
	deadline := time.Now().Add(r.o.QueueTimeout)
	j := r.join(ctx, who, deadline)
	if (j.status != http.StatusOK && j.status != http.StatusCreated) || j.ticket == "" {
		if j.code != "canceled" {
			r.l.update(func() { r.l.q.joinRefused[j.outcome.String()]++ })
		}
		return
	}
	joinedAt := time.Now()
	r.st.joined.Add(1)
	r.l.update(func() { r.l.q.joined++; r.l.q.ticket(who.user, j, true) })
	if s.rejoin {
		r.rejoin(ctx, who) // a double click on "join"
	}
	end := r.await(ctx, s, who, j, deadline)
	if end == "canceled" {
		return
	}
	waited := time.Since(joinedAt)
	r.l.update(func() {
		r.l.q.ends[end]++
		if end == waitAdmitted {
			r.l.q.waits = append(r.l.q.waits, waited)
		}
	})
	if s.rejoin {
		r.rejoin(ctx, who) // and once more, after the wait
	}
	if end != waitAdmitted {
		return
	}
	r.st.queueAdmitted.Add(1)
	r.st.admittedSeen()
	if sleep(ctx, s.think) != nil {
		return
	}
	r.buy(ctx, s, j.ticket)
}

// join joins the waiting room. What says "come back" (425 before it opens,
// 503 not ready or paused, 429, a transport error) is retried after its
// Retry-After until deadline; anything else is returned.
func (r *run) join(ctx context.Context, who identity, deadline time.Time) answer {
	for {
		a := r.c.do(ctx, r.st.steps[stepJoin], http.MethodPost, "/queue", emptyJSON, who, false)
		if a.status == http.StatusOK || a.status == http.StatusCreated || !comeBack(a) {
			return a
		}
		d := backoff(a, time.Second)
		if time.Now().Add(d).After(deadline) || sleep(ctx, d) != nil {
			return a
		}
	}
}

var emptyJSON = []byte(`{}`)

// comeBack says whether an answer asks the client to try again later.
func comeBack(a answer) bool {
	switch a.status {
	case 0:
		return a.code != "canceled"
	case http.StatusTooEarly, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	}
	return false
}

// backoff is how long to wait before asking again: the answer's
// Retry-After, else its pollAfterSeconds, else def.
func backoff(a answer, def time.Duration) time.Duration {
	switch {
	case a.retryAfter > 0:
		return a.retryAfter
	case a.pollAfter > 0:
		return a.pollAfter
	}
	return def
}

// rejoin joins again: the same ticket must come back, answered 200.
func (r *run) rejoin(ctx context.Context, who identity) {
	a := r.c.do(ctx, r.st.steps[stepJoin], http.MethodPost, "/queue", emptyJSON, who, false)
	if a.code == "canceled" {
		return
	}
	r.l.update(func() {
		r.l.q.rejoins++
		r.l.q.rejoinOutcomes[a.outcome.String()]++
		if (a.status == http.StatusOK || a.status == http.StatusCreated) && a.ticket != "" {
			r.l.q.ticket(who.user, a, false)
		}
	})
}

// await polls the buyer's place, honouring pollAfterSeconds and
// Retry-After, until they are admitted, refused for good (410 SOLD_OUT or
// ENDED, another refusal) or deadline passes. It returns how the wait ended.
// A probing buyer asks for a token the first time the queue says they wait
// with a place (after the start: before it, the token endpoint answers
// 425 NOT_STARTED whatever the ticket).
func (r *run) await(ctx context.Context, s session, who identity, joined answer, deadline time.Time) string {
	a := joined
	probe := s.probe
	for {
		switch {
		case a.code == "canceled":
			return "canceled"
		case a.status == http.StatusOK && a.state == waitAdmitted:
			return waitAdmitted
		case a.status == http.StatusOK || a.status == http.StatusCreated || comeBack(a):
			// still waiting: ask again when told to
			if probe && a.state == "waiting" && a.place > 0 {
				probe = false
				r.probe(ctx, s, who, joined.ticket)
			}
		default:
			return a.outcome.String()
		}
		d := backoff(a, r.o.PollInterval)
		if time.Now().Add(d).After(deadline) {
			return waitGaveUp
		}
		if sleep(ctx, d) != nil {
			return "canceled"
		}
		a = r.c.do(ctx, r.st.steps[stepWait], http.MethodGet, "/queue/"+joined.ticket, nil, who, false)
	}
}

// probe asks for a path token with the buyer's own genuine ticket before
// the queue admitted them: it must be refused (403 NOT_ADMITTED). A token
// issued is a violation when the queue, asked at once afterwards, still
// says the buyer waits (admission is never revoked, so a buyer admitted
// meanwhile proves nothing either way).
func (r *run) probe(ctx context.Context, s session, who identity, ticket string) {
	sku := r.o.SKUs[s.sku].ID
	a := r.c.do(ctx, r.st.steps[stepToken], http.MethodPost, "/token", ticketTokenBody(sku, ticket), who, false)
	if a.code == "canceled" {
		return
	}
	var w answer
	if a.status == http.StatusOK {
		w = r.c.do(ctx, r.st.steps[stepWait], http.MethodGet, "/queue/"+ticket, nil, who, false)
	}
	r.l.update(func() {
		q := r.l.q
		q.probes[a.outcome.String()]++
		if a.status != http.StatusOK {
			return
		}
		if w.status == http.StatusOK && w.state == waitAdmitted {
			q.probeUnproven++
			return
		}
		q.probeTokens = append(q.probeTokens, who.user+" (then the queue said "+w.outcome.String()+" "+w.state+")")
	})
}

// ticketBot is a waiting-room bot: a forged ticket, or another user's.
// Both the wait and the token endpoint must refuse it (403 BAD_TICKET).
func (r *run) ticketBot(ctx context.Context, s session) []answer {
	sku := r.o.SKUs[s.sku].ID
	st := r.st.steps[stepBot]
	var ticket string
	var who identity
	switch s.kind {
	case botForgedTicket:
		who = r.botID(s.index, "")
		j := r.c.do(ctx, st, http.MethodPost, "/queue", emptyJSON, who, false)
		ticket = forgedTicket(j.ticket, s.noise)
	default: // botBorrowedTicket: an accomplice joins, the bot presents its ticket
		owner := r.botID(s.index, "a")
		who = r.botID(s.index, "b")
		j := r.c.do(ctx, st, http.MethodPost, "/queue", emptyJSON, owner, false)
		if j.ticket == "" {
			return []answer{j}
		}
		ticket = j.ticket
	}
	w := r.c.do(ctx, st, http.MethodGet, "/queue/"+ticket, nil, who, false)
	t := r.c.do(ctx, st, http.MethodPost, "/token", ticketTokenBody(sku, ticket), who, false)
	return []answer{w, t}
}

// detectQueue finds out whether the sale has a waiting room: the
// sale-level endpoint says so (what runs is what counts), else the
// manifest or FlashSale (an API without the sale-level endpoint).
func (r *run) detectQueue(ctx context.Context, rep *Report) error {
	o := r.o
	pctx, cancel := context.WithTimeout(ctx, o.Timeout)
	info, ok, err := r.c.saleInfo(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("preflight GET %s: %w", r.c.api, err)
	}
	var q *v1alpha1.Queue
	if o.Sale != nil {
		q = o.Sale.Spec.Queue
	}
	switch {
	case ok && info.Queue != nil:
		r.qi = &queueInfo{admitPerSecond: info.Queue.AdmitPerSecond, opensAt: info.Queue.OpensAt, source: "GET " + r.c.api}
	case ok:
		if q != nil {
			rep.Notes = append(rep.Notes, "the manifest has spec.queue but the API says the sale has no waiting room: bought without one")
		}
		return nil
	case q != nil:
		r.qi = &queueInfo{admitPerSecond: float64(q.AdmitPerSecond), opensAt: o.Sale.QueueOpensAt(), source: "spec.queue"}
	default:
		return nil
	}
	if q != nil {
		r.qi.overbook, r.qi.ttl = o.Sale.Overbook(), o.Sale.AdmissionTTL()
	}
	o.queued = true
	if r.direct() {
		r.c.slots = make(chan struct{}, o.Concurrency)
	}
	r.sampler = &sampler{}
	rep.Queue = &QueueReport{AdmitPerSecond: r.qi.admitPerSecond, Overbook: r.qi.overbook, AdmissionTTLSeconds: r.qi.ttl.Seconds(), Source: r.qi.source}
	if !r.qi.opensAt.IsZero() {
		t := r.qi.opensAt
		rep.Queue.OpensAt = &t
	}
	return nil
}
