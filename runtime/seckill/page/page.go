// Package page is the buyer's page of a sale: one static HTML file with its
// script and style inline (no framework, nothing fetched from elsewhere),
// served by seckill at /sales/{ns}/{sale}/. The page carries nothing of the
// sale: it reads the namespace and name from its own address and everything
// else from the API, so a CDN may cache it for every sale alike.
//
// The flow it runs: the sale-level answer (phase, times, server time, stock),
// a countdown by the server's clock to the queue's opening or the start, the
// waiting room (join, place, estimate, admission) for a sale with spec.queue,
// then token, purchase (the button disabled after the click) and polling the
// order until the pipeline made it durable; sold out and ended are shown
// plainly. In production the shop's gateway sets X-User-ID; for demos and
// tests the page sends its ?user= parameter as X-User-ID.
//
// For tests (test/browser) and shops' own checks, the page keeps stable
// element ids (sale-name, status, countdown-label, countdown, join, place,
// ahead, eta, queue-status, skus with pick-<sku> radios, buy, order-no,
// order-sku, order-status, message with its data-code) and tells where the
// buyer is in body's data-state: loading, countdown, joinable, waiting,
// admitted (queued) or open (unqueued), paused, buying, polling, done,
// soldout, ended, failed (a refusal shown; the page retries), error (the
// sale could not be loaded; it retries).
package page

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"
)

//go:embed index.html
var indexHTML []byte

// CacheControl lets browsers and the CDN keep the page a minute: it is the
// same for every sale and every buyer, and it changes only with a release.
const CacheControl = "public, max-age=60"

// served is what every answer carries, computed once.
var served = mustPrepare(indexHTML)

type prepared struct {
	csp  string
	etag string
}

// mustPrepare builds the Content-Security-Policy from the hashes of the
// page's inline script and style, so that the browser runs exactly those and
// nothing injected: no 'unsafe-inline', and the API is reachable only on the
// page's own origin. A page without them is a build mistake: panic at init.
func mustPrepare(html []byte) prepared {
	script, err := inline(html, "script")
	if err != nil {
		panic(err)
	}
	style, err := inline(html, "style")
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(html)
	return prepared{
		csp: strings.Join([]string{
			"default-src 'none'",
			"script-src " + hashSource(script),
			"style-src " + hashSource(style),
			"connect-src 'self'",
			"img-src 'self' data:",
			"base-uri 'none'",
			"form-action 'none'",
			"frame-ancestors 'none'",
		}, "; "),
		etag: `"` + hex.EncodeToString(sum[:8]) + `"`,
	}
}

// inline returns the text of the only <tag>…</tag> element of html, exactly
// as the browser hashes it (everything between the tags).
func inline(html []byte, tag string) ([]byte, error) {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	if bytes.Count(html, open) != 1 || bytes.Count(html, end) != 1 {
		return nil, fmt.Errorf("page: index.html must hold exactly one <%s> element without attributes", tag)
	}
	from := bytes.Index(html, open) + len(open)
	to := bytes.Index(html, end)
	if to < from {
		return nil, fmt.Errorf("page: index.html: </%s> before <%s>", tag, tag)
	}
	return html[from:to], nil
}

func hashSource(b []byte) string {
	sum := sha256.Sum256(b)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// HTML returns the page (for tests and tools; do not modify it).
func HTML() []byte { return indexHTML }

// Handler serves the page for GET and HEAD, whatever the path it is mounted
// at (the mounting decides which sale's addresses reach it).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "use GET here", http.StatusMethodNotAllowed)
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", CacheControl)
		h.Set("Content-Security-Policy", served.csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("ETag", served.etag)
		// ServeContent answers If-None-Match with 304 and HEAD without a
		// body; the zero time sends no Last-Modified (the ETag suffices).
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(indexHTML))
	})
}
