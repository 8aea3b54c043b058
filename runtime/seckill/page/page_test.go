package page_test

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/page"
)

func get(t *testing.T, method, path string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	page.Handler().ServeHTTP(rec, req)
	return rec.Result()
}

// TestServesThePageCacheable: the page is HTML, cacheable by a CDN, and
// carries the headers that keep a browser from sniffing or framing it.
func TestServesThePageCacheable(t *testing.T) {
	res := get(t, http.MethodGet, "/sales/shop/phones/", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d", res.StatusCode)
	}
	want := map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "public, max-age=60",
		"X-Content-Type-Options": "nosniff",
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
	}
	for k, v := range want {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if string(body) != string(page.HTML()) {
		t.Fatalf("the body is not the embedded page (%d bytes, want %d)", len(body), len(page.HTML()))
	}
	if res.Header.Get("ETag") == "" {
		t.Fatal("no ETag: a CDN or browser cannot revalidate the page cheaply")
	}
}

// TestCSPAllowsExactlyTheInlineCode: the policy names the hashes of the
// page's own script and style (the browser refuses them otherwise: the page
// would be dead) and nothing that lets other code run or talk elsewhere.
func TestCSPAllowsExactlyTheInlineCode(t *testing.T) {
	csp := get(t, http.MethodGet, "/", nil).Header.Get("Content-Security-Policy")
	html := string(page.HTML())
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<`+tag+`>(.*?)</`+tag+`>`).FindAllStringSubmatch(html, -1)
		if len(m) != 1 {
			t.Fatalf("%d <%s> elements, want 1", len(m), tag)
		}
		sum := sha256.Sum256([]byte(m[0][1]))
		src := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, src) {
			t.Errorf("CSP %q lacks %q", csp, src)
		}
	}
	for _, part := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, part) {
			t.Errorf("CSP %q lacks %q", csp, part)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP %q allows %q", csp, bad)
		}
	}
}

// TestPageIsSelfContained: no external scripts, styles, fonts or calls (the
// page must work offline behind a CDN), no inline handlers or style
// attributes the CSP would block, and the stable ids the browser test and
// shops' own tests rely on.
func TestPageIsSelfContained(t *testing.T) {
	// The one link is an empty icon, so that browsers do not ask the
	// sale's API servers for /favicon.ico.
	html := strings.Replace(string(page.HTML()), `<link rel="icon" href="data:,">`, "", 1)
	for _, bad := range []string{"http://", "https://", "src=", "<link", "@import", " style=", " onclick=", " onload=", "eval("} {
		if strings.Contains(html, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	for _, id := range []string{"sale-name", "status", "countdown", "countdown-label", "join", "place", "ahead", "eta",
		"queue-status", "skus", "buy", "order-no", "order-status", "message"} {
		if !strings.Contains(html, `id="`+id+`"`) {
			t.Errorf("no element with id %q", id)
		}
	}
	if !strings.Contains(html, `"/api/v1/sales/"`) {
		t.Error("the page does not call the sale's API on its own origin")
	}
}

func TestRevalidationAndMethods(t *testing.T) {
	etag := get(t, http.MethodGet, "/", nil).Header.Get("ETag")
	if res := get(t, http.MethodGet, "/", http.Header{"If-None-Match": {etag}}); res.StatusCode != http.StatusNotModified {
		t.Errorf("GET with If-None-Match %s: %d, want 304", etag, res.StatusCode)
	}
	res := get(t, http.MethodHead, "/", nil)
	if n, _ := io.Copy(io.Discard, res.Body); res.StatusCode != http.StatusOK || n != 0 {
		t.Errorf("HEAD: %d with %d bytes, want 200 without a body", res.StatusCode, n)
	}
	res = get(t, http.MethodPost, "/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q, want 405 Allow \"GET, HEAD\"", res.StatusCode, res.Header.Get("Allow"))
	}
}
