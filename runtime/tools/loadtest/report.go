package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a load test did and found.
type Report struct {
	SaleKey            string    `json:"sale"` // namespace/name
	API                string    `json:"api"`
	Profile            Profile   `json:"profile"`
	Seed               uint64    `json:"seed"`
	UserPrefix         string    `json:"userPrefix"`
	Users              int       `json:"users"`
	Concurrency        int       `json:"concurrency"`
	SpikeWindowSeconds float64   `json:"spikeWindowSeconds,omitempty"`
	TargetRate         float64   `json:"targetRate,omitempty"`
	DurationSeconds    float64   `json:"durationSeconds,omitempty"`
	RepeatShare        float64   `json:"repeatShare"`
	BotShare           float64   `json:"botShare"`
	PayShare           float64   `json:"payShare"`
	Started            time.Time `json:"started"`
	// DispatchSeconds is how long releasing every arrival took: about the
	// spike window unless every virtual buyer was busy.
	DispatchSeconds   float64        `json:"dispatchSeconds"`
	ElapsedSeconds    float64        `json:"elapsedSeconds"`
	Requests          int64          `json:"requests"`
	RequestsPerSecond float64        `json:"requestsPerSecond"`
	Errors            int64          `json:"errors"`
	Sessions          Sessions       `json:"sessions"`
	Steps             []StepReport   `json:"steps"`
	SKUs              []SKUReport    `json:"skus"`
	Orders            OrderSummary   `json:"orders"`
	Repeats           RepeatReport   `json:"repeats"`
	Bots              []BotReport    `json:"bots"`
	Timeline          []Tick         `json:"timeline"`
	Kube              *FlashSaleView `json:"flashSale,omitempty"`
	Queue             *QueueReport   `json:"queue,omitempty"`
	Checks            []Check        `json:"checks"`
	Notes             []string       `json:"notes,omitempty"`
	OK                bool           `json:"ok"`

	ledger *ledger
}

// Sessions counts arrivals.
type Sessions struct {
	Buyers         int64 `json:"buyers"`
	RepeatClickers int64 `json:"repeatClickers"`
	Bots           int64 `json:"bots"`
}

// StepReport is one step's throughput, latency and outcomes.
type StepReport struct {
	Name              string         `json:"name"`
	Requests          int64          `json:"requests"`
	RequestsPerSecond float64        `json:"requestsPerSecond"`
	Errors            int64          `json:"errors"`
	Latency           Latency        `json:"latency"`
	Outcomes          []OutcomeCount `json:"outcomes"`
}

// Latency percentiles, in milliseconds.
type Latency struct {
	P50  float64 `json:"p50Ms"`
	P95  float64 `json:"p95Ms"`
	P99  float64 `json:"p99Ms"`
	Max  float64 `json:"maxMs"`
	Mean float64 `json:"meanMs"`
}

// OutcomeCount is how often one answer came: "202", "410 SOLD_OUT", "200
// created" (polls show the order's status), "timeout", ...
type OutcomeCount struct {
	Outcome string `json:"outcome"`
	Status  int    `json:"status"`
	Code    string `json:"code,omitempty"`
	Count   int64  `json:"count"`
	Error   bool   `json:"error,omitempty"`
}

// SKUReport is one SKU's numbers.
type SKUReport struct {
	ID              string `json:"id"`
	Stock           *int64 `json:"stock,omitempty"`
	PerUserLimit    int32  `json:"perUserLimit,omitempty"`
	RemainingBefore *int64 `json:"remainingBefore,omitempty"`
	RemainingAfter  *int64 `json:"remainingAfter,omitempty"`
	SoldOut         bool   `json:"soldOut"`
	// Admitted is the distinct orders the API answered 202 for.
	Admitted   int64 `json:"admitted"`
	Paid       int64 `json:"paid"`
	PayRefused int64 `json:"payRefused"`
	WalkedAway int64 `json:"walkedAway"`
	// MySQL is where this run's orders are in MySQL; SaleMySQL counts the
	// whole sale's orders (every buyer, not only this run's).
	MySQL     *MySQLCounts `json:"mysql,omitempty"`
	SaleMySQL *MySQLCounts `json:"saleMySQL,omitempty"`
}

// MySQLCounts are orders by status in MySQL.
type MySQLCounts struct {
	Created   int64 `json:"created"`
	Paid      int64 `json:"paid"`
	Cancelled int64 `json:"cancelled"`
	Missing   int64 `json:"missing,omitempty"`
}

