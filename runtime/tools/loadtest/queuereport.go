package loadtest

import (
	"fmt"
	"slices"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// QueueReport is the waiting room's part of a run (a queued sale).
type QueueReport struct {
	// Source is where the run learnt of the waiting room: the sale-level
	// endpoint, or spec.queue.
	Source         string     `json:"source"`
	OpensAt        *time.Time `json:"opensAt,omitempty"`
	AdmitPerSecond float64    `json:"admitPerSecond"`
	// Overbook and AdmissionTTLSeconds are 0 when unknown (no manifest, no FlashSale).
	Overbook            float64 `json:"overbook,omitempty"`
	AdmissionTTLSeconds float64 `json:"admissionTTLSeconds,omitempty"`

	// This run's buyers: given a ticket, joined again, admitted, told
	// SOLD_OUT or ENDED by the queue (at join or while waiting), and still
	// waiting when they gave up (QueueTimeout).
	Joined         int64            `json:"joined"`
	Rejoins        int64            `json:"rejoins"`
	Admitted       int64            `json:"admitted"`
	ToldSoldOut    int64            `json:"toldSoldOut"`
	ToldEnded      int64            `json:"toldEnded"`
	GaveUp         int64            `json:"gaveUp"`
	JoinRefused    map[string]int64 `json:"joinRefused,omitempty"`
	WaitEnds       map[string]int64 `json:"waitEnds"`
	AfterAdmission map[string]int64 `json:"afterAdmission"`
	Probes         map[string]int64 `json:"probes,omitempty"`
	// Join → admission as the buyers saw it (their polls, at the
	// pollAfterSeconds the queue asks for, are its resolution).
	WaitP50Seconds float64 `json:"waitP50Seconds"`
	WaitP99Seconds float64 `json:"waitP99Seconds"`
	WaitMaxSeconds float64 `json:"waitMaxSeconds"`

	// MaxOutstanding is the most admissions outstanding at once: the
	// larger of the seckill gauges' samples and what this run's buyers saw
	// (MaxOutstandingSeen, a lower bound of the queue's own count).
	MaxOutstanding     int64 `json:"maxOutstanding"`
	MaxOutstandingSeen int64 `json:"maxOutstandingSeen"`
	// Figures are the seckill gauges' last sample (Samples taken while the
	// load ran); Status the FlashSale's status.queue, when read.
	Figures     *QueueFigures `json:"figures,omitempty"`
	Samples     int           `json:"samples"`
	SampleError string        `json:"sampleError,omitempty"`
	Status      *QueueFigures `json:"status,omitempty"`
}

// fillQueue copies the waiting room's tallies into the report (ledger locked).
func (r *Report) fillQueue(lt *run) {
	q, l := r.Queue, lt.l.q
	q.Joined, q.Rejoins = l.joined, l.rejoins
	q.Admitted = l.ends[waitAdmitted]
	q.ToldSoldOut = l.ends["410 SOLD_OUT"] + l.joinRefused["410 SOLD_OUT"]
	q.ToldEnded = l.ends["410 ENDED"] + l.joinRefused["410 ENDED"]
	q.GaveUp = l.ends[waitGaveUp]
	q.JoinRefused, q.WaitEnds = copyMap(l.joinRefused), copyMap(l.ends)
	q.AfterAdmission, q.Probes = copyMap(l.afterAdmission), copyMap(l.probes)
	if n := len(l.waits); n > 0 {
		w := slices.Clone(l.waits)
		slices.Sort(w)
		at := func(p float64) float64 { return w[min(int(p*float64(n)), n-1)].Seconds() }
		q.WaitP50Seconds, q.WaitP99Seconds, q.WaitMaxSeconds = at(0.5), at(0.99), w[n-1].Seconds()
	}
	if q.GaveUp > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d buyers were still waiting for admission when they gave up (after %s): the queue neither admitted them nor said SOLD_OUT."+
			" When units come back after a sell-out (cancelled orders), the next places in line may belong to buyers who already left;"+
			" an admission refused for one SKU while another is on sale counts as outstanding for a 15 s grace, one never used until admissionTTL", q.GaveUp, lt.o.QueueTimeout))
	}
	var left int64
	for _, sk := range r.SKUs {
		if sk.RemainingAfter != nil {
			left += *sk.RemainingAfter
		}
	}
	if q.ToldEnded > 0 && left > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d buyers waited until the sale ended while %d units were left: outstanding admissions fill the budget"+
			" (remaining x overbook) until they are used, lapse (admissionTTL %s), or end 15 s after a refusal for one SKU"+
			" (410 SOLD_OUT at /token: %d); units that come back late (cancelled orders) reopen admission only as that budget frees",
			q.ToldEnded, left, secs(q.AdmissionTTLSeconds), q.AfterAdmission["token 410 SOLD_OUT"]))
	}
	q.MaxOutstandingSeen = lt.st.maxOutstanding.Load()
	q.MaxOutstanding = q.MaxOutstandingSeen
	if s := lt.sampler; s != nil {
		s.mu.Lock()
		if s.samples > 0 {
			f := s.last
			q.Figures = &f
			q.MaxOutstanding = max(q.MaxOutstanding, s.maxOutstanding)
		}
		q.Samples = s.samples
		if s.lastErr != nil && s.samples == 0 {
			q.SampleError = s.lastErr.Error()
		}
		s.mu.Unlock()
	}
}

