package seckill_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

var knownCodes = map[string]bool{
	"ALREADY_PURCHASED": true, "SOLD_OUT": true, "RATE_LIMITED": true, "BAD_TOKEN": true, "NOT_STARTED": true,
	"ENDED": true, "PAUSED": true, "BAD_REQUEST": true, "NOT_FOUND": true, "METHOD_NOT_ALLOWED": true,
	"BODY_TOO_LARGE": true, "BLOCKED": true, "RISK_REJECTED": true,
}

// FuzzPurchase throws arbitrary bodies and headers at the purchase endpoint.
// Whatever arrives, the answer is a contract JSON error (or an admitted
// order), never a 5xx, and a refusal leaves stock and orders untouched.
func FuzzPurchase(f *testing.F) {
	rdb := testutil.Redis(f)
	fs := newSale(f, rdb, v1alpha1.SKU{ID: "1001", Stock: 1000, Price: "1.00", PerUserLimit: 2})
	fs.Spec.Access = &v1alpha1.Access{BlockUsers: []string{"bad"}, TrustedProxies: []string{"192.0.2.0/24"}}
	s := startServer(f, rdb, fs, serverOpts{})
	valid, _, _ := s.signer.Issue(fs.SaleKey(), "1001", "fuzzer")

	f.Add(`{"sku":"1001","token":"`+valid+`"}`, "fuzzer", "", "application/json")
	f.Add(`{"sku":"1001","token":"x"}`, "u1", "10.0.0.1", "application/json")
	f.Add(`{"sku":"1001"}`, "", "", "")
	f.Add(`{"sku":1001,"token":null}`, "u2", "garbage, 1.2.3.4", "text/plain")
	f.Add(`[]`, "bad", "", "")
	f.Add(`{"sku":"nope","token":"`+valid+`"}`, "fuzzer", "::1", "")
	f.Add(`{"sku":"1001","token":"`+valid+`"} trailing`, "fuzzer", "", "")
	f.Add(strings.Repeat(`{"a":`, 2000), "u3", "", "")
	f.Add("\x00\xff\xfe", "\u00e9", "\x00", "\x00")

	before := snapshot(f, rdb, fs)
	f.Fuzz(func(t *testing.T, body, user, xff, ctype string) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/sales/"+fs.Namespace+"/"+fs.Name+"/purchase", strings.NewReader(body))
		req.RemoteAddr = "192.0.2.1:1234"
		if user != "" {
			req.Header["X-User-ID"] = []string{user}
		}
		if xff != "" {
			req.Header["X-Forwarded-For"] = []string{xff}
		}
		req.Header["Content-Type"] = []string{ctype}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)

		if rec.Code >= 500 {
			t.Fatalf("5xx %d for body %q user %q: %s", rec.Code, body, user, rec.Body)
		}
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", rec.Header().Get("Content-Type"))
		}
		var v struct{ Error, Message, OrderNo, Status string }
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("non-JSON answer %q: %v", rec.Body, err)
		}
		if rec.Code == http.StatusAccepted {
			// Only the seeded genuine token can get here; it makes one order.
			if user != "fuzzer" || v.OrderNo == "" {
				t.Fatalf("admitted an order for user %q with body %q", user, body)
			}
			before = snapshot(t, rdb, fs)
			return
		}
		if !knownCodes[v.Error] || v.Message == "" {
			t.Fatalf("answer %d %q (%q) is not a contract error", rec.Code, v.Error, v.Message)
		}
		if after := snapshot(t, rdb, fs); after != before {
			t.Fatalf("refusal %s changed state", v.Error)
		}
	})
}