// OrderSummary sums the orders of this run.
type OrderSummary struct {
	Admitted     int64 `json:"admitted"`
	Paid         int64 `json:"paid"`
	PayRefused   int64 `json:"payRefused"`
	WalkedAway   int64 `json:"walkedAway"`
	PollTimeouts int64 `json:"pollTimeouts"`
	// From MySQL, when checked: unpaid orders cancelled (expired) or still
	// waiting for payment, and orders not found.
	Expired      *int64 `json:"expired,omitempty"`
	AwaitingPay  *int64 `json:"awaitingPayment,omitempty"`
	MissingMySQL *int64 `json:"missingInMySQL,omitempty"`
}

// RepeatReport is what repeat clickers were answered.
type RepeatReport struct {
	Clickers int64 `json:"clickers"`
	// Retry is the purchase resent with the same token; Again a click with
	// a fresh token.
	Retry map[string]int64 `json:"retry"`
	Again map[string]int64 `json:"again"`
}

// BotReport is what one kind of bot was answered.
type BotReport struct {
	Kind     string           `json:"kind"`
	Sessions int64            `json:"sessions"`
	Admitted int              `json:"admitted"`
	Outcomes map[string]int64 `json:"outcomes"`
	// Throttled counts hammering bots that saw 429 at least once.
	Throttled   int64 `json:"throttled,omitempty"`
	Unthrottled int64 `json:"unthrottled,omitempty"`
}

// Tick is one progress line.
type Tick struct {
	Seconds           float64 `json:"t"`
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	Requests          int64   `json:"requests"`
	Admitted          int64   `json:"admitted"`
	SoldOut           int64   `json:"soldOut"`
	Errors            int64   `json:"errors"`
	InFlight          int64   `json:"inFlight"`
	// A queued sale: buyers given a ticket, and admitted by the queue.
	Joined        int64 `json:"joined,omitempty"`
	QueueAdmitted int64 `json:"queueAdmitted,omitempty"`
}

// Check statuses.
const (
	Pass = "pass"
	Fail = "fail"
	Skip = "skip"
)

// Check is one invariant and whether it held.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// Failed lists the names of the checks that failed.
func (r *Report) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Status == Fail {
			out = append(out, c.Name)
		}
	}
	return out
}

func newReport(o *Options, api string) *Report {
	rep := &Report{SaleKey: o.SaleKey(), API: api, Profile: o.Profile, Seed: o.Seed, UserPrefix: o.UserPrefix,
		Users: o.Users, Concurrency: o.Concurrency, RepeatShare: o.RepeatShare, BotShare: o.BotShare, PayShare: o.PayShare}
	if o.Profile == Spike {
		rep.SpikeWindowSeconds = o.SpikeWindow.Seconds()
	} else {
		rep.TargetRate, rep.DurationSeconds = o.Rate, o.Duration.Seconds()
	}
	for _, s := range o.SKUs {
		sr := SKUReport{ID: s.ID, PerUserLimit: s.PerUserLimit}
		if s.Stock >= 0 {
			stock := s.Stock
			sr.Stock = &stock
		}
		rep.SKUs = append(rep.SKUs, sr)
	}
	return rep
}

// notes warns about settings of the sale that would make the load test
// measure something else than intended.
func notes(o *Options, rep *Report) {
	if o.Sale == nil {
		rep.Notes = append(rep.Notes, "the sale's rate limits are unknown (no manifest, no FlashSale): hammering bots are not required to see 429")
		return
	}
	rl := o.Sale.Spec.RateLimit
	trusted := o.Sale.Spec.Access != nil && len(o.Sale.Spec.Access.TrustedProxies) > 0
	if rl.PerIPPerSecond > 0 && (!trusted || !o.ForwardedFor) {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the sale allows %d requests/s per client IP and every request of this run comes from one address:"+
			" most of them will be refused 429 unless spec.access.trustedProxies holds this client's address (X-Forwarded-For then carries each buyer's own)", rl.PerIPPerSecond))
	}
	if rl.RequestsPerSecond > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the sale admits at most %d requests/s in total (spec.rateLimit.requestsPerSecond); beyond that the API answers 429 by design", rl.RequestsPerSecond))
	}
	if o.Sale.Spec.Paused {
		rep.Notes = append(rep.Notes, "the sale is paused (spec.paused): purchases are answered 503 PAUSED")
	}
}