// setStatus records the FlashSale's status.queue.
func (q *QueueReport) setStatus(st *v1alpha1.QueueStatus) {
	if st == nil {
		return
	}
	q.Status = &QueueFigures{Joined: st.Joined, Waiting: st.Waiting, Admitted: st.Admitted, Outstanding: st.Outstanding}
	q.MaxOutstanding = max(q.MaxOutstanding, st.Outstanding)
}

// textQueue: the waiting room's figures.
func (r *Report) textQueue(b *text) {
	q := r.Queue
	if q == nil {
		return
	}
	p := b.p
	p("\n==> Waiting room (%s): admitPerSecond %.0f", q.Source, q.AdmitPerSecond)
	if q.Overbook > 0 {
		p(", overbook %g, admissionTTL %s", q.Overbook, secs(q.AdmissionTTLSeconds))
	}
	if q.OpensAt != nil {
		p(", opens %s", q.OpensAt.UTC().Format(time.RFC3339))
	}
	p("\n")
	p("    joined %d, admitted %d, told SOLD_OUT %d, told ENDED %d, still waiting when they gave up %d (buyers of this run)\n",
		q.Joined, q.Admitted, q.ToldSoldOut, q.ToldEnded, q.GaveUp)
	if q.Admitted > 0 {
		p("    join → admission (as the buyers saw it): p50 %s  p99 %s  max %s\n",
			secsText(q.WaitP50Seconds), secsText(q.WaitP99Seconds), secsText(q.WaitMaxSeconds))
	}
	p("    max outstanding %d (seen by the buyers %d", q.MaxOutstanding, q.MaxOutstandingSeen)
	if q.Samples > 0 {
		p(", seckill gauges over %d samples", q.Samples)
	}
	p(")\n")
	if f := q.Figures; f != nil {
		p("    at the end of the load (seckill gauges): admitted %d, waiting %d, outstanding %d\n", f.Admitted, f.Waiting, f.Outstanding)
	} else if q.SampleError != "" {
		p("    no seckill gauges: %s\n", q.SampleError)
	}
	if s := q.Status; s != nil {
		p("    FlashSale status.queue: joined %d, waiting %d, admitted %d, outstanding %d\n", s.Joined, s.Waiting, s.Admitted, s.Outstanding)
	}
	p("    waits ended: %s\n", mapText(q.WaitEnds))
	if len(q.JoinRefused) > 0 {
		p("    joins refused: %s\n", mapText(q.JoinRefused))
	}
	p("    after admission: %s\n", mapText(q.AfterAdmission))
	if len(q.Probes) > 0 {
		p("    token before admission (probes): %s\n", mapText(q.Probes))
	}
}

func secsText(s float64) string { return fmt.Sprintf("%.2fs", s) }
