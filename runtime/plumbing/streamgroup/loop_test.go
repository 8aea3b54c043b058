package streamgroup_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const group = "relay"

// stream is one test's stream and dead-letter stream on the shared Redis.
type stream struct {
	t        *testing.T
	rdb      redis.UniversalClient
	key, dlq string
}

func newStream(t *testing.T, rdb redis.UniversalClient) *stream {
	t.Helper()
	ns := testutil.UniqueName(t)
	testutil.CleanupKeys(t, rdb, "*"+ns+"/*")
	return &stream{t: t, rdb: rdb, key: "{" + ns + "/s}:stream", dlq: "{" + ns + "/s}:dlq"}
}

// add appends n entries and returns their ids.
func (s *stream) add(n int) []string {
	s.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		id, err := s.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: s.key, Values: []any{"n", i}}).Result()
		if err != nil {
			s.t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

// readAs delivers up to n new entries to consumer, which then holds them pending.
func (s *stream) readAs(consumer string, n int64) []string {
	s.t.Helper()
	ctx := context.Background()
	if err := streamgroup.EnsureGroup(ctx, s.rdb, s.key, group); err != nil {
		s.t.Fatal(err)
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{s.key, ">"}, Count: n, Block: -1,
	}).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	var ids []string
	for _, m := range res[0].Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

// left is the stream's length and its group's pending count.
func (s *stream) left() (length, pending int64) {
	s.t.Helper()
	ctx := context.Background()
	length, err := s.rdb.XLen(ctx, s.key).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	p, err := s.rdb.XPending(ctx, s.key, group).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	return length, p.Count
}

// proxied returns a client of the stream's Redis through a TCP proxy that
// the test can cut; it does not retry a failed command itself.
func (s *stream) proxied() (*testutil.Proxy, *redis.Client) {
	s.t.Helper()
	proxy := testutil.TCPProxy(s.t, s.rdb.(*redis.Client).Options().Addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	s.t.Cleanup(func() { _ = rdb.Close() })
	return proxy, rdb
}

func (s *stream) loop(consumer string, h streamgroup.Handler) *streamgroup.Loop {
	return &streamgroup.Loop{
		Reader:      streamgroup.Reader{RDB: s.rdb, Stream: s.key, Group: group, Consumer: consumer, Block: 100 * time.Millisecond},
		DeadLetters: s.dlq, Handle: h, Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond},
	}
}

// start runs l until the test ends or the returned stop is called; stop
// returns how long Run took to return after its context ended.
func start(t *testing.T, l *streamgroup.Loop) (stop func() time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			at := time.Now()
			cancel()
			select {
			case <-done:
				took = time.Since(at)
			case <-time.After(30 * time.Second):
				t.Fatal("loop did not stop within 30s")
			}
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return stop
}

func idsOf(msgs []redis.XMessage) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// seen records the entries a handler got, in order.
type seen struct {
	mu  sync.Mutex
	ids []string
}

func (s *seen) add(msgs []redis.XMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.ids = append(s.ids, m.ID)
	}
}

// ackAll is a handler that records and acknowledges every entry.
func (s *seen) ackAll(_ context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
	s.add(msgs)
	return ack(idsOf(msgs), nil)
}

func (s *seen) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// count is the value of counter c.
func count(c prometheus.Counter) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, _ := reg.Gather()
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}

// TestLoopHandsOnEveryEntryOnce runs the loop over a backlog and entries
// added while it runs, in batches of 7: each entry reaches the handler
// exactly once, in stream order; the acknowledged entries leave the stream,
// and the entry the handler gives up on is in the dead-letter stream with its
// reason and fields.
func TestLoopHandsOnEveryEntryOnce(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	want := s.add(30)
	poison := want[11]
	var got seen
	l := s.loop("a", func(_ context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
		got.add(msgs)
		var ids []string
		var dead []streamgroup.DeadEntry
		for _, m := range msgs {
			if m.ID == poison {
				dead = append(dead, streamgroup.DeadEntry{Msg: m, Reason: "not an order", Attempts: 2})
				continue
			}
			ids = append(ids, m.ID)
		}
		return ack(ids, dead)
	})
	l.Reader.Count = 7
	start(t, l)
	want = append(want, s.add(20)...)
	testutil.Eventually(t, 10*time.Second, "50 entries handed on", func() bool { return len(got.get()) >= 50 })
	testutil.Eventually(t, 5*time.Second, "stream empty", func() bool { n, p := s.left(); return n == 0 && p == 0 })
	if ids := got.get(); !slices.Equal(ids, want) {
		t.Fatalf("handed on %d entries %v, want each of %d once in order", len(ids), ids, len(want))
	}
	dl, err := s.rdb.XRange(context.Background(), s.dlq, "-", "+").Result()
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %v (%v), want 1", dl, err)
	}
	v := dl[0].Values
	if v["source-id"] != poison || v["error"] != "not an order" || v["attempts"] != "2" || v["f:n"] != "11" {
		t.Fatalf("dead letter %v", v)
	}
}