// fill copies the run's counters into the report.
func (r *Report) fill(lt *run) {
	r.ledger = lt.l
	r.Requests = lt.st.requests.Load()
	r.Errors = lt.st.errors.Load()
	el := max(r.ElapsedSeconds, 1e-9)
	r.RequestsPerSecond = float64(r.Requests) / el
	for _, name := range stepNames {
		s := lt.st.steps[name]
		n := s.hist.n.Load()
		q := s.hist.quantiles(0.5, 0.95, 0.99)
		sr := StepReport{Name: name, Requests: n, RequestsPerSecond: float64(n) / el, Outcomes: s.sortedOutcomes()}
		for _, oc := range sr.Outcomes {
			if oc.Error {
				sr.Errors += oc.Count
			}
		}
		if n > 0 {
			sr.Latency = Latency{P50: ms(q[0]), P95: ms(q[1]), P99: ms(q[2]), Max: ms(time.Duration(s.hist.max.Load())),
				Mean: ms(time.Duration(s.hist.sum.Load() / n))}
		}
		r.Steps = append(r.Steps, sr)
	}
	l := lt.l
	l.mu.Lock()
	defer l.mu.Unlock()
	idx := map[string]int{}
	for i, s := range r.SKUs {
		idx[s.ID] = i
	}
	for _, o := range l.orders {
		sr := &r.SKUs[idx[o.sku]]
		sr.Admitted++
		switch {
		case o.paid:
			sr.Paid++
		case o.payRefused != "":
			sr.PayRefused++
		case !o.wantPay:
			sr.WalkedAway++
		}
	}
	for _, s := range r.SKUs {
		r.Orders.Admitted += s.Admitted
		r.Orders.Paid += s.Paid
		r.Orders.PayRefused += s.PayRefused
		r.Orders.WalkedAway += s.WalkedAway
	}
	r.Orders.PollTimeouts = l.pollTimeouts
	if n := l.retryOutcomes["410 SOLD_OUT"]; n > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d purchases retried with the same token after a 202 were answered 410 SOLD_OUT, not the same order:"+
			" a buyer whose first answer was lost would believe they got nothing (the API answers sold out from memory before it looks for a replay)", n))
	}
	r.Repeats = RepeatReport{Clickers: l.repeats, Retry: copyMap(l.retryOutcomes), Again: copyMap(l.againOutcomes)}
	r.Sessions.RepeatClickers = l.repeats
	for k := botForged; k < numKinds; k++ {
		b := &l.bots[k]
		r.Sessions.Bots += b.sessions
		r.Bots = append(r.Bots, BotReport{Kind: k.String(), Sessions: b.sessions, Admitted: len(b.admitted),
			Outcomes: copyMap(b.outcomes), Throttled: b.throttled, Unthrottled: b.unthrottled})
	}
	r.Sessions.Buyers = lt.st.sessions.Load() - r.Sessions.Bots
	if r.Queue != nil {
		r.fillQueue(lt)
	}
}

func copyMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b text
	r.textRun(&b)
	r.textSteps(&b)
	r.textOrders(&b)
	r.textQueue(&b)
	r.textSessions(&b)
	r.textKube(&b)
	r.textChecks(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// text is the report for people, section by section.
type text struct{ strings.Builder }

func (b *text) p(format string, a ...any) { fmt.Fprintf(b, format, a...) }

// textRun: the profile, what arrived, and the totals.
func (r *Report) textRun(b *text) {
	p := b.p
	p("==> Load test (%s) of %s\n", r.Profile, r.API)
	switch r.Profile {
	case Spike:
		p("    %d buyers arriving within %s (all released in %.2fs), %d bots; %.0f%% click again, %.0f%% pay; concurrency %d; seed %d; users %s*\n",
			r.Sessions.Buyers, secs(r.SpikeWindowSeconds), r.DispatchSeconds, r.Sessions.Bots, r.RepeatShare*100, r.PayShare*100, r.Concurrency, r.Seed, r.UserPrefix)
	default:
		p("    %.0f req/s for %s over %d users: %d buyer sessions, %d bots; %.0f%% click again, %.0f%% pay; concurrency %d; seed %d; users %s*\n",
			r.TargetRate, secs(r.DurationSeconds), r.Users, r.Sessions.Buyers, r.Sessions.Bots, r.RepeatShare*100, r.PayShare*100, r.Concurrency, r.Seed, r.UserPrefix)
	}
	p("\n==> %d requests in %.2fs: %.0f req/s, %d errors\n", r.Requests, r.ElapsedSeconds, r.RequestsPerSecond, r.Errors)
}

// textSteps: throughput and latency per step, then the outcomes per step.
func (r *Report) textSteps(b *text) {
	p := b.p
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "    step\trequests\treq/s\tp50\tp95\tp99\tmax\terrors\t")
	for _, s := range r.Steps {
		if s.Requests == 0 {
			continue
		}
		fmt.Fprintf(tw, "    %s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%d\t\n", s.Name, s.Requests, s.RequestsPerSecond,
			msText(s.Latency.P50), msText(s.Latency.P95), msText(s.Latency.P99), msText(s.Latency.Max), s.Errors)
	}
	_ = tw.Flush()
	p("\n    %-10s %-28s %9s\n", "step", "outcome", "count")
	for _, s := range r.Steps {
		for _, o := range s.Outcomes {
			mark := ""
			if o.Error {
				mark = "  (error)"
			}
			p("    %-10s %-28s %9d%s\n", s.Name, o.Outcome, o.Count, mark)
		}
	}
}

