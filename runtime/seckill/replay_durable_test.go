package seckill_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestDurableReplay: in a durable sale a retry answered with its earlier
// order says "durable" like a new order, and says it truthfully: the 202 of
// the retry waits for the replicas to have that order. An order admitted
// while the replication link was cut (202 durable false, or the 202 lost)
// and retried once the link is back is answered durable true and is on the
// replica by then; retried with the link cut it is answered durable false
// after the wait. Both for a retry that reaches the purchase script and for
// one refused before it (the sale closed) that looks its order up.
func TestDurableReplay(t *testing.T) {
	lr := startLinkedReplica(t)
	fs := privateSale(t, 100)
	const timeout = 400 * time.Millisecond
	s, err := startDurable(t, lr.rdb, fs, seckill.Durability{Replicas: 1, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	onReplica := lr.replica.Client(t)
	ordersKey := keys.ForSKU(fs.SaleKey(), "1001").Orders
	ctx := context.Background()

	tk := s.token("u1", "1001")
	lr.link.Cut()
	first := s.purchase("u1", "1001", tk.Token)
	if d := durableOf(t, first); first.Status != http.StatusAccepted || d == nil || *d {
		t.Fatalf("purchase with the link cut: %d %s, want 202 durable false", first.Status, first.Body)
	}

	// The retry reaches the purchase script (REPLAY).
	retry := func(what string, want bool) {
		t.Helper()
		start := time.Now()
		r := s.purchase("u1", "1001", tk.Token)
		took := time.Since(start)
		d := durableOf(t, r)
		if r.Status != http.StatusAccepted || r.OrderNo != first.OrderNo || d == nil || *d != want {
			t.Fatalf("%s: %d %s, want 202 %s durable %v", what, r.Status, r.Body, first.OrderNo, want)
		}
		if !want && took < timeout-50*time.Millisecond {
			t.Errorf("%s: answered durable false in %s, before the %s wait ran out", what, took, timeout)
		}
	}
	retry("retry with the link cut", false)
	lr.link.Restore()
	testutil.WaitReplicaOnline(t, lr.primary, 1)
	retry("retry with the link back", true)
	if ok, err := onReplica.HExists(ctx, ordersKey, first.OrderNo).Result(); err != nil || !ok {
		t.Fatalf("order %s answered durable on retry is not on the replica (%v, %v)", first.OrderNo, ok, err)
	}

	// The retry is refused before the script (the sale closed early) and
	// looks its order up.
	if err := switches.SetClosed(ctx, lr.rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, "the pod answers ENDED", func() bool { return s.token("probe", "1001").Error == "ENDED" })
	retry("refused retry with the replica up", true)
	lr.link.Cut()
	retry("refused retry with the link cut", false)
	// A token that bought nothing is still refused.
	other := s.signer
	tok2, _, err := other.Issue(fs.SaleKey(), "1001", "u2")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.purchase("u2", "1001", tok2); r.Status != http.StatusGone || r.Error != "ENDED" {
		t.Errorf("a refused token that bought nothing: %d %s, want 410 ENDED", r.Status, r.Body)
	}
	if got := counter(t, s.Metrics().Registry, seckill.MetricDurabilityTimeouts); got != 3 {
		t.Errorf("%s = %v, want 3 (the first purchase and two retries with the link cut)", seckill.MetricDurabilityTimeouts, got)
	}
}

// TestDurabilityWaitBelowAMillisecond: a durability timeout under 1 ms is
// a 1 ms WAIT, not WAIT n 0 (which blocks until the batch gives up, seconds
// later, and turns the 202 into a 503).
func TestDurabilityWaitBelowAMillisecond(t *testing.T) {
	lr := startLinkedReplica(t)
	fs := privateSale(t, 100)
	s, err := startDurable(t, lr.rdb, fs, seckill.Durability{Replicas: 1, Timeout: 500 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	lr.link.Cut()
	start := time.Now()
	r := s.buy("u1", "1001")
	took := time.Since(start)
	if d := durableOf(t, r); r.Status != http.StatusAccepted || d == nil || *d {
		t.Fatalf("purchase with a 500µs wait and the link cut: %d %s after %s, want 202 durable false", r.Status, r.Body, took)
	}
	if took > time.Second {
		t.Errorf("a 500µs wait took %s", took)
	}
}

// TestTooFarAheadTokenGetsItsOrder: a genuine token whose expiry lies
// further ahead than this pod allows (minted by a pod whose clock runs
// ahead, which admitted its purchase) is refused as a token, but its retry
// on this pod gets the order it made; a token like it that made no order is
// refused.
func TestTooFarAheadTokenGetsItsOrder(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	s := startServer(t, rdb, fs, serverOpts{})
	ring, err := token.NewKeyRing(testKey)
	if err != nil {
		t.Fatal(err)
	}
	ahead := clocktesting.NewFakePassiveClock(time.Now().Add(time.Minute))
	fast := token.NewSigner(ring, fs.TokenTTL(), ahead)
	tok, _, err := fast.Issue(fs.SaleKey(), "1001", "u1")
	if err != nil {
		t.Fatal(err)
	}
	// The fast pod admitted it (by its own clock the token is valid).
	claims, err := fast.Verify(tok, fs.SaleKey(), "1001", "u1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.signer.Verify(tok, fs.SaleKey(), "1001", "u1"); !errors.Is(err, token.ErrTooFarAhead) {
		t.Fatalf("this pod verifies the fast pod's token with %v, want ErrTooFarAhead", err)
	}
	script, err := purchase.New(rdb, fs.SaleKey(), purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := script.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := ahead.Now()
	res, err := script.Purchase(context.Background(), purchase.Request{SKU: "1001", User: "u1", Limit: 1, Amount: "1.00",
		Nonce: claims.NonceString(), Now: now, Deadline: now.Add(time.Minute)})
	if err != nil || res.Outcome != purchase.Admitted {
		t.Fatalf("the fast pod's purchase: %+v %v", res, err)
	}

	r := s.purchase("u1", "1001", tok)
	if r.Status != http.StatusAccepted || r.OrderNo != res.OrderNo {
		t.Errorf("retry of a too-far-ahead token that bought: %d %s, want 202 %s", r.Status, r.Body, res.OrderNo)
	}
	tok2, _, err := fast.Issue(fs.SaleKey(), "1001", "u2")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.purchase("u2", "1001", tok2); r.Status != http.StatusForbidden || r.Error != "BAD_TOKEN" {
		t.Errorf("a too-far-ahead token that bought nothing: %d %s, want 403 BAD_TOKEN", r.Status, r.Body)
	}
	if got := stock(t, rdb, fs, "1001"); got != 99 {
		t.Errorf("stock %d, want 99: the retry must not buy again", got)
	}
}