// TestLoopResumesItsOwnPendingEntries restarts a consumer that died holding
// entries: under the same name it hands them on first, before any new
// entry; one whose body was deleted meanwhile is acknowledged without
// reaching the handler (which would fail on an entry without fields).
func TestLoopResumesItsOwnPendingEntries(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	held := s.add(5)
	s.readAs("a", 5)
	if err := s.rdb.XDel(context.Background(), s.key, held[2]).Err(); err != nil {
		t.Fatal(err)
	}
	later := s.add(3)
	var got seen
	l := s.loop("a", got.ackAll)
	start(t, l)
	testutil.Eventually(t, 10*time.Second, "stream empty", func() bool { n, p := s.left(); return n == 0 && p == 0 })
	want := append(slices.Delete(slices.Clone(held), 2, 3), later...)
	if ids := got.get(); !slices.Equal(ids, want) {
		t.Fatalf("handed on %v, want %v (the deleted %s acknowledged without reaching the handler)", ids, want, held[2])
	}
}

// TestLoopClaimsDeadConsumersEntries leaves entries pending with a consumer
// that never comes back: the loop takes them over once they have been idle
// for MinIdle, not before, and hands them on.
func TestLoopClaimsDeadConsumersEntries(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	s.add(10)
	dead := s.readAs("dead-pod", 10)
	readAt := time.Now()
	var got seen
	var firstAt time.Time
	var mu sync.Mutex
	l := s.loop("b", func(ctx context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
		mu.Lock()
		if firstAt.IsZero() {
			firstAt = time.Now()
		}
		mu.Unlock()
		return got.ackAll(ctx, msgs, ack)
	})
	l.Reader.MinIdle = 400 * time.Millisecond
	l.Reader.ClaimInterval = 50 * time.Millisecond
	stop := start(t, l)
	testutil.Eventually(t, 10*time.Second, "dead consumer's entries handed on", func() bool { return len(got.get()) == 10 })
	testutil.Eventually(t, 5*time.Second, "stream empty", func() bool { n, p := s.left(); return n == 0 && p == 0 })
	stop()
	if ids := got.get(); !slices.Equal(ids, dead) {
		t.Fatalf("handed on %v, want %v", ids, dead)
	}
	if idle := firstAt.Sub(readAt); idle < 350*time.Millisecond {
		t.Fatalf("claimed after %v, before MinIdle (400ms)", idle)
	}
	if l.Reader.Claimed != 10 {
		t.Fatalf("Claimed = %d, want 10", l.Reader.Claimed)
	}
}

// TestLoopRetriesAFailingAck cuts Redis away just after the hand-off: the
// acknowledgement fails, is retried with backoff, and succeeds once Redis is
// back; the entries are not handed on a second time, and the failures are
// counted.
func TestLoopRetriesAFailingAck(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	proxy, rdb := s.proxied()
	want := s.add(5)
	var got seen
	cut := make(chan struct{})
	ackErr := make(chan error, 1)
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "redis_errors"})
	l := s.loop("a", func(_ context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
		got.add(msgs)
		proxy.Cut()
		close(cut)
		err := ack(idsOf(msgs), nil)
		ackErr <- err
		return err
	})
	l.Reader.RDB = rdb
	l.RedisErrors = failures
	start(t, l)
	<-cut
	testutil.Eventually(t, 5*time.Second, "failed acknowledgements", func() bool { return count(failures) >= 2 })
	if n, p := s.left(); n != 5 || p != 5 {
		t.Fatalf("while Redis is away: %d entries, %d pending; want 5, 5", n, p)
	}
	proxy.Restore()
	select {
	case err := <-ackErr:
		if err != nil {
			t.Fatalf("ack after Redis came back: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ack did not succeed within 10s of Redis coming back")
	}
	if n, p := s.left(); n != 0 || p != 0 {
		t.Fatalf("after the ack: %d entries, %d pending; want none", n, p)
	}
	time.Sleep(300 * time.Millisecond)
	if ids := got.get(); !slices.Equal(ids, want) {
		t.Fatalf("handed on %v, want %v once", ids, want)
	}
}