// textOrders: the run's orders, then the table of SKUs.
func (r *Report) textOrders(b *text) {
	p := b.p
	p("\n==> Orders: %d admitted, %d paid, %d walked away (left to expire), %d refused at payment, %d never durable while polled\n",
		r.Orders.Admitted, r.Orders.Paid, r.Orders.WalkedAway, r.Orders.PayRefused, r.Orders.PollTimeouts)
	if r.Orders.Expired != nil {
		p("    in MySQL: %d expired (cancelled), %d still awaiting payment, %d missing\n", *r.Orders.Expired, *r.Orders.AwaitingPay, *r.Orders.MissingMySQL)
	}
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "    SKU\tstock\tlimit\tleft before\tleft after\tadmitted\tpaid\tunpaid\tMySQL created/paid/cancelled\tsale in MySQL\t")
	for _, s := range r.SKUs {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t\n", s.ID, optInt(s.Stock), optLimit(s.PerUserLimit),
			optInt(s.RemainingBefore), optInt(s.RemainingAfter), s.Admitted, s.Paid, s.Admitted-s.Paid, countsText(s.MySQL), countsText(s.SaleMySQL))
	}
	_ = tw.Flush()
}

// textSessions: what repeat clickers and each kind of bot were answered.
func (r *Report) textSessions(b *text) {
	p := b.p
	p("\n==> Repeat clickers: %d\n", r.Repeats.Clickers)
	p("    same token again:  %s\n", mapText(r.Repeats.Retry))
	p("    fresh token again: %s\n", mapText(r.Repeats.Again))
	p("==> Bots\n")
	for _, bt := range r.Bots {
		extra := ""
		if bt.Kind == botHammer.String() && bt.Sessions > 0 {
			extra = fmt.Sprintf(" (%d of %d saw 429)", bt.Throttled, bt.Sessions)
		}
		p("    %-15s %5d sessions, %d admitted%s: %s\n", bt.Kind, bt.Sessions, bt.Admitted, extra, mapText(bt.Outcomes))
	}
}

// textKube: the FlashSale's phase, audit and per-SKU status, when read.
func (r *Report) textKube(b *text) {
	v := r.Kube
	if v == nil {
		return
	}
	p := b.p
	p("\n==> FlashSale %s: phase %s", r.SaleKey, v.Phase)
	if v.Audit != nil {
		p(", audit conserved=%t (initial %d, accounted %d, lost %d)", v.Audit.Conserved, v.Audit.Initial, v.Audit.Accounted, v.Audit.Lost)
	}
	p("\n")
	for _, s := range v.SKUs {
		p("    %-10s stock %d remaining %d sold %d paid %d cancelled %d\n", s.ID, s.Stock, s.Remaining, s.Sold, s.Paid, s.Cancelled)
	}
}

// textChecks: the notes, each check, and the verdict.
func (r *Report) textChecks(b *text) {
	p := b.p
	if len(r.Notes) > 0 {
		p("\n==> Notes\n")
		for _, n := range r.Notes {
			p("    - %s\n", n)
		}
	}
	p("\n==> Checks\n")
	for _, c := range r.Checks {
		p("    %-4s  %-26s %s\n", strings.ToUpper(c.Status), c.Name, c.Detail)
	}
	if failed := r.Failed(); len(failed) > 0 {
		p("\n==> INVARIANTS BROKEN: %s\n", strings.Join(failed, ", "))
	} else if len(r.Checks) > 0 {
		p("\n==> Invariants hold (%d checked, %d skipped)\n", len(r.Checks)-r.skipped(), r.skipped())
	}
}

func (r *Report) skipped() int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == Skip {
			n++
		}
	}
	return n
}

func secs(s float64) string { return time.Duration(s * float64(time.Second)).String() }

func msText(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

func optInt(v *int64) string {
	if v == nil {
		return "?"
	}
	return fmt.Sprint(*v)
}

func optLimit(v int32) string {
	if v == 0 {
		return "?"
	}
	return fmt.Sprint(v)
}

func countsText(c *MySQLCounts) string {
	if c == nil {
		return "-"
	}
	s := fmt.Sprintf("%d/%d/%d", c.Created, c.Paid, c.Cancelled)
	if c.Missing > 0 {
		s += fmt.Sprintf(" (%d MISSING)", c.Missing)
	}
	return s
}

func mapText(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
