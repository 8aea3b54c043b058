package loadtest

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// The waiting room's checks (a queued sale).
const (
	CheckOneTicket       = "one ticket per user"
	CheckNoTokenUnqueued = "no token unadmitted"
	CheckAdmissionBound  = "admissions bounded"
	CheckQueueSoldOut    = "queue says SOLD_OUT"
)

// addQueueChecks adds the waiting room's checks to the report.
func (r *Report) addQueueChecks(l *ledger, o *Options, saleCount map[string]*orderdb.Counts) {
	if r.Queue == nil {
		return
	}
	r.add(checkTickets(l.q))
	r.add(checkUnadmitted(l))
	r.add(checkAdmissionBound(r, o, l, saleCount))
	r.add(checkQueueSoldOut(r))
}

// checkTickets: every join of a user brings back the same ticket (answered
// 200 after the first 201: no second place), and no two users share one.
func checkTickets(q *queueLedger) Check {
	var bad []string
	if n := len(q.twoTickets); n > 0 {
		bad = append(bad, fmt.Sprintf("%d users given two tickets: %s", n, listed(q.twoTickets)))
	}
	if n := len(q.sharedTickets); n > 0 {
		bad = append(bad, fmt.Sprintf("%d tickets given to two users: %s", n, listed(q.sharedTickets)))
	}
	if n := len(q.newAgain); n > 0 {
		bad = append(bad, fmt.Sprintf("%d joins again answered 201 (a new place) instead of 200: %s", n, listed(q.newAgain)))
	}
	switch {
	case len(bad) > 0:
		return Check{CheckOneTicket, Fail, strings.Join(bad, "; ")}
	case q.joined == 0:
		return Check{CheckOneTicket, Skip, "no buyer got a ticket"}
	case q.rejoins == 0:
		return Check{CheckOneTicket, Pass, fmt.Sprintf("%d buyers, %d distinct tickets (nobody joined again)", q.joined, len(q.byTicket))}
	}
	return Check{CheckOneTicket, Pass, fmt.Sprintf("%d buyers, %d distinct tickets; %d joins again: %s",
		q.joined, len(q.byTicket), q.rejoins, mapText(q.rejoinOutcomes))}
}

// checkUnadmitted: no path token for a ticket the queue has not admitted:
// buyers asking before admission, and tickets forged or borrowed by bots.
func checkUnadmitted(l *ledger) Check {
	q := l.q
	var bad, good []string
	if n := len(q.probeTokens); n > 0 {
		bad = append(bad, fmt.Sprintf("%d tokens issued before admission: %s", n, listed(q.probeTokens)))
	}
	var probes int64
	for _, n := range q.probes {
		probes += n
	}
	if probes > 0 {
		g := fmt.Sprintf("%d buyers asked before admission: %s", probes, mapText(q.probes))
		if q.probeUnproven > 0 {
			g += fmt.Sprintf(" (%d admitted meanwhile)", q.probeUnproven)
		}
		good = append(good, g)
	}
	for _, k := range []kind{botForgedTicket, botBorrowedTicket} {
		b := &l.bots[k]
		if b.sessions == 0 {
			continue
		}
		if len(b.admitted) > 0 {
			bad = append(bad, fmt.Sprintf("%d answers 200 to %d %s bots", len(b.admitted), b.sessions, k))
			continue
		}
		good = append(good, fmt.Sprintf("%d %s bots: %s", b.sessions, k, mapText(b.outcomes)))
	}
	switch {
	case len(bad) > 0:
		return Check{CheckNoTokenUnqueued, Fail, strings.Join(bad, "; ")}
	case len(good) == 0:
		return Check{CheckNoTokenUnqueued, Skip, "no probes and no ticket bots (--probe-share, --bot-share)"}
	}
	return Check{CheckNoTokenUnqueued, Pass, strings.Join(good, "; ")}
}

