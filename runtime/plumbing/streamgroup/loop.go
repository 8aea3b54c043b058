package streamgroup

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
)

// DefaultGrace is how long a Loop goes on with the batch in hand after its
// context ended, unless told otherwise; a pod gets 30s after SIGTERM by
// default.
const DefaultGrace = 15 * time.Second

// Ack acknowledges and deletes ids and appends dead to the dead-letter
// stream, in one MULTI (see Done), retrying with backoff until it succeeds or
// the handler's context ends; then it returns the last error.
type Ack func(ids []string, dead []DeadEntry) error

// Handler hands the entries of one batch on (to Kafka, to MySQL) and calls
// ack for those whose hand-off succeeded and those it gives up on (dead), as
// often as it likes: only after the hand-off, never before. It sees only
// entries with a body; the loop acknowledges entries deleted while pending
// with the first ack (or after Handler returns nil).
//
// ctx lives on for the loop's Grace after the loop's own context ended, so
// the batch in hand can be finished. When ctx ends, Handler returns an error
// and the entries it did not acknowledge stay pending in the group: this
// consumer reads them again when it restarts under the same name, another
// claims them once they are MinIdle old. Nothing is lost; an entry handed on
// but not acknowledged is handed on again, a duplicate the sinks absorb.
type Handler func(ctx context.Context, msgs []redis.XMessage, ack Ack) error

// Loop reads one stream as one consumer of a group (Reader: its own pending
// entries first, then a dead consumer's idle ones, then new ones), backs off
// while Redis fails, and gives every batch to Handle until its context ends.
type Loop struct {
	Reader Reader
	// DeadLetters is the stream that Ack appends dead entries to.
	DeadLetters string
	Handle      Handler
	// Backoff between failed reads and failed acknowledgements (default backoff.Default).
	Backoff backoff.Backoff
	// Grace bounds finishing the batch in hand after the context ended (default DefaultGrace).
	Grace time.Duration
	// RedisErrors, when set, counts failed reads and acknowledgements.
	RedisErrors prometheus.Counter
	Logger      *slog.Logger
}

// Run reads and hands on batches until ctx ends, then finishes the batch in
// hand within Grace and returns.
func (l *Loop) Run(ctx context.Context) {
	if l.Backoff.Min <= 0 {
		l.Backoff = backoff.Default
	}
	if l.Grace <= 0 {
		l.Grace = DefaultGrace
	}
	if l.Logger == nil {
		l.Logger = slog.New(slog.DiscardHandler)
	}
	finish, cancel := graceful(ctx, l.Grace)
	defer cancel()
	defer l.Reader.Close()
	var held heldLog
	for try := 1; ctx.Err() == nil; {
		msgs, err := l.Reader.Next(ctx)
		if behind, ok := errors.AsType[*ReplicasBehind](err); ok {
			held.short(l.Logger, behind) // Next waited (WAIT); go on waiting
			continue
		}
		held.done(l.Logger, err, len(msgs))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.redisFailed()
			l.Logger.Warn("Reading the order stream failed; retrying", "err", err)
			_ = l.Backoff.Sleep(ctx, try)
			try++
			continue
		}
		try = 1
		if len(msgs) == 0 {
			continue
		}
		if err := l.handle(finish, msgs); err != nil {
			l.Logger.Warn("Batch left pending in Redis", "entries", len(msgs), "err", err)
		}
	}
}

// handle gives the entries with a body to Handle, and acknowledges the
// entries without one (deleted while pending) with them.
func (l *Loop) handle(ctx context.Context, msgs []redis.XMessage) error {
	live := make([]redis.XMessage, 0, len(msgs))
	var gone []string
	for _, m := range msgs {
		if m.Values == nil {
			gone = append(gone, m.ID)
			continue
		}
		live = append(live, m)
	}
	ack := func(ids []string, dead []DeadEntry) error {
		if len(gone) > 0 {
			ids = append(gone[:len(gone):len(gone)], ids...)
		}
		if err := l.ack(ctx, ids, dead); err != nil {
			return err
		}
		gone = nil
		return nil
	}
	if len(live) > 0 {
		if err := l.Handle(ctx, live, ack); err != nil {
			return err
		}
	}
	if len(gone) > 0 {
		return ack(nil, nil)
	}
	return nil
}

// ack is Done, retried with backoff while ctx lives.
func (l *Loop) ack(ctx context.Context, ids []string, dead []DeadEntry) error {
	r := &l.Reader
	for try := 1; ; try++ {
		err := Done(ctx, r.RDB, r.Stream, r.Group, l.DeadLetters, ids, dead)
		if err == nil {
			return nil
		}
		// Not acknowledged means handed on again later: a duplicate, which
		// the sinks absorb. Still try hard to avoid it.
		l.redisFailed()
		l.Logger.Warn("Acknowledging entries failed; retrying", "entries", len(ids), "dead", len(dead), "attempt", try, "err", err)
		if serr := l.Backoff.Sleep(ctx, try); serr != nil {
			return err
		}
	}
}

func (l *Loop) redisFailed() {
	if l.RedisErrors != nil {
		l.RedisErrors.Inc()
	}
}

// graceful returns a context that ends d after parent ends.
func graceful(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(d, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
}

// heldLog logs a streak of entries held back for their replicas: when it
// starts, every 10 s while it lasts, and when it ends.
type heldLog struct {
	since, last time.Time
	waits       int
}

func (h *heldLog) short(log *slog.Logger, e *ReplicasBehind) {
	now := time.Now()
	h.waits++
	if h.since.IsZero() {
		h.since = now
	}
	if now.Sub(h.last) < 10*time.Second {
		return
	}
	h.last = now
	log.Warn("Holding orders back until the replicas have them (a replica is missing or lagging); they stay pending in Redis",
		"entries", e.Held, "acknowledged", e.Acked, "want", e.Want, "waits", h.waits, "for", now.Sub(h.since).Round(time.Millisecond))
}

func (h *heldLog) done(log *slog.Logger, err error, n int) {
	if h.since.IsZero() {
		return
	}
	if err == nil {
		log.Info("Replicas caught up; handing on the orders held back", "entries", n, "waits", h.waits,
			"after", time.Since(h.since).Round(time.Millisecond))
	}
	*h = heldLog{}
}