// TestLoopSurvivesRedisOutage cuts Redis away while the loop waits for
// entries: reads fail and are counted, and once Redis is back the loop
// resumes by itself and hands on what was added meanwhile.
func TestLoopSurvivesRedisOutage(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	proxy, rdb := s.proxied()
	var got seen
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "redis_errors"})
	l := s.loop("a", got.ackAll)
	l.Reader.RDB = rdb
	l.RedisErrors = failures
	first := s.add(1)
	start(t, l)
	testutil.Eventually(t, 5*time.Second, "first entry", func() bool { return len(got.get()) == 1 })
	proxy.Cut()
	testutil.Eventually(t, 5*time.Second, "failed reads", func() bool { return count(failures) >= 2 })
	more := s.add(4)
	proxy.Restore()
	testutil.Eventually(t, 10*time.Second, "entries added during the outage", func() bool { return len(got.get()) == 5 })
	if ids := got.get(); !slices.Equal(ids, append(first, more...)) {
		t.Fatalf("handed on %v", ids)
	}
}

// TestLoopStopsWithinItsGrace stops a loop whose handler cannot finish (its
// sink is down): Run gives the batch its grace, returns soon after, and the
// batch stays pending, so another consumer claims and hands it on; nothing
// is lost.
func TestLoopStopsWithinItsGrace(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	want := s.add(5)
	inHand := make(chan struct{})
	var once sync.Once
	l := s.loop("a", func(ctx context.Context, _ []redis.XMessage, _ streamgroup.Ack) error {
		once.Do(func() { close(inHand) })
		<-ctx.Done() // the sink never answers
		return fmt.Errorf("sink down: %w", ctx.Err())
	})
	const grace = 300 * time.Millisecond
	l.Grace = grace
	stop := start(t, l)
	<-inHand
	took := stop()
	if took < grace-50*time.Millisecond || took > grace+2*time.Second {
		t.Fatalf("Run returned %v after its context ended, want about the grace (%v)", took, grace)
	}
	if n, p := s.left(); n != 5 || p != 5 {
		t.Fatalf("after the stop: %d entries, %d pending; want the 5 still pending", n, p)
	}

	var got seen
	next := s.loop("b", got.ackAll)
	next.Reader.MinIdle = 100 * time.Millisecond
	next.Reader.ClaimInterval = 50 * time.Millisecond
	start(t, next)
	testutil.Eventually(t, 10*time.Second, "stream empty", func() bool { n, p := s.left(); return n == 0 && p == 0 })
	if ids := got.get(); !slices.Equal(ids, want) {
		t.Fatalf("next consumer handed on %v, want %v", ids, want)
	}
}

// TestLoopFinishesTheBatchInHand stops a loop while its handler is busy:
// the handler's context stays alive, so the batch is handed on and
// acknowledged, and Run returns right after that, well within the grace.
func TestLoopFinishesTheBatchInHand(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	s.add(5)
	inHand := make(chan struct{})
	stopped := make(chan struct{})
	var ackErr, ctxErr error
	l := s.loop("a", func(ctx context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
		close(inHand)
		<-stopped
		time.Sleep(100 * time.Millisecond) // still writing
		ctxErr = ctx.Err()
		ackErr = ack(idsOf(msgs), nil)
		return ackErr
	})
	l.Grace = 10 * time.Second
	stop := start(t, l)
	<-inHand
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(stopped)
	}()
	took := stop()
	if ctxErr != nil || ackErr != nil {
		t.Fatalf("handler context: %v, ack: %v; want both nil within the grace", ctxErr, ackErr)
	}
	if took > 3*time.Second {
		t.Fatalf("Run took %v to return after the batch was done", took)
	}
	if n, p := s.left(); n != 0 || p != 0 {
		t.Fatalf("after the stop: %d entries, %d pending; want none", n, p)
	}
}

// TestLoopAcksWhatTheHandlerAcked stops a loop whose handler acknowledged
// half of its batch and then failed: the acknowledged half is gone, the rest
// stays pending.
func TestLoopAcksWhatTheHandlerAcked(t *testing.T) {
	t.Parallel()
	s := newStream(t, testutil.Redis(t))
	ids := s.add(6)
	done := make(chan struct{})
	var once sync.Once
	l := s.loop("a", func(ctx context.Context, msgs []redis.XMessage, ack streamgroup.Ack) error {
		if err := ack([]string{msgs[0].ID, msgs[1].ID, msgs[2].ID}, nil); err != nil {
			return err
		}
		once.Do(func() { close(done) })
		<-ctx.Done()
		return errors.New("the rest was not taken")
	})
	l.Grace = 50 * time.Millisecond
	stop := start(t, l)
	<-done
	stop()
	left, err := s.rdb.XRange(context.Background(), s.key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range left {
		got = append(got, m.ID)
	}
	if !slices.Equal(got, ids[3:]) {
		t.Fatalf("stream holds %v, want the unacknowledged %v", got, ids[3:])
	}
	if _, p := s.left(); p != 3 {
		t.Fatalf("%d pending, want 3", p)
	}
}
