package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/access"
)

// run is one load test in progress.
type run struct {
	o           *Options
	c           *apiClient
	st          *stats
	l           *ledger
	tokenBodies [][]byte
	// A queued sale: its waiting room, and the queue figures sampled while
	// the load runs.
	qi      *queueInfo
	sampler *sampler
}

// Run sends the load, reports it and checks the invariants. The report is
// returned whenever the load ran (also when a check failed: see Report.OK);
// the error says why it could not run or was interrupted.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	if o.UserPrefix == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		o.UserPrefix = "lt-" + hex.EncodeToString(b[:]) + "-"
	}
	if longest := o.UserPrefix + "bot99999999b"; !access.ValidUserID(longest) {
		return nil, fmt.Errorf("user prefix %q makes user ids like %q that the API refuses (1-64 of letters, digits, '_', '.', ':', '@', '-')", o.UserPrefix, longest)
	}
	st := newStats()
	r := &run{o: &o, c: newClient(&o, st), st: st, l: newLedger()}
	defer r.c.close()
	for _, s := range o.SKUs {
		r.tokenBodies = append(r.tokenBodies, tokenBody(s.ID))
	}
	rep := newReport(&o, r.c.api)

	// Preflight: each SKU's stock, which also proves the URL and the sale.
	for i, s := range o.SKUs {
		pctx, cancel := context.WithTimeout(ctx, o.Timeout)
		rem, _, err := r.c.skuState(pctx, s.ID)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("preflight GET %s/skus/%s: %w", r.c.api, s.ID, err)
		}
		rep.SKUs[i].RemainingBefore = &rem
	}
	if err := r.detectQueue(ctx, rep); err != nil {
		return nil, err
	}
	notes(&o, rep)

	rep.Started = time.Now()
	stopProgress := r.progress(rep)
	stopSampling := func() {}
	if r.qi != nil {
		stopSampling = r.sampleQueue(ctx, min(o.ProgressEvery, 500*time.Millisecond))
	}
	r.load(ctx, rep)
	rep.ElapsedSeconds = time.Since(rep.Started).Seconds()
	stopSampling()
	stopProgress()

	for i, s := range o.SKUs {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.Timeout)
		if rem, soldOut, err := r.c.skuState(pctx, s.ID); err == nil {
			rep.SKUs[i].RemainingAfter, rep.SKUs[i].SoldOut = &rem, soldOut
		}
		cancel()
	}
	rep.fill(r)
	switch {
	case o.Profile == Sustained && rep.RequestsPerSecond < 0.9*o.Rate:
		rep.Notes = append(rep.Notes, fmt.Sprintf("the target of %.0f req/s was not reached (%.0f req/s): the API, or --concurrency %d, is the limit",
			o.Rate, rep.RequestsPerSecond, o.Concurrency))
	case o.Profile == Spike && rep.DispatchSeconds > 1.25*o.SpikeWindow.Seconds()+0.1:
		rep.Notes = append(rep.Notes, fmt.Sprintf("the spike stretched from %s to %.2fs: every virtual buyer was busy (raise --concurrency, now %d)",
			o.SpikeWindow, rep.DispatchSeconds, o.Concurrency))
	}
	if err := ctx.Err(); err != nil {
		rep.Notes = append(rep.Notes, "interrupted: the load stopped early and the checks did not run")
		return rep, err
	}
	Verify(ctx, rep, o)
	return rep, nil
}

// load releases the sessions and waits until every session has ended. The
// sessions run on Concurrency virtual buyers, except a queued sale's spike:
// there a buyer spends most of the session waiting for admission, holding
// no request, and thousands wait at once, so every arrival runs at once and
// Concurrency bounds the requests in flight instead (apiClient.slots).
func (r *run) load(ctx context.Context, rep *Report) {
	o := r.o
	var wg sync.WaitGroup
	run := func(s session) {
		r.st.sessions.Add(1)
		r.runSession(ctx, s)
	}
	sessions := make(chan session, o.Concurrency)
	if r.direct() {
		// The dispatcher counts in wg itself, so wg.Wait cannot pass before
		// it has started the last session.
		wg.Go(func() {
			for s := range sessions {
				wg.Go(func() { run(s) })
			}
		})
	} else {
		for range o.Concurrency {
			wg.Go(func() {
				for s := range sessions {
					run(s)
				}
			})
		}
	}
	p := newPlanner(o)
	start := time.Now()
	switch o.Profile {
	case Spike:
		r.spike(ctx, p, sessions, start)
	case Sustained:
		end := time.NewTimer(o.Duration)
	sustained:
		for {
			s, _ := p.next()
			select {
			case sessions <- s:
			case <-end.C:
				break sustained
			case <-ctx.Done():
				break sustained
			}
		}
		end.Stop()
	}
	rep.DispatchSeconds = time.Since(start).Seconds()
	close(sessions)
	wg.Wait()
}

// direct says whether every session runs at once (a queued sale's spike).
func (r *run) direct() bool { return r.o.queued && r.o.Profile == Spike }

// spike releases session k at k/n of the window; when every virtual buyer
// is busy, arrivals wait (and the report shows the spike stretched).
func (r *run) spike(ctx context.Context, p *planner, sessions chan<- session, start time.Time) {
	n := p.total()
	for k := 0; ; k++ {
		s, ok := p.next()
		if !ok {
			return
		}
		at := start.Add(time.Duration(int64(r.o.SpikeWindow) * int64(k) / int64(max(n, 1))))
		if d := time.Until(at); d > time.Millisecond {
			if sleep(ctx, d) != nil {
				return
			}
		}
		select {
		case sessions <- s:
		case <-ctx.Done():
			return
		}
	}
}

// progress prints a line every ProgressEvery until the returned func is called.
func (r *run) progress(rep *Report) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	every := r.o.ProgressEvery
	w := r.o.Progress
	if w == nil {
		w = io.Discard
	}
	tick := func(last *int64, lastAt *time.Time) {
		now := time.Now()
		req := r.st.requests.Load()
		rate := float64(req-*last) / now.Sub(*lastAt).Seconds()
		*last, *lastAt = req, now
		t := Tick{Seconds: now.Sub(rep.Started).Seconds(), RequestsPerSecond: rate, Requests: req,
			Admitted: r.st.admitted.Load(), SoldOut: r.st.soldOut.Load(), Errors: r.st.errors.Load(), InFlight: r.st.inFlight.Load()}
		rep.Timeline = append(rep.Timeline, t)
		queue := ""
		if r.o.queued {
			t.Joined, t.QueueAdmitted = r.st.joined.Load(), r.st.queueAdmitted.Load()
			queue = fmt.Sprintf("  queue: joined %d admitted %d", t.Joined, t.QueueAdmitted)
		}
		fmt.Fprintf(w, "[%6.1fs] %8.0f req/s  requests %-8d admitted %-7d sold-out %-8d errors %-6d in flight %d%s\n",
			t.Seconds, t.RequestsPerSecond, t.Requests, t.Admitted, t.SoldOut, t.Errors, t.InFlight, queue)
	}
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		last, lastAt := int64(0), rep.Started
		for {
			select {
			case <-done:
				tick(&last, &lastAt)
				return
			case <-t.C:
				tick(&last, &lastAt)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
