package loadtest

import (
	"math"
	"math/bits"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// histogram records durations in log-linear buckets: exact below 64 ns,
// then 64 buckets per power of two (under 1.6% relative error), up to about
// 18 minutes. Recording is two atomic adds and a CAS for the maximum: no
// lock, no allocation.
type histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	sum    atomic.Int64
	max    atomic.Int64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	histMaxExp  = 40 // 2^40 ns ≈ 18 min
	histBuckets = (histMaxExp-histSubBits+1)*histSub + histSub
)

func bucketOf(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	if v >= 1<<histMaxExp {
		return histBuckets - 1
	}
	exp := bits.Len64(uint64(v)) - 1
	sub := int(v>>(exp-histSubBits)) & (histSub - 1)
	return (exp-histSubBits+1)*histSub + sub
}

// bucketHigh is the largest value that falls into bucket i.
func bucketHigh(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	exp := i/histSub + histSubBits - 1
	sub := int64(i % histSub)
	shift := exp - histSubBits
	return (histSub+sub)<<shift + (1 << shift) - 1
}

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// quantiles returns the given quantiles (0..1, ascending), each the upper
// bound of its bucket, capped at the exact maximum.
func (h *histogram) quantiles(qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	n := h.n.Load()
	if n == 0 {
		return out
	}
	mx := h.max.Load()
	var cum int64
	j := 0
	for i := range h.counts {
		cum += h.counts[i].Load()
		for j < len(qs) && float64(cum) >= math.Ceil(qs[j]*float64(n)) && cum > 0 {
			out[j] = time.Duration(min(bucketHigh(i), mx))
			j++
		}
		if j == len(qs) {
			break
		}
	}
	for ; j < len(qs); j++ {
		out[j] = time.Duration(mx)
	}
	return out
}

// outcome is an answer: the HTTP status and the error code of the body (or
// the order's status, for polls); status 0 is a transport error.
type outcome struct {
	status int
	code   string
}

func (o outcome) String() string {
	if o.status == 0 {
		return o.code
	}
	s := strconv.Itoa(o.status)
	if o.code != "" {
		s += " " + o.code
	}
	return s
}

// step is one kind of request: its latency and its outcomes.
type step struct {
	name string
	hist histogram

	mu       sync.Mutex
	outcomes map[outcome]int64
}

func newStep(name string) *step { return &step{name: name, outcomes: map[outcome]int64{}} }

func (s *step) observe(o outcome, d time.Duration) {
	s.hist.record(d)
	s.mu.Lock()
	s.outcomes[o]++
	s.mu.Unlock()
}

// Steps of a buyer's flow, and the bots' requests apart so that their cheap
// refusals do not flatter the buyers' latencies.
const (
	stepJoin     = "join" // the waiting room: POST …/queue
	stepWait     = "wait" // GET …/queue/{ticket}
	stepToken    = "token"
	stepPurchase = "purchase"
	stepPoll     = "poll"
	stepPay      = "pay"
	stepBot      = "bot"
)

var stepNames = []string{stepJoin, stepWait, stepToken, stepPurchase, stepPoll, stepPay, stepBot}

// stats are the live counters of a run.
type stats struct {
	steps    map[string]*step
	requests atomic.Int64
	admitted atomic.Int64
	soldOut  atomic.Int64
	errors   atomic.Int64
	sessions atomic.Int64
	inFlight atomic.Int64
	// A queued sale: buyers given a ticket, and admitted by the queue.
	joined        atomic.Int64
	queueAdmitted atomic.Int64
	// outstanding counts the admissions this run's buyers have seen and
	// not used yet (no purchase answered 202, 409 or 410): it lags the
	// queue's own count on both ends, so it is never above it.
	outstanding    atomic.Int64
	maxOutstanding atomic.Int64
}

// admittedSeen counts an admission a buyer saw, and the most outstanding.
func (s *stats) admittedSeen() {
	n := s.outstanding.Add(1)
	for {
		m := s.maxOutstanding.Load()
		if n <= m || s.maxOutstanding.CompareAndSwap(m, n) {
			return
		}
	}
}

func newStats() *stats {
	s := &stats{steps: map[string]*step{}}
	for _, n := range stepNames {
		s.steps[n] = newStep(n)
	}
	return s
}

// isError says whether an answer is an error rather than a refusal of the
// contract: transport failures, 5xx other than the contract's PAUSED and
// NOT_READY, and the answers to malformed or misdirected requests.
func isError(o outcome) bool {
	switch {
	case o.status == 0:
		return true
	case o.status >= 500:
		return o.code != "PAUSED" && o.code != "NOT_READY"
	}
	switch o.status {
	case 400, 401, 404, 405, 413:
		return true
	}
	return false
}

// sortedOutcomes lists a step's outcomes, most frequent first.
func (s *step) sortedOutcomes() []OutcomeCount {
	s.mu.Lock()
	out := make([]OutcomeCount, 0, len(s.outcomes))
	for o, n := range s.outcomes {
		out = append(out, OutcomeCount{Outcome: o.String(), Status: o.status, Code: o.code, Count: n, Error: isError(o)})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Outcome < out[j].Outcome
	})
	return out
}