// checkAdmissionBound: admissions outstanding never exceed the stock
// (plus the units cancellations returned) times overbook, plus the rate's
// slack: one admitter tick's admissions (100 ms of admitPerSecond), for a
// pod's slightly stale view of the stock. The queue admits only while
// outstanding < ⌊remaining × overbook⌋, so the bound holds whatever the
// rate; the most outstanding is what the seckill gauges showed or, never
// more than the truth, what this run's buyers saw.
func checkAdmissionBound(r *Report, o *Options, l *ledger, saleCount map[string]*orderdb.Counts) Check {
	q := r.Queue
	stock := int64(-1)
	if o.Sale != nil {
		stock = o.Sale.TotalStock()
	}
	if q.Overbook <= 0 || stock < 0 {
		return Check{CheckAdmissionBound, Skip, fmt.Sprintf("overbook or stock unknown (no manifest, no FlashSale); max outstanding %d", q.MaxOutstanding)}
	}
	returned := returnedUnits(l, saleCount)
	slack := max(int64(math.Ceil(q.AdmitPerSecond/10)), 1)
	budget := int64(math.Floor(float64(stock+returned)*q.Overbook + 1e-9))
	limit := budget + slack
	detail := fmt.Sprintf("max outstanding %d ≤ %d = ⌊(stock %d + returned %d) × overbook %g⌋ + 100 ms of admissions %d",
		q.MaxOutstanding, limit, stock, returned, q.Overbook, slack)
	if q.MaxOutstanding > limit {
		return Check{CheckAdmissionBound, Fail, strings.Replace(detail, "≤", ">", 1)}
	}
	if q.Figures == nil && q.Status == nil {
		detail += " (no seckill gauges or status.queue: from the buyers' view only)"
	}
	return Check{CheckAdmissionBound, Pass, detail}
}

// returnedUnits are the units cancellations gave back: MySQL's cancelled
// orders of the sale when read, else this run's.
func returnedUnits(l *ledger, saleCount map[string]*orderdb.Counts) int64 {
	var n int64
	if saleCount != nil {
		for _, c := range saleCount {
			n += c.Cancelled
		}
		return n
	}
	for _, o := range l.orders {
		if o.cancelled() {
			n++
		}
	}
	return n
}

// checkQueueSoldOut: once the stock is gone, nobody is kept waiting: the
// buyers still in the queue are told 410 SOLD_OUT (or ENDED), none waits
// until they give up.
func checkQueueSoldOut(r *Report) Check {
	q := r.Queue
	soldOut := len(r.SKUs) > 0
	var left []string
	for _, s := range r.SKUs {
		if !s.SoldOut || s.RemainingAfter == nil || *s.RemainingAfter > 0 {
			soldOut = false
			left = append(left, fmt.Sprintf("%s %s", s.ID, optInt(s.RemainingAfter)))
		}
	}
	told := q.ToldSoldOut + q.ToldEnded
	switch {
	case q.GaveUp > 0 && soldOut:
		return Check{CheckQueueSoldOut, Fail, fmt.Sprintf("%d buyers still waiting when they gave up although the stock was gone (%d were told SOLD_OUT)", q.GaveUp, q.ToldSoldOut)}
	case soldOut && q.Joined > q.Admitted && told == 0:
		return Check{CheckQueueSoldOut, Fail, fmt.Sprintf("sold out, %d buyers not admitted, none told SOLD_OUT or ENDED by the queue", q.Joined-q.Admitted)}
	case !soldOut && q.ToldSoldOut == 0:
		sort.Strings(left)
		return Check{CheckQueueSoldOut, Skip, fmt.Sprintf("stock left at the end (%s): nobody to tell; %d of %d admitted, %d gave up waiting",
			strings.Join(left, ", "), q.Admitted, q.Joined, q.GaveUp)}
	}
	if q.GaveUp > 0 {
		// The stock came back (cancelled orders) after some were told
		// SOLD_OUT: those still waiting were rightly not told so.
		return Check{CheckQueueSoldOut, Pass, fmt.Sprintf("%d buyers told 410 SOLD_OUT by the queue while the stock was gone (%d when joining), %d ENDED;"+
			" units came back afterwards (left at the end: %s) and %d buyers still waited for them when they gave up", q.ToldSoldOut, q.JoinRefusedSoldOut(),
			q.ToldEnded, strings.Join(left, ", "), q.GaveUp)}
	}
	return Check{CheckQueueSoldOut, Pass, fmt.Sprintf("stock gone: %d buyers told 410 SOLD_OUT by the queue (%d when joining), %d ENDED, none left waiting",
		q.ToldSoldOut, q.JoinRefusedSoldOut(), q.ToldEnded)}
}

// JoinRefusedSoldOut is how many buyers the queue refused SOLD_OUT at join.
func (q *QueueReport) JoinRefusedSoldOut() int64 { return q.JoinRefused["410 SOLD_OUT"] }
