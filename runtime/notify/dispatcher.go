package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// Defaults of a Dispatcher.
const (
	DefaultWorkers   = 4
	DefaultTimeout   = 5 * time.Second
	DefaultBaseDelay = time.Second
	DefaultMaxDelay  = 5 * time.Minute
	// DefaultForgetAfter is how long a delivery is remembered without being
	// enqueued again: a delivered one for the reconciler to see, a pending
	// one no longer asked for (its sale deleted, its webhook taken out of
	// the spec) until it is dropped. The reconciler enqueues what waits in
	// an outbox at least every 15 s; forgetting too early costs at most a
	// repeat with the same id.
	DefaultForgetAfter = 10 * time.Minute
)

// Target is one webhook endpoint.
type Target struct {
	// Name identifies the endpoint (spec.notifications.webhooks[].name).
	Name string
	URL  string
	// Secret is the value of the webhook's Secret key: see Sign.
	Secret []byte
}

// Delivery is one event for one endpoint of one sale.
type Delivery struct {
	// Sale is the sale's key, namespace/name.
	Sale   string
	Event  Event
	Target Target
}

// Attempt is the outcome of one HTTP POST, given to Options.OnAttempt.
type Attempt struct {
	Sale, Webhook, EventID string
	// Err is nil when the endpoint answered 2xx.
	Err error
}

// Failure is an endpoint whose latest attempts failed, for the sale's condition.
type Failure struct {
	Webhook string
	// Attempts is the number of attempts that failed in a row.
	Attempts int
	// Since is when the first of them failed.
	Since     time.Time
	LastError string
}

// Options configure a Dispatcher; zero values take the defaults.
type Options struct {
	Workers int
	// Timeout bounds one POST, response included.
	Timeout time.Duration
	// BaseDelay and MaxDelay bound the exponential backoff between the
	// attempts of one delivery: BaseDelay, twice that, ... up to MaxDelay.
	BaseDelay, MaxDelay time.Duration
	ForgetAfter         time.Duration
	// Client sends the POSTs; it must not follow redirects (a 3xx is a
	// failure: a POST redirected becomes a GET). Default: one with Timeout.
	Client *http.Client
	// OnAttempt is told of every attempt once it is done (metrics, and a
	// nudge to the reconciler). It must not block.
	OnAttempt func(Attempt)
}

type itemKey struct{ sale, webhook, id string }

type entry struct {
	d         Delivery
	body      []byte
	delivered bool
	// touched is the last Enqueue of the delivery, or its completion.
	touched time.Time
}

type endpointKey struct{ sale, webhook string }

// Dispatcher delivers events to webhooks at least once. Enqueue returns at
// once; workers POST each delivery and retry a failed one with an
// exponential backoff per delivery, for as long as it is enqueued again
// within ForgetAfter. What is delivered is kept in memory only: the caller
// keeps the events until Delivered reports them, so a restart sends again
// what was not confirmed, with the same id.
type Dispatcher struct {
	o     Options
	queue workqueue.TypedRateLimitingInterface[itemKey]

	mu       sync.Mutex
	items    map[itemKey]*entry
	failures map[endpointKey]*Failure
}

// NewDispatcher returns a Dispatcher; Start runs its workers.
func NewDispatcher(o Options) *Dispatcher {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = DefaultBaseDelay
	}
	if o.MaxDelay < o.BaseDelay {
		o.MaxDelay = max(DefaultMaxDelay, o.BaseDelay)
	}
	if o.ForgetAfter <= 0 {
		o.ForgetAfter = DefaultForgetAfter
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	return &Dispatcher{
		o: o,
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[itemKey](o.BaseDelay, o.MaxDelay)),
		items:    map[itemKey]*entry{},
		failures: map[endpointKey]*Failure{},
	}
}

// Enqueue asks for d to be delivered, unless it is already delivered or on
// its way: then only its target (a changed URL or secret) is updated and it
// is kept from being forgotten. It never blocks on the network.
func (q *Dispatcher) Enqueue(d Delivery) error {
	k := itemKey{d.Sale, d.Target.Name, d.Event.ID}
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.items[k]; ok {
		e.d.Target = d.Target
		e.touched = time.Now()
		return nil
	}
	body, err := Encode(d.Event)
	if err != nil {
		return err
	}
	q.items[k] = &entry{d: d, body: body, touched: time.Now()}
	q.queue.Add(k)
	return nil
}

// Delivered names the endpoints that answered 2xx to event id of sale.
func (q *Dispatcher) Delivered(sale, id string) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for k, e := range q.items {
		if k.sale == sale && k.id == id && e.delivered {
			out = append(out, k.webhook)
		}
	}
	sort.Strings(out)
	return out
}

