package risk

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var req = Request{
	Sale: "shop/double11", SKU: "1001", User: "alice",
	IP: netip.MustParseAddr("::ffff:203.0.113.5"), UserAgent: "curl/8", Captcha: "tok-123",
}

func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func answer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

func TestAllowAll(t *testing.T) {
	d, err := AllowAll{}.Check(context.Background(), req)
	if err != nil || !d.Allow {
		t.Fatalf("AllowAll = %+v, %v", d, err)
	}
}

func TestHTTPVerifierAllowAndRequestShape(t *testing.T) {
	var got map[string]any
	var ctype, method string
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		method, ctype = r.Method, r.Header.Get("Content-Type")
		_ = json.NewDecoder(r.Body).Decode(&got)
		answer(`{"allow":true,"reason":"","score":0.1}`)(w, r)
	})
	d, err := NewHTTPVerifier(s.URL, 0, false, nil).Check(context.Background(), req)
	if err != nil || !d.Allow {
		t.Fatalf("Check = %+v, %v", d, err)
	}
	if method != http.MethodPost || ctype != "application/json" {
		t.Fatalf("method %s, content type %s", method, ctype)
	}
	want := map[string]any{"sale": "shop/double11", "sku": "1001", "user": "alice", "ip": "203.0.113.5", "userAgent": "curl/8", "captcha": "tok-123"}
	if len(got) != len(want) {
		t.Fatalf("body = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("body[%s] = %v, want %v", k, got[k], v)
		}
	}
}

func TestHTTPVerifierDeny(t *testing.T) {
	s := server(t, answer(`{"allow":false,"reason":"captcha failed","score":0.97}`))
	d, err := NewHTTPVerifier(s.URL, 0, true, nil).Check(context.Background(), req)
	if err != nil || d.Allow || d.Reason != "captcha failed" {
		t.Fatalf("Check = %+v, %v", d, err)
	}
	s2 := server(t, answer(`{"allow":false}`))
	d, err = NewHTTPVerifier(s2.URL, 0, true, nil).Check(context.Background(), req)
	if err != nil || d.Allow || d.Reason == "" {
		t.Fatalf("deny without reason = %+v, %v", d, err)
	}
}

func TestHTTPVerifierFailures(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client hanging up
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
		answer(`{"allow":true}`)(w, r)
	}
	status500 := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"allow":true}`, http.StatusInternalServerError)
	}
	huge := answer(`{"allow":true,"reason":"` + strings.Repeat("x", 8<<10) + `"}`)

	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr
	}()

	cases := []struct {
		name    string
		handler http.HandlerFunc // nil: use url
		url     string
		wantIn  string
	}{
		{"timeout", slow, "", "deadline exceeded"},
		{"status 500", status500, "", "status 500"},
		{"garbage body", answer(`<html>oops</html>`), "", "decode answer"},
		{"truncated json", answer(`{"allow":tr`), "", "decode answer"},
		{"no allow field", answer(`{"reason":"x"}`), "", `no "allow" field`},
		{"body too large", huge, "", "larger than"},
		{"connection refused", nil, refused, "connection refused"},
	}
	for _, c := range cases {
		for _, failOpen := range []bool{true, false} {
			name := c.name + map[bool]string{true: "/fail-open", false: "/fail-closed"}[failOpen]
			t.Run(name, func(t *testing.T) {
				url := c.url
				if c.handler != nil {
					url = server(t, c.handler).URL
				}
				v := NewHTTPVerifier(url, 50*time.Millisecond, failOpen, nil)
				start := time.Now()
				d, err := v.Check(context.Background(), req)
				if elapsed := time.Since(start); elapsed > time.Second {
					t.Fatalf("Check took %v despite a 50 ms timeout", elapsed)
				}
				if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), c.wantIn) {
					t.Fatalf("err = %v, want ErrUnavailable mentioning %q", err, c.wantIn)
				}
				if d.Allow != failOpen {
					t.Fatalf("Allow = %v with failOpen=%v", d.Allow, failOpen)
				}
				if !strings.HasPrefix(d.Reason, "verifier unavailable: ") || !strings.Contains(d.Reason, c.wantIn) {
					t.Fatalf("Reason = %q", d.Reason)
				}
			})
		}
	}
}

func TestHTTPVerifierDefaultTimeout(t *testing.T) {
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the client hanging up
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	})
	start := time.Now()
	_, err := NewHTTPVerifier(s.URL, 0, true, nil).Check(context.Background(), req)
	elapsed := time.Since(start)
	if err == nil || elapsed < DefaultTimeout || elapsed > time.Second {
		t.Fatalf("err %v after %v, want a failure after about %v", err, elapsed, DefaultTimeout)
	}
}

func TestHTTPVerifierParentContext(t *testing.T) {
	s := server(t, answer(`{"allow":true}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := NewHTTPVerifier(s.URL, time.Second, false, nil).Check(ctx, req)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) || d.Allow {
		t.Fatalf("Check = %+v, %v", d, err)
	}
}

func TestHTTPVerifierReusesConnections(t *testing.T) {
	var conns atomic.Int32
	s := httptest.NewUnstartedServer(answer(`{"allow":false,"reason":"r"}`))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	v := NewHTTPVerifier(s.URL, time.Second, false, nil)
	for range 50 {
		if _, err := v.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 50 sequential calls, want 1", n)
	}
}
