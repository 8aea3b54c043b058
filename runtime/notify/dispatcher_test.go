package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver is a real HTTP endpoint that answers 500 to its first fail
// calls, then 200, and checks every call's signature.
type receiver struct {
	t      *testing.T
	secret []byte
	fail   int
	hang   chan struct{} // when set, every call waits for it to close

	mu       sync.Mutex
	calls    []time.Time
	accepted map[string]int // event id → 2xx answers
	bodies   []map[string]any
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rv.hang != nil {
		select {
		case <-rv.hang:
		case <-r.Context().Done():
		}
		return
	}
	body, _ := io.ReadAll(r.Body)
	if err := Verify(rv.secret, r.Header, body, time.Now(), 0); err != nil {
		rv.t.Errorf("delivery with a bad signature: %v", err)
	}
	if ct := r.Header.Get("Content-Type"); ct != ContentType {
		rv.t.Errorf("Content-Type %q, want %q", ct, ContentType)
	}
	var ce map[string]any
	if err := json.Unmarshal(body, &ce); err != nil {
		rv.t.Errorf("body is not JSON: %v", err)
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.calls = append(rv.calls, time.Now())
	rv.bodies = append(rv.bodies, ce)
	if len(rv.calls) <= rv.fail {
		http.Error(w, "receiver down", http.StatusInternalServerError)
		return
	}
	rv.accepted[r.Header.Get(HeaderID)]++
}

func startReceiver(t *testing.T, fail int) (*receiver, string) {
	rv := &receiver{t: t, secret: []byte("whsec-test"), fail: fail, accepted: map[string]int{}}
	srv := httptest.NewServer(rv)
	t.Cleanup(srv.Close)
	return rv, srv.URL
}

func run(t *testing.T, d *Dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func soldOut(id string) Event {
	return Event{ID: id, Name: "SoldOut", Source: Source("shop", "singles-day"), Subject: "1001",
		Time: time.Date(2026, 11, 11, 12, 0, 3, 0, time.UTC), Data: []byte(`{"id":"1001","stock":5000,"sold":5000}`)}
}

// TestDispatcherRetriesWithBackoff: a receiver that answers 500 three times
// gets the event again with the same id and signature scheme, each wait
// longer than the one before, and accepts it once; the dispatcher reports
// the failures while they last and the delivery once it is done.
func TestDispatcherRetriesWithBackoff(t *testing.T) {
	rv, url := startReceiver(t, 3)
	var mu sync.Mutex
	var attempts []Attempt
	d := NewDispatcher(Options{BaseDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second, OnAttempt: func(a Attempt) {
		mu.Lock()
		attempts = append(attempts, a)
		mu.Unlock()
	}})
	run(t, d)
	del := Delivery{Sale: "shop/singles-day", Event: soldOut("uid.soldout.1001"), Target: Target{Name: "shop", URL: url, Secret: rv.secret}}
	if err := d.Enqueue(del); err != nil {
		t.Fatal(err)
	}

	sawFailure := false
	deadline := time.Now().Add(10 * time.Second)
	for len(d.Delivered("shop/singles-day", "uid.soldout.1001")) == 0 {
		if f := d.Failures("shop/singles-day"); len(f) == 1 && f[0].Webhook == "shop" && strings.Contains(f[0].LastError, "HTTP 500 receiver down") {
			sawFailure = true
		}
		// Enqueued again while it is retried (as every reconcile does):
		// neither a second copy nor a skipped backoff.
		_ = d.Enqueue(del)
		if time.Now().After(deadline) {
			t.Fatal("not delivered within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawFailure {
		t.Error("Failures never reported the endpoint while it answered 500")
	}
	if f := d.Failures("shop/singles-day"); len(f) != 0 {
		t.Errorf("Failures after the delivery: %+v, want none", f)
	}

	rv.mu.Lock()
	defer rv.mu.Unlock()
	if len(rv.calls) != 4 || rv.accepted["uid.soldout.1001"] != 1 || len(rv.accepted) != 1 {
		t.Fatalf("receiver saw %d calls and accepted %v, want 4 calls and the one event accepted once", len(rv.calls), rv.accepted)
	}
	var gaps []time.Duration
	for i := 1; i < len(rv.calls); i++ {
		gaps = append(gaps, rv.calls[i].Sub(rv.calls[i-1]))
	}
	// 100 ms, 200 ms, 400 ms: each wait at least the base and longer than the last.
	if gaps[0] < 90*time.Millisecond || gaps[1] <= gaps[0] || gaps[2] <= gaps[1] {
		t.Fatalf("waits between attempts %v, want an exponential backoff from 100 ms", gaps)
	}
	for _, b := range rv.bodies {
		if b["id"] != "uid.soldout.1001" || b["type"] != "dev.flashsale.soldout" {
			t.Fatalf("attempt carried %v, want the same event every time", b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 4 || attempts[0].Err == nil || attempts[3].Err != nil || attempts[3].Webhook != "shop" {
		t.Fatalf("OnAttempt saw %+v, want three failures then a success", attempts)
	}
}

// TestDispatcherNeverBlocks: with the only worker stuck on a receiver that
// never answers, Enqueue still returns at once, and the stuck POST fails at
// the timeout instead of holding the worker for ever.
func TestDispatcherNeverBlocks(t *testing.T) {
	rv, url := startReceiver(t, 0)
	rv.hang = make(chan struct{})
	defer close(rv.hang)
	d := NewDispatcher(Options{Workers: 1, Timeout: 300 * time.Millisecond, BaseDelay: time.Minute})
	run(t, d)

	start := time.Now()
	for i := range 500 {
		ev := soldOut(fmt.Sprintf("uid.soldout.%d", i))
		if err := d.Enqueue(Delivery{Sale: "shop/s", Event: ev, Target: Target{Name: "hang", URL: url, Secret: rv.secret}}); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Fatalf("500 Enqueues took %s with the receiver hanging, want them not to wait on it", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := d.Failures("shop/s")
		if len(f) == 1 && strings.Contains(f[0].LastError, "deadline exceeded") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no timeout reported within 5 s: %+v", f)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEncodeStructuredCloudEvent: the body is a CloudEvents 1.0 structured
// JSON event whose data is the payload as given.
func TestEncodeStructuredCloudEvent(t *testing.T) {
	b, err := Encode(soldOut("uid.soldout.1001"))
	if err != nil {
		t.Fatal(err)
	}
	var ce map[string]any
	if err := json.Unmarshal(b, &ce); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"specversion": "1.0", "id": "uid.soldout.1001", "type": "dev.flashsale.soldout", "subject": "1001",
		"source": "/apis/flashsale.dev/v1alpha1/namespaces/shop/flashsales/singles-day", "time": "2026-11-11T12:00:03Z",
		"datacontenttype": "application/json",
	}
	for k, v := range want {
		if ce[k] != v {
			t.Errorf("%s = %v, want %v (event %s)", k, ce[k], v, b)
		}
	}
	if data, _ := ce["data"].(map[string]any); data["sold"] != 5000.0 {
		t.Errorf("data = %v, want the payload as JSON", ce["data"])
	}
	if _, err := Encode(Event{ID: "x", Name: "Live", Source: "/s", Data: []byte("not json")}); err == nil {
		t.Error("Encode accepted data that is not JSON")
	}
}

// TestDispatcherDrop: a delivery to a webhook that keeps failing stops
// being sent once dropped, its failure is forgotten, and the attempt on its
// way when the drop came (a receiver that answers after the timeout) is
// neither reported nor retried; the sale's other webhook, kept, is still
// retried.
func TestDispatcherDrop(t *testing.T) {
	rv, url := startReceiver(t, 1000)
	slow, slowURL := startReceiver(t, 0)
	slow.hang = make(chan struct{})
	t.Cleanup(func() { close(slow.hang) })
	var mu sync.Mutex
	reported := map[string]int{}
	d := NewDispatcher(Options{Timeout: 300 * time.Millisecond, BaseDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond,
		OnAttempt: func(a Attempt) {
			mu.Lock()
			defer mu.Unlock()
			reported[a.Webhook]++
		}})
	run(t, d)
	for name, u := range map[string]string{"gone": slowURL, "kept": url} {
		if err := d.Enqueue(Delivery{Sale: "shop/s", Event: soldOut("e1"), Target: Target{Name: name, URL: u, Secret: rv.secret}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "gone's first attempt timed out, its second on its way", func() bool {
		f := d.Failures("shop/s")
		return len(f) == 2 && f[0].Webhook == "gone"
	})
	time.Sleep(100 * time.Millisecond) // past the backoff: the second POST hangs
	mu.Lock()
	gone := reported["gone"]
	mu.Unlock()
	if got := d.Drop("shop/s", func(w string) bool { return w == "kept" }); len(got) != 1 || got[0] != "e1" {
		t.Fatalf("Drop returned %v, want the undelivered e1", got)
	}
	if f := d.Failures("shop/s"); len(f) != 1 || f[0].Webhook != "kept" {
		t.Fatalf("failures after the drop: %+v, want only kept's", f)
	}
	mu.Lock()
	kept := reported["kept"]
	mu.Unlock()
	time.Sleep(700 * time.Millisecond) // the attempt on its way times out
	mu.Lock()
	defer mu.Unlock()
	if reported["gone"] != gone {
		t.Errorf("%d attempts to the dropped webhook reported after the drop, want none", reported["gone"]-gone)
	}
	if reported["kept"] <= kept {
		t.Errorf("the kept webhook was not retried after the drop")
	}
	if f := d.Failures("shop/s"); len(f) != 1 || f[0].Webhook != "kept" {
		t.Errorf("failures: %+v, want only kept's (the attempt on its way must not bring gone's back)", f)
	}
	if got := d.Drop("shop/s", nil); len(got) != 1 || len(d.Failures("shop/s")) != 0 {
		t.Errorf("Drop(nil) returned %v and left failures %+v, want everything dropped", got, d.Failures("shop/s"))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
