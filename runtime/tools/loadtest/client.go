package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// newTransport is tuned for many short keep-alive requests to one host: an
// idle pool as large as the concurrency (so no connection is closed and
// re-dialled between requests), no compression, HTTP/1.1 over many
// connections (kube-proxy balances a Service per connection; one HTTP/2
// connection would pin every request to one pod), and no proxy from the
// environment (a load test measures the API, not a proxy).
func newTransport(concurrency int, timeout time.Duration) *http.Transport {
	idle := max(concurrency*2, 100)
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: min(timeout, 5*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          idle,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(timeout, 5*time.Second),
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// apiClient sends the sale's requests with one shared http.Client and records
// every answer in stats.
type apiClient struct {
	api     string // BaseURL + /api/v1/sales/{ns}/{name}
	hc      *http.Client
	payAuth string
	xff     bool
	st      *stats
	pace    *pacer
	bufs    sync.Pool
	// slots bounds the requests in flight when sessions are not bounded by
	// the pool of virtual buyers (a queued sale: a buyer waiting for
	// admission holds no request, and thousands wait at once); nil otherwise.
	slots chan struct{}
}

func newClient(o *Options, st *stats) *apiClient {
	rt := o.Transport
	if rt == nil {
		rt = newTransport(o.Concurrency, o.Timeout)
	}
	c := &apiClient{
		api:     o.BaseURL + "/api/v1/sales/" + o.Namespace + "/" + o.Name,
		hc:      &http.Client{Transport: rt, Timeout: o.Timeout},
		payAuth: "Bearer " + o.PaymentSecret,
		xff:     o.ForwardedFor,
		st:      st,
	}
	c.bufs.New = func() any { return bytes.NewBuffer(make([]byte, 0, 512)) }
	if o.Profile == Sustained {
		c.pace = newPacer(o.Rate)
	}
	return c
}

func (c *apiClient) close() { c.hc.CloseIdleConnections() }

// answer is what the API said.
type answer struct {
	outcome
	token, orderNo, state string
	// The waiting room's answers: the ticket, the wait's "status" is in
	// state ("waiting" or "admitted"), when to ask again (pollAfter, or the
	// Retry-After header of a refusal), and the place (0: not drawn yet).
	ticket     string
	pollAfter  time.Duration
	retryAfter time.Duration
	place      int64
}

// body of any answer of the API: an error, a token, an order or a place in
// the waiting room.
type apiBody struct {
	Error            string  `json:"error"`
	Token            string  `json:"token"`
	OrderNo          string  `json:"orderNo"`
	Status           string  `json:"status"`
	Ticket           string  `json:"ticket"`
	PollAfterSeconds float64 `json:"pollAfterSeconds"`
	Place            *int64  `json:"place"`
}

// identity is who sends a request: the X-User-ID and the synthetic client
// address for X-Forwarded-For.
type identity struct{ user, ip string }

// do sends one request and records it under step. Paths are relative to
// the sale's API.
func (c *apiClient) do(ctx context.Context, st *step, method, path string, body []byte, who identity, pay bool) answer {
	if err := c.pace.wait(ctx); err != nil {
		return answer{outcome: outcome{code: "canceled"}}
	}
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
			defer func() { <-c.slots }()
		case <-ctx.Done():
			return answer{outcome: outcome{code: "canceled"}}
		}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.api+path, rd)
	if err != nil {
		return c.fail(st, "bad_request_url", 0)
	}
	h := req.Header
	if body != nil {
		h["Content-Type"] = jsonContentType
	}
	if who.user != "" {
		h["X-User-Id"] = []string{who.user}
	}
	if c.xff && who.ip != "" {
		h["X-Forwarded-For"] = []string{who.ip}
	}
	if pay {
		h["Authorization"] = []string{c.payAuth}
	}
	c.st.inFlight.Add(1)
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.st.inFlight.Add(-1)
		code := "transport_error"
		var ne net.Error
		switch {
		case ctx.Err() != nil:
			code = "canceled"
		case errors.As(err, &ne) && ne.Timeout():
			code = "timeout"
		}
		return c.fail(st, code, time.Since(start))
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	_, rerr := buf.ReadFrom(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, resp.Body) // drain, so the connection is reused
	_ = resp.Body.Close()
	d := time.Since(start)
	c.st.inFlight.Add(-1)
	var v apiBody
	if rerr == nil && buf.Len() > 0 {
		_ = json.Unmarshal(buf.Bytes(), &v)
	}
	c.bufs.Put(buf)
	a := answer{outcome: outcome{status: resp.StatusCode, code: v.Error}, token: v.Token, orderNo: v.OrderNo, state: v.Status,
		ticket: v.Ticket, pollAfter: time.Duration(v.PollAfterSeconds * float64(time.Second)), retryAfter: retryAfter(resp.Header)}
	if v.Place != nil {
		a.place = *v.Place
	}
	if rerr != nil {
		a.code = "body_error"
	}
	label := a.outcome
	if (st.name == stepPoll || st.name == stepWait || st.name == stepJoin) && a.status < 300 && v.Status != "" {
		label.code = v.Status // "200 queued", "200 created", "201 waiting", "200 admitted", ...
	}
	c.record(st, label, d)
	return a
}

