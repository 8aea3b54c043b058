// Package risk is the risk hook the seckill API calls before the purchase
// script runs: a Checker decides whether a purchase attempt may proceed.
//
// AllowAll (the default) lets everything through. HTTPVerifier asks an
// external risk service (anti-bot, captcha verification) over HTTP. When the
// service fails (non-200 status, timeout, connection error, unreadable
// answer) HTTPVerifier returns Decision{Allow: failOpen} together with an
// error wrapping ErrUnavailable, so the caller can count the failure: with
// failOpen=true the purchase proceeds without a verdict; with failOpen=false
// it is refused.
package risk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Request is what the risk check sees of a purchase attempt.
type Request struct {
	Sale, SKU, User string
	IP              netip.Addr
	UserAgent       string
	// Captcha is the X-Captcha-Token header.
	Captcha string
}

// Decision is the verdict of a Checker.
type Decision struct {
	Allow  bool
	Reason string
}

// Checker decides whether a purchase attempt may proceed.
type Checker interface {
	Check(ctx context.Context, r Request) (Decision, error)
}

// AllowAll allows every request. It is the default Checker.
type AllowAll struct{}

// Check allows r.
func (AllowAll) Check(context.Context, Request) (Decision, error) {
	return Decision{Allow: true}, nil
}

// DefaultTimeout bounds one call of HTTPVerifier when none is given.
const DefaultTimeout = 150 * time.Millisecond

// maxBody caps how much of the verifier's answer is read.
const maxBody = 4 << 10

// ErrUnavailable is wrapped by every verifier failure.
var ErrUnavailable = errors.New("risk verifier unavailable")

// HTTPVerifier is a Checker that POSTs each request to a risk service:
//
//	{"sale","sku","user","ip","userAgent","captcha"}
//
// and expects 200 with {"allow":bool,"reason":"…","score":float}. A missing
// "allow" field is a failure, not a denial.
type HTTPVerifier struct {
	url      string
	timeout  time.Duration
	failOpen bool
	client   *http.Client
}

var (
	_ Checker = AllowAll{}
	_ Checker = (*HTTPVerifier)(nil)
)

// NewHTTPVerifier returns a verifier calling url. timeout <= 0 means
// DefaultTimeout; it is applied per call through the context. failOpen
// decides the verdict when the service fails. A nil client means a
// dedicated client with a keep-alive transport sized for many concurrent
// calls to one host.
func NewHTTPVerifier(url string, timeout time.Duration, failOpen bool, client *http.Client) *HTTPVerifier {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if client == nil {
		client = &http.Client{Transport: newTransport()}
	}
	return &HTTPVerifier{url: url, timeout: timeout, failOpen: failOpen, client: client}
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

type verifyRequest struct {
	Sale      string `json:"sale"`
	SKU       string `json:"sku"`
	User      string `json:"user"`
	IP        string `json:"ip"`
	UserAgent string `json:"userAgent"`
	Captcha   string `json:"captcha"`
}

type verifyResponse struct {
	Allow  *bool   `json:"allow"`
	Reason string  `json:"reason"`
	Score  float64 `json:"score"`
}

// Check asks the risk service about r. On a service failure it returns
// Decision{Allow: failOpen, Reason: "verifier unavailable: …"} and an error
// wrapping ErrUnavailable.
func (v *HTTPVerifier) Check(ctx context.Context, r Request) (Decision, error) {
	resp, err := v.call(ctx, r)
	if err != nil {
		return Decision{Allow: v.failOpen, Reason: "verifier unavailable: " + err.Error()},
			fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !*resp.Allow && resp.Reason == "" {
		resp.Reason = "denied by risk verifier"
	}
	return Decision{Allow: *resp.Allow, Reason: resp.Reason}, nil
}

func (v *HTTPVerifier) call(ctx context.Context, r Request) (*verifyResponse, error) {
	body, err := json.Marshal(verifyRequest{
		Sale: r.Sale, SKU: r.SKU, User: r.User, IP: ipString(r.IP),
		UserAgent: r.UserAgent, Captcha: r.Captcha,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() {
		// Drain a little so the connection can be reused, then close.
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxBody))
		_ = res.Body.Close()
	}()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", res.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(data) > maxBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxBody)
	}
	var out verifyResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if out.Allow == nil {
		return nil, errors.New(`decode answer: no "allow" field`)
	}
	return &out, nil
}

func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}
