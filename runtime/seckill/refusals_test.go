package seckill_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/risk"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestEveryRefusalLeavesStateUntouched produces every refusal code of the
// contract with a real request and checks that stock and orders did not move.
func TestEveryRefusalLeavesStateUntouched(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb,
		v1alpha1.SKU{ID: "1001", Stock: 5, Price: "3999.00", PerUserLimit: 1},
		v1alpha1.SKU{ID: "gone", Stock: 0, Price: "1.00", PerUserLimit: 1},
	)
	fs.Spec.RateLimit = v1alpha1.RateLimit{PerUserPerSecond: 2}
	fs.Spec.Access = &v1alpha1.Access{BlockUsers: []string{"mallory"}, BlockCIDRs: []string{"192.0.2.0/24"},
		AllowUsers: []string{"tester"}, TrustedProxies: []string{"127.0.0.1/32"}}
	verifier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ User string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		allow := req.User != "risky"
		_ = json.NewEncoder(w).Encode(map[string]any{"allow": allow, "reason": "score too high"})
	}))
	t.Cleanup(verifier.Close)
	s := startServer(t, rdb, fs, serverOpts{risk: risk.NewHTTPVerifier(verifier.URL, time.Second, false, nil)})

	goodToken := func(user, sku string) string {
		tok, _, err := s.signer.Issue(fs.SaleKey(), sku, user)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// One admitted order first, so "already purchased" has something to refuse.
	if r := s.purchase("owner", "1001", goodToken("owner", "1001")); r.Status != http.StatusAccepted {
		t.Fatalf("setup purchase: %d %s", r.Status, r.Error)
	}
	ownerToken := goodToken("owner", "1001")
	riskyToken := goodToken("risky", "1001")
	big := `{"sku":"1001","token":"` + strings.Repeat("x", 5000) + `"}`

	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
		setup                    func()
	}{
		{name: "already purchased", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"` + ownerToken + `"}`,
			headers: []string{"X-User-ID", "owner"}, status: 409, code: "ALREADY_PURCHASED"},
		{name: "sold out", method: "POST", path: "/purchase", body: `{"sku":"gone","token":"` + goodToken("u1", "gone") + `"}`,
			headers: []string{"X-User-ID", "u1"}, status: 410, code: "SOLD_OUT"},
		{name: "forged token", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"v1.deadbeef.zz.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`,
			headers: []string{"X-User-ID", "u2"}, status: 403, code: "BAD_TOKEN"},
		{name: "missing token", method: "POST", path: "/purchase", body: `{"sku":"1001"}`,
			headers: []string{"X-User-ID", "u3"}, status: 403, code: "BAD_TOKEN"},
		{name: "token of another user", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"` + goodToken("u4", "1001") + `"}`,
			headers: []string{"X-User-ID", "u5"}, status: 403, code: "BAD_TOKEN"},
		// A genuine token: a forged one is refused before any bucket is charged.
		{name: "rate limited", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"` + goodToken("u6", "1001") + `"}`,
			headers: []string{"X-User-ID", "u6"}, status: 429, code: "RATE_LIMITED",
			setup: func() {
				s.call("POST", "/token", `{"sku":"1001"}`, "X-User-ID", "u6")
				s.call("POST", "/token", `{"sku":"1001"}`, "X-User-ID", "u6")
			}},
		{name: "blocked user", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"` + goodToken("mallory", "1001") + `"}`,
			headers: []string{"X-User-ID", "mallory"}, status: 403, code: "BLOCKED"},
		{name: "blocked network", method: "POST", path: "/token", body: `{"sku":"1001"}`,
			headers: []string{"X-User-ID", "u7", "X-Forwarded-For", "192.0.2.7"}, status: 403, code: "BLOCKED"},
		{name: "risk rejected", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"` + riskyToken + `"}`,
			headers: []string{"X-User-ID", "risky"}, status: 403, code: "RISK_REJECTED"},
		{name: "malformed json", method: "POST", path: "/purchase", body: `{"sku":`,
			headers: []string{"X-User-ID", "u8"}, status: 400, code: "BAD_REQUEST"},
		{name: "two objects", method: "POST", path: "/purchase", body: `{"sku":"1001"}{"sku":"1001"}`,
			headers: []string{"X-User-ID", "u8b"}, status: 400, code: "BAD_REQUEST"},
		{name: "empty body", method: "POST", path: "/token", body: ``,
			headers: []string{"X-User-ID", "u9"}, status: 400, code: "BAD_REQUEST"},
		{name: "missing sku", method: "POST", path: "/token", body: `{}`,
			headers: []string{"X-User-ID", "u10"}, status: 400, code: "BAD_REQUEST"},
		{name: "missing user", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"x"}`,
			status: 400, code: "BAD_REQUEST"},
		{name: "malformed user", method: "POST", path: "/purchase", body: `{"sku":"1001","token":"x"}`,
			headers: []string{"X-User-ID", "bad user\u00e9"}, status: 400, code: "BAD_REQUEST"},
		{name: "oversized body", method: "POST", path: "/purchase", body: big,
			headers: []string{"X-User-ID", "u11"}, status: 413, code: "BODY_TOO_LARGE"},
		{name: "unknown sku", method: "POST", path: "/token", body: `{"sku":"nope"}`,
			headers: []string{"X-User-ID", "u12"}, status: 404, code: "NOT_FOUND"},
		{name: "unknown order", method: "GET", path: "/orders/1001-000000000000000000000000",
			headers: []string{"X-User-ID", "u13"}, status: 404, code: "NOT_FOUND"},
		{name: "garbage order number", method: "GET", path: "/orders/..%2f..",
			headers: []string{"X-User-ID", "u13"}, status: 404, code: "NOT_FOUND"},
		{name: "unknown sku stock", method: "GET", path: "/skus/nope", status: 404, code: "NOT_FOUND"},
		{name: "wrong method", method: "GET", path: "/purchase",
			headers: []string{"X-User-ID", "u14"}, status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "pay without MySQL or secret", method: "POST", path: "/orders/1001-000000000000000000000000/pay",
			headers: []string{"Authorization", "Bearer anything"}, status: 503, code: "NOT_CONFIGURED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			before := snapshot(t, rdb, fs)
			r := s.call(tc.method, tc.path, tc.body, tc.headers...)
			if r.Status != tc.status || r.Error != tc.code {
				t.Fatalf("got %d %s (%s), want %d %s", r.Status, r.Error, r.Message, tc.status, tc.code)
			}
			if r.Message == "" {
				t.Error("refusal without a message")
			}
			if tc.code == "RATE_LIMITED" && r.RetryAfter == "" {
				t.Error("429 without Retry-After")
			}
			if after := snapshot(t, rdb, fs); after != before {
				t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	t.Run("unknown sale", func(t *testing.T) {
		before := snapshot(t, rdb, fs)
		req, _ := http.NewRequest("POST", s.root+"/api/v1/sales/other/sale/token", strings.NewReader(`{"sku":"1001"}`))
		req.Header.Set("X-User-ID", "u16")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if after := snapshot(t, rdb, fs); after != before {
			t.Fatal("state changed")
		}
	})
	t.Run("allow-listed user skips the rate limit", func(t *testing.T) {
		for range 5 {
			if r := s.token("tester", "1001"); r.Status != 200 {
				t.Fatalf("allow-listed user refused: %d %s", r.Status, r.Error)
			}
		}
	})

	// Switches in Redis, honoured within a second.
	t.Run("paused", func(t *testing.T) {
		if err := switches.SetPaused(ctx, rdb, fs.SaleKey(), true); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = switches.SetPaused(ctx, rdb, fs.SaleKey(), false) }()
		// The token endpoint changes nothing, so it is the probe.
		testutil.Eventually(t, time.Second, "the pod answers PAUSED", func() bool {
			return s.token("u17", "1001").Error == "PAUSED"
		})
		before := snapshot(t, rdb, fs)
		r := s.call("POST", "/purchase", `{"sku":"1001","token":"`+goodToken("u17", "1001")+`"}`, "X-User-ID", "u17")
		if r.Status != 503 || r.Error != "PAUSED" {
			t.Fatalf("purchase while paused: %d %s", r.Status, r.Error)
		}
		if r.RetryAfter == "" {
			t.Error("503 PAUSED without Retry-After")
		}
		if after := snapshot(t, rdb, fs); after != before {
			t.Fatal("state changed")
		}
	})
	t.Run("closed early", func(t *testing.T) {
		if err := switches.SetClosed(ctx, rdb, fs.SaleKey(), true); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = switches.SetClosed(ctx, rdb, fs.SaleKey(), false) }()
		testutil.Eventually(t, time.Second, "the pod answers ENDED", func() bool {
			return s.token("u18", "1001").Error == "ENDED"
		})
		before := snapshot(t, rdb, fs)
		if r := s.call("POST", "/purchase", `{"sku":"1001","token":"`+goodToken("u18", "1001")+`"}`, "X-User-ID", "u18"); r.Status != 410 || r.Error != "ENDED" {
			t.Fatalf("purchase after an early close: %d %s", r.Status, r.Error)
		}
		if after := snapshot(t, rdb, fs); after != before {
			t.Fatal("state changed")
		}
	})
}

// TestSaleWindowByPodClock: before the start NOT_STARTED (with Retry-After),
// from the start purchases, from the end ENDED; exact at the boundaries.
func TestSaleWindowByPodClock(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	start := time.Date(2030, 11, 11, 12, 0, 0, 0, time.UTC)
	fs.Spec.StartTime = metav1.NewTime(start)
	fs.Spec.EndTime = metav1.NewTime(start.Add(30 * time.Minute))
	clk := clocktesting.NewFakeClock(start.Add(-90 * time.Second))
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	before := snapshot(t, rdb, fs)
	r := s.token("erin", "1001")
	if r.Status != 425 || r.Error != "NOT_STARTED" || r.RetryAfter != "90" {
		t.Fatalf("before start: %d %s Retry-After=%q", r.Status, r.Error, r.RetryAfter)
	}
	clk.SetTime(start.Add(-time.Nanosecond))
	if r := s.token("erin", "1001"); r.Error != "NOT_STARTED" {
		t.Fatalf("1ns before start: %d %s", r.Status, r.Error)
	}
	if after := snapshot(t, rdb, fs); after != before {
		t.Fatal("state changed before start")
	}
	clk.SetTime(start)
	tk := s.token("erin", "1001")
	if tk.Status != 200 {
		t.Fatalf("at start: %d %s", tk.Status, tk.Error)
	}
	clk.SetTime(start.Add(30*time.Minute - time.Nanosecond))
	late := s.token("frank", "1001")
	if late.Status != 200 {
		t.Fatalf("1ns before end: %d %s", late.Status, late.Error)
	}
	clk.SetTime(start.Add(30 * time.Minute))
	before = snapshot(t, rdb, fs)
	if r := s.purchase("frank", "1001", late.Token); r.Status != 410 || r.Error != "ENDED" {
		t.Fatalf("at end: %d %s", r.Status, r.Error)
	}
	if after := snapshot(t, rdb, fs); after != before {
		t.Fatal("state changed after end")
	}
}

// TestTokens: forged, expired and misused tokens are refused; a key rotated
// mid-sale keeps earlier tokens valid while both keys are configured.
func TestTokens(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb,
		v1alpha1.SKU{ID: "a", Stock: 10, Price: "1.00", PerUserLimit: 5},
		v1alpha1.SKU{ID: "b", Stock: 10, Price: "1.00", PerUserLimit: 5})
	// Token expiry has millisecond resolution: start on a whole millisecond.
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Millisecond))
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	expectBad := func(name string, r reply) {
		t.Helper()
		if r.Status != 403 || r.Error != "BAD_TOKEN" {
			t.Errorf("%s: %d %s, want 403 BAD_TOKEN", name, r.Status, r.Error)
		}
	}
	tok := s.token("gina", "a").Token
	expectBad("for another SKU", s.purchase("gina", "b", tok))
	expectBad("for another user", s.purchase("hank", "a", tok))
	flipped := []byte(tok)
	flipped[len(flipped)-3] ^= 1
	expectBad("forged", s.purchase("gina", "a", string(flipped)))

	other := newSale(t, rdb, v1alpha1.SKU{ID: "a", Stock: 10, Price: "1.00", PerUserLimit: 5})
	foreign, _, _ := s.signer.Issue(other.SaleKey(), "a", "gina")
	expectBad("for another sale", s.purchase("gina", "a", foreign))

	clk.Step(fs.TokenTTL())
	expectBad("expired", s.purchase("gina", "a", tok))
	clk.Step(-time.Nanosecond)
	if r := s.purchase("gina", "a", tok); r.Status != 202 {
		t.Fatalf("1ns before expiry: %d %s", r.Status, r.Error)
	}

	// Rotation: new key first, old key still accepted, then dropped.
	oldTok := s.token("ivan", "a").Token
	newKey := []byte("a-brand-new-key-for-rotation-0123456789")
	ring, err := token.NewKeyRing(newKey, testKey)
	if err != nil {
		t.Fatal(err)
	}
	s.signer.SetKeyRing(ring)
	newTok := s.token("ivan", "a").Token
	if strings.Split(newTok, ".")[1] == strings.Split(oldTok, ".")[1] {
		t.Fatal("token after rotation still signed with the old key")
	}
	if r := s.purchase("ivan", "a", oldTok); r.Status != 202 {
		t.Fatalf("old-key token during rotation: %d %s", r.Status, r.Error)
	}
	onlyNew, _ := token.NewKeyRing(newKey)
	s.signer.SetKeyRing(onlyNew)
	stale := oldTok
	expectBad("old key dropped", s.purchase("ivan", "a", stale+""))
	if r := s.purchase("ivan", "a", newTok); r.Status != 202 {
		t.Fatalf("new-key token: %d %s", r.Status, r.Error)
	}
}

// TestRiskVerifierFailOpenAndClosed: a verifier that does not answer in time
// admits (fail-open) or refuses (fail-closed) as configured.
func TestRiskVerifierFailOpenAndClosed(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	for _, failOpen := range []bool{true, false} {
		rdb := testutil.Redis(t)
		fs := newSale(t, rdb)
		s := startServer(t, rdb, fs, serverOpts{risk: risk.NewHTTPVerifier(slow.URL, 50*time.Millisecond, failOpen, nil)})
		r := s.buy("jack", "1001")
		switch {
		case failOpen && r.Status != 202:
			t.Errorf("fail-open: %d %s", r.Status, r.Error)
		case !failOpen && (r.Status != 403 || r.Error != "RISK_REJECTED"):
			t.Errorf("fail-closed: %d %s", r.Status, r.Error)
		}
	}
}

// TestNotWarmed: a pod whose sale was never warmed is not ready and refuses
// purchases without creating anything.
func TestNotWarmed(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	s := startServer(t, rdb, fs, serverOpts{noWarm: true})
	ops := httptest.NewServer(s.OpsHandler())
	defer ops.Close()
	req, _ := http.NewRequest("GET", ops.URL+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz %d, want 503", resp.StatusCode)
	}
	r := s.buy("kate", "1001")
	if r.Status != 503 || r.Error != "NOT_READY" {
		t.Fatalf("purchase on a cold sale: %d %s", r.Status, r.Error)
	}
	if n, _ := rdb.Exists(context.Background(), keys.ForSKU(fs.SaleKey(), "1001").Stock).Result(); n != 0 {
		t.Fatal("a refused purchase created the stock counter")
	}
}

// TestHeldGate: the operator's go-live gate. An absent held field admits as
// always; SetHeld(true) makes token and purchase answer 503 NOT_READY (with
// Retry-After) within one poll interval, changes nothing in Redis, and leaves
// order lookup, pay and SKU stock answering; it ranks after ENDED and before
// PAUSED; SetHeld(false) admits again within a second.
func TestHeldGate(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 5, Price: "3999.00", PerUserLimit: 1})
	s := startServer(t, rdb, fs, serverOpts{})
	saleKey := fs.SaleKey()

	// No operator: the field is absent and the sale is open.
	if sw, err := switches.Get(ctx, rdb, saleKey); err != nil || sw.Held {
		t.Fatalf("switches %+v, %v after warm: want not held", sw, err)
	}
	early := s.buy("early", "1001")
	if early.Status != 202 {
		t.Fatalf("purchase without a hold: %d %s", early.Status, early.Error)
	}
	waiting := s.token("waiting", "1001") // a valid token taken before the hold
	if waiting.Status != 200 {
		t.Fatalf("token without a hold: %d %s", waiting.Status, waiting.Error)
	}

	if err := switches.SetHeld(ctx, rdb, saleKey, true); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	// Within one poll interval the pod's next refresh has seen the hold; the
	// margin covers that refresh's and the probe's own round trips. SetHeld
	// comes right after Start's own refresh, so this waits the full interval.
	const margin = 25 * time.Millisecond
	for s.token("u1", "1001").Error != "NOT_READY" {
		if time.Since(held) > testPoll+margin {
			t.Fatalf("token still issued %s after SetHeld(true) (poll interval %s)", time.Since(held), testPoll)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("held after %s (poll interval %s)", time.Since(held).Round(time.Millisecond), testPoll)

	wantHeld := func(what string, r reply) {
		t.Helper()
		if r.Status != 503 || r.Error != "NOT_READY" {
			t.Fatalf("%s while held: %d %s (%s), want 503 NOT_READY", what, r.Status, r.Error, r.Message)
		}
		if r.RetryAfter != "1" {
			t.Errorf("%s while held: Retry-After %q, want 1", what, r.RetryAfter)
		}
		if !strings.Contains(r.Message, "not open yet") {
			t.Errorf("%s while held: message %q", what, r.Message)
		}
	}
	before := snapshot(t, rdb, fs)
	wantHeld("token", s.token("u2", "1001"))
	wantHeld("purchase", s.purchase("waiting", "1001", waiting.Token))
	if after := snapshot(t, rdb, fs); after != before {
		t.Fatalf("state changed while held:\nbefore %s\nafter  %s", before, after)
	}

	// The other endpoints are not gated.
	if r := s.call("GET", "/orders/"+early.OrderNo, "", "X-User-ID", "early"); r.Status != 200 || r.OrderNo != early.OrderNo {
		t.Fatalf("order lookup while held: %d %s", r.Status, r.Error)
	}
	if r := s.call("GET", "/skus/1001", ""); r.Status != 200 || r.Remaining != 4 {
		t.Fatalf("SKU stock while held: %d %s remaining %d", r.Status, r.Error, r.Remaining)
	}
	if r := s.call("POST", "/orders/"+early.OrderNo+"/pay", "", "Authorization", "Bearer x"); r.Error != "NOT_CONFIGURED" {
		t.Fatalf("pay while held: %d %s, want the unheld answer NOT_CONFIGURED", r.Status, r.Error)
	}

	// Precedence: an early close (ENDED) outranks the hold, the hold outranks
	// a pause.
	if err := switches.SetClosed(ctx, rdb, saleKey, true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "closed outranks held", func() bool { return s.token("u3", "1001").Error == "ENDED" })
	if err := switches.SetPaused(ctx, rdb, saleKey, true); err != nil {
		t.Fatal(err)
	}
	if err := switches.SetClosed(ctx, rdb, saleKey, false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "held outranks paused", func() bool { return s.token("u3", "1001").Error == "NOT_READY" })
	time.Sleep(2 * testPoll) // the pause has surely been read by now
	wantHeld("token while also paused", s.token("u3", "1001"))
	if err := switches.SetPaused(ctx, rdb, saleKey, false); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, rdb, fs); after != before {
		t.Fatalf("state changed while held:\nbefore %s\nafter  %s", before, after)
	}

	// Release: buyers are admitted again within a second.
	if err := switches.SetHeld(ctx, rdb, saleKey, false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "the pod admits again", func() bool { return s.token("u4", "1001").Status == 200 })
	if r := s.purchase("waiting", "1001", waiting.Token); r.Status != 202 {
		t.Fatalf("purchase after release: %d %s", r.Status, r.Error)
	}
	if n := stock(t, rdb, fs, "1001"); n != 3 {
		t.Fatalf("stock %d after two purchases, want 3", n)
	}
}

// TestHeldAfterWindow: the pod's clock is checked first. A held sale answers
// NOT_STARTED before its start time, NOT_READY from the start, and ENDED from
// its end.
func TestHeldAfterWindow(t *testing.T) {
	rdb := testutil.Redis(t)
	fs := newSale(t, rdb)
	start := time.Date(2030, 11, 11, 12, 0, 0, 0, time.UTC)
	fs.Spec.StartTime = metav1.NewTime(start)
	fs.Spec.EndTime = metav1.NewTime(start.Add(30 * time.Minute))
	clk := clocktesting.NewFakeClock(start.Add(-time.Minute))
	if _, err := warm.Warm(context.Background(), rdb, fs); err != nil {
		t.Fatal(err)
	}
	// Held before the pod starts, as the operator does: Start reads it.
	if err := switches.SetHeld(context.Background(), rdb, fs.SaleKey(), true); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, rdb, fs, serverOpts{clock: clk})
	if r := s.token("erin", "1001"); r.Status != 425 || r.Error != "NOT_STARTED" {
		t.Fatalf("held, before start: %d %s", r.Status, r.Error)
	}
	clk.SetTime(start)
	if r := s.token("erin", "1001"); r.Status != 503 || r.Error != "NOT_READY" || r.RetryAfter != "1" {
		t.Fatalf("held, at start: %d %s Retry-After=%q", r.Status, r.Error, r.RetryAfter)
	}
	clk.SetTime(start.Add(30 * time.Minute))
	if r := s.token("erin", "1001"); r.Status != 410 || r.Error != "ENDED" {
		t.Fatalf("held, at end: %d %s", r.Status, r.Error)
	}
}