// retryAfter reads a Retry-After header in seconds (0 when absent).
func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n * float64(time.Second))
}

func (c *apiClient) fail(st *step, code string, d time.Duration) answer {
	o := outcome{code: code}
	if code != "canceled" {
		c.record(st, o, d)
	}
	return answer{outcome: o}
}

func (c *apiClient) record(st *step, o outcome, d time.Duration) {
	c.st.requests.Add(1)
	st.observe(o, d)
	if isError(o) {
		c.st.errors.Add(1)
	}
	if o.code == "SOLD_OUT" && st.name != stepBot {
		c.st.soldOut.Add(1)
	}
}

var jsonContentType = []string{"application/json"}

// Request bodies, built without encoding/json: SKU ids are
// [A-Za-z0-9_.-] and tokens base64url and dots, so nothing needs escaping.
func tokenBody(sku string) []byte { return []byte(`{"sku":"` + sku + `"}`) }

// ticketTokenBody asks for a path token with a waiting-room ticket (a
// queued sale): tickets are "q1." hex and base64url, nothing to escape.
func ticketTokenBody(sku, ticket string) []byte {
	return []byte(`{"sku":"` + sku + `","ticket":"` + ticket + `"}`)
}

func purchaseBody(sku, token string) []byte {
	b := make([]byte, 0, len(sku)+len(token)+24)
	b = append(b, `{"sku":"`...)
	b = append(b, sku...)
	b = append(b, `","token":"`...)
	b = append(b, token...)
	return append(b, `"}`...)
}

func (c *apiClient) skuState(ctx context.Context, sku string) (remaining int64, soldOut bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.api+"/skus/"+sku, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var v struct {
		Remaining int64  `json:"remaining"`
		SoldOut   bool   `json:"soldOut"`
		Error     string `json:"error"`
		Message   string `json:"message"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&v)
	if resp.StatusCode != http.StatusOK {
		if v.Error == "" {
			return 0, false, errors.New(resp.Status + " (is this the seckill API?)")
		}
		return 0, false, errors.New(strconv.Itoa(resp.StatusCode) + " " + v.Error + ": " + v.Message)
	}
	return v.Remaining, v.SoldOut, nil
}

// pacer spaces requests 1/rate apart across all sessions (the sustained
// profile). Slots are absolute times, so a late wake-up does not lower the
// rate; after an idle spell it restarts from now instead of bursting.
type pacer struct {
	interval int64
	next     atomic.Int64
}

func newPacer(rate float64) *pacer {
	return &pacer{interval: max(int64(float64(time.Second)/rate), 1)}
}

func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	now := time.Now().UnixNano()
	var slot int64
	for {
		n := p.next.Load()
		slot = max(n, now)
		if p.next.CompareAndSwap(n, slot+p.interval) {
			break
		}
	}
	if d := time.Duration(slot - now); d > 0 {
		return sleep(ctx, d)
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// saleInfo is the sale-level GET /api/v1/sales/{ns}/{sale} (what the buyer's
// page reads): the phase, the times and the waiting room, if any.
type saleInfo struct {
	Status     string    `json:"status"`
	SoldOut    bool      `json:"soldOut"`
	StartTime  time.Time `json:"startTime"`
	EndTime    time.Time `json:"endTime"`
	ServerTime time.Time `json:"serverTime"`
	Queue      *struct {
		OpensAt        time.Time `json:"opensAt"`
		AdmitPerSecond float64   `json:"admitPerSecond"`
	} `json:"queue"`
}

// saleInfo reads the sale-level endpoint; ok is false when the API has none
// (an older seckill answers 404): the caller then relies on the manifest.
func (c *apiClient) saleInfo(ctx context.Context) (info *saleInfo, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.api, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, false, errors.New("GET " + c.api + ": " + resp.Status)
	}
	var v saleInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<10)).Decode(&v); err != nil {
		return nil, false, fmt.Errorf("GET %s: %w", c.api, err)
	}
	return &v, true, nil
}