// Failures lists the endpoints of sale whose latest attempt failed, by name.
func (q *Dispatcher) Failures(sale string) []Failure {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Failure
	for k, f := range q.failures {
		if k.sale == sale {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Webhook < out[j].Webhook })
	return out
}

// Start runs the workers until ctx ends (a controller-runtime Runnable:
// only the leader sends).
func (q *Dispatcher) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for range q.o.Workers {
		wg.Go(func() {
			for q.next(ctx) {
			}
		})
	}
	wg.Go(func() { q.forgetLoop(ctx) })
	<-ctx.Done()
	q.queue.ShutDown()
	wg.Wait()
	return nil
}

// next makes one attempt; false once the queue is shut down.
func (q *Dispatcher) next(ctx context.Context) bool {
	k, shutdown := q.queue.Get()
	if shutdown {
		return false
	}
	defer q.queue.Done(k)
	q.mu.Lock()
	e, ok := q.items[k]
	var d Delivery
	var body []byte
	if ok && !e.delivered {
		d, body = e.d, e.body
	}
	q.mu.Unlock()
	if body == nil {
		// Delivered already, or forgotten.
		q.queue.Forget(k)
		return true
	}
	err := q.post(ctx, d, body)
	if ctx.Err() != nil {
		return true // shutting down: the attempt does not count
	}
	if !q.record(k, err) {
		// Dropped while on its way: nobody asks about it any more, and
		// telling OnAttempt would bring back a sale's forgotten metrics.
		return true
	}
	if q.o.OnAttempt != nil {
		q.o.OnAttempt(Attempt{Sale: k.sale, Webhook: k.webhook, EventID: k.id, Err: err})
	}
	return true
}

// record notes the outcome of an attempt and schedules the retry; false
// when the delivery was dropped (or forgotten) meanwhile: then nothing is
// noted and it is not retried.
func (q *Dispatcher) record(k itemKey, err error) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.items[k]
	if !ok {
		q.queue.Forget(k)
		return false
	}
	ek := endpointKey{k.sale, k.webhook}
	if err == nil {
		e.delivered, e.touched = true, time.Now()
		delete(q.failures, ek)
		q.queue.Forget(k)
		return true
	}
	f := q.failures[ek]
	if f == nil {
		f = &Failure{Webhook: k.webhook, Since: time.Now()}
		q.failures[ek] = f
	}
	f.Attempts++
	f.LastError = err.Error()
	q.queue.AddRateLimited(k)
	return true
}

// Drop forgets at once the deliveries of sale to the webhooks keep refuses
// (every webhook when keep is nil), and their failures: a webhook taken
// out of the spec, or a deleted sale, must not be retried (nor counted as
// failing) for ForgetAfter. A drop while a POST is on its way discards its
// outcome. It returns the ids of the dropped deliveries not yet delivered.
func (q *Dispatcher) Drop(sale string, keep func(webhook string) bool) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var undelivered []string
	for k, e := range q.items {
		if k.sale != sale || (keep != nil && keep(k.webhook)) {
			continue
		}
		// One still in the queue is skipped when next taken (next finds
		// no item).
		delete(q.items, k)
		q.queue.Forget(k)
		if !e.delivered && !slices.Contains(undelivered, k.id) {
			undelivered = append(undelivered, k.id)
		}
	}
	for k := range q.failures {
		if k.sale == sale && (keep == nil || !keep(k.webhook)) {
			delete(q.failures, k)
		}
	}
	sort.Strings(undelivered)
	return undelivered
}

// post sends one signed delivery; any answer but 2xx is an error.
func (q *Dispatcher) post(ctx context.Context, d Delivery, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Target.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", "flashsale-operator")
	SetHeaders(req.Header, d.Target.Secret, d.Event.ID, time.Now(), body)
	resp, err := q.o.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// A short excerpt of the answer says why; the rest is drained so the
	// connection is reused.
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 120))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d %s", resp.StatusCode, strings.ToValidUTF8(string(bytes.TrimSpace(excerpt)), "?"))
	}
	return nil
}

// forgetLoop drops, every minute, the deliveries nobody enqueued within
// ForgetAfter, and the failures of endpoints with nothing left to send.
func (q *Dispatcher) forgetLoop(ctx context.Context) {
	t := time.NewTicker(min(time.Minute, q.o.ForgetAfter))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			q.forget(time.Now())
		}
	}
}

func (q *Dispatcher) forget(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	live := map[endpointKey]bool{}
	for k, e := range q.items {
		if now.Sub(e.touched) > q.o.ForgetAfter {
			// A pending one still in the queue is dropped when next taken.
			delete(q.items, k)
			continue
		}
		if !e.delivered {
			live[endpointKey{k.sale, k.webhook}] = true
		}
	}
	for k := range q.failures {
		if !live[k] {
			delete(q.failures, k)
		}
	}
}
