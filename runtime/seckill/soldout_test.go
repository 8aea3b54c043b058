package seckill_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// evalCalls counts the purchase script calls a pod made, from its metrics.
func evalCalls(t testing.TB, s *testServer) uint64 {
	t.Helper()
	mfs, err := s.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() != seckill.MetricRedisDuration {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == "evalsha" {
					n += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return n
}

// TestSoldOutShortCircuitAndReopen: once one pod sells the last unit, every
// pod answers SOLD_OUT from memory within a second, without calling the
// script; when stock comes back (a rollback, a raise), every pod reopens.
func TestSoldOutShortCircuitAndReopen(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 3, Price: "10.00", PerUserLimit: 1})
	a := startServer(t, rdb, fs, serverOpts{})
	b := startServer(t, rdb, fs, serverOpts{noWarm: true, signer: a.signer})
	for _, u := range []string{"u1", "u2", "u3"} {
		if r := a.buy(u, "1001"); r.Status != http.StatusAccepted {
			t.Fatalf("buy %s: %d %s", u, r.Status, r.Error)
		}
	}
	// Pod A learnt it from the script's answer; pod B within a poll.
	testutil.Eventually(t, time.Second, "pod B sees the SKU sold out", func() bool {
		return b.call(http.MethodGet, "/skus/1001", "").SoldOut
	})
	before := evalCalls(t, b)
	snap := snapshot(t, rdb, fs)
	for i := range 50 {
		tok, _, _ := b.signer.Issue(fs.SaleKey(), "1001", "late")
		r := b.purchase("late", "1001", tok)
		if r.Status != http.StatusGone || r.Error != "SOLD_OUT" {
			t.Fatalf("attempt %d on pod B: %d %s", i, r.Status, r.Error)
		}
	}
	if r := b.token("late", "1001"); r.Error != "SOLD_OUT" {
		t.Fatalf("token for a sold-out SKU: %d %s", r.Status, r.Error)
	}
	if after := evalCalls(t, b); after != before {
		t.Fatalf("pod B called the purchase script %d times for a sold-out SKU", after-before)
	}
	if snapshot(t, rdb, fs) != snap {
		t.Fatal("sold-out answers changed state")
	}

	// A rollback returns one unit: both pods reopen the SKU.
	if err := rdb.Incr(ctx, keys.ForSKU(fs.SaleKey(), "1001").Stock).Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testServer{a, b} {
		testutil.Eventually(t, time.Second, "pod reopens after stock came back", func() bool {
			r := s.call(http.MethodGet, "/skus/1001", "")
			return !r.SoldOut && r.Remaining == 1
		})
	}
	if r := b.buy("u4", "1001"); r.Status != http.StatusAccepted {
		t.Fatalf("buy after reopening: %d %s", r.Status, r.Error)
	}
	testutil.Eventually(t, time.Second, "pod A sees it sold out again", func() bool {
		return a.call(http.MethodGet, "/skus/1001", "").SoldOut
	})

	// A stock raise through warm (what the operator does) reopens too, by
	// exactly the difference.
	fs.Spec.SKUs[0].Stock = 5
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "pod A reopens after a stock raise", func() bool {
		r := a.call(http.MethodGet, "/skus/1001", "")
		return !r.SoldOut && r.Remaining == 2
	})
}
