// Package loadtest is the load generator of a sale: it speaks the seckill
// HTTP API against a base URL the way real buyers, repeat clickers and bots
// do (token → purchase → poll the order → pay or walk away), in a spike (N
// buyers within a second or two) or at a sustained request rate, reports
// throughput, latency percentiles and outcomes per step, and then checks the
// invariants of the sale: no oversell, nobody over their per-user limit,
// bots refused, every admitted order in MySQL with the right status, and the
// FlashSale's final status matching MySQL with its audit conserved.
//
// `flashsale loadtest` runs it; its tests run it against an in-process
// seckill server, the real Redis and MariaDB.
package loadtest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// Profile is the shape of the load.
type Profile string

// Profiles.
const (
	// Spike sends Users buyers (and their bots) arriving within SpikeWindow.
	Spike Profile = "spike"
	// Sustained keeps Rate requests per second for Duration.
	Sustained Profile = "sustained"
)

// SKU is one SKU the buyers go for, with what the checks need to know of it.
type SKU struct {
	ID string
	// Stock is the units on sale; -1 when unknown (the oversell check is then skipped).
	Stock int64
	// PerUserLimit is how many units one buyer may hold; 0 when unknown.
	PerUserLimit int32
}

// ParseSKUs parses "ID[:STOCK[:LIMIT]],..." (e.g. "1001:5000:1,1002").
// Stock and limit left out are unknown (-1 and 0).
func ParseSKUs(s string) ([]SKU, error) {
	var out []SKU
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, ":")
		if len(f) > 3 || f[0] == "" {
			return nil, fmt.Errorf("--skus: %q is not ID[:STOCK[:LIMIT]]", part)
		}
		sku := SKU{ID: f[0], Stock: -1}
		if len(f) > 1 && f[1] != "" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("--skus: stock of %s must be a whole number >= 0, not %q", f[0], f[1])
			}
			sku.Stock = n
		}
		if len(f) > 2 && f[2] != "" {
			n, err := strconv.ParseInt(f[2], 10, 32)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("--skus: per-user limit of %s must be a whole number >= 1, not %q", f[0], f[2])
			}
			sku.PerUserLimit = int32(n)
		}
		if seen[sku.ID] {
			return nil, fmt.Errorf("--skus: SKU %s named twice", sku.ID)
		}
		seen[sku.ID] = true
		out = append(out, sku)
	}
	return out, nil
}

// SKUsOf returns the SKUs of a sale, with their stock and limits.
func SKUsOf(fs *v1alpha1.FlashSale) []SKU {
	out := make([]SKU, 0, len(fs.Spec.SKUs))
	for _, s := range fs.Spec.SKUs {
		limit := s.PerUserLimit
		if limit == 0 {
			limit = 1 // the API default
		}
		out = append(out, SKU{ID: s.ID, Stock: s.Stock, PerUserLimit: limit})
	}
	return out
}

// MergeSKUs resolves the SKUs to load: those named in want (all of the
// sale's when want is empty), with stock and limit from the sale unless want
// gives them (a checker told a different stock checks against that one).
func MergeSKUs(want []SKU, fs *v1alpha1.FlashSale) ([]SKU, error) {
	if fs == nil {
		return want, nil
	}
	known := SKUsOf(fs)
	if len(want) == 0 {
		return known, nil
	}
	byID := map[string]SKU{}
	for _, s := range known {
		byID[s.ID] = s
	}
	out := make([]SKU, 0, len(want))
	for _, w := range want {
		s, ok := byID[w.ID]
		if !ok {
			return nil, fmt.Errorf("--skus: sale %s has no SKU %q", fs.SaleKey(), w.ID)
		}
		if w.Stock >= 0 {
			s.Stock = w.Stock
		}
		if w.PerUserLimit > 0 {
			s.PerUserLimit = w.PerUserLimit
		}
		out = append(out, s)
	}
	return out, nil
}

// Options shape one load test. BaseURL, Namespace, Name and SKUs are required.
type Options struct {
	// BaseURL is where the seckill API answers, e.g. http://127.0.0.1:8080
	// (kubectl port-forward) or http://10.96.12.34 (the Service's ClusterIP
	// from a node). The sale's endpoints are under /api/v1/sales/{ns}/{name}.
	BaseURL string
	// MetricsURL is where the seckill's /metrics answers: the queue gauges
	// of a queued sale are sampled there. The seckill pods serve it on their
	// metrics port, not the buyers' (the Service's port "metrics", 9090);
	// empty means BaseURL, for a seckill that serves both on one port
	// (flashsale demo, seckill --metrics-addr="").
	MetricsURL      string
	Namespace, Name string
	SKUs            []SKU
	// Sale is the FlashSale, when known (manifest or cluster): its rate
	// limits decide whether hammering bots must see 429, and its access rules
	// whether X-Forwarded-For counts.
	Sale *v1alpha1.FlashSale

	Profile Profile
	// Users is the number of distinct buyers (spike: each arrives once).
	Users int
	// SpikeWindow is the time over which the spike's buyers arrive (default 1s).
	SpikeWindow time.Duration
	// Rate (requests per second, all steps together) and Duration of the
	// sustained profile.
	Rate     float64
	Duration time.Duration
	// Concurrency is how many sessions (virtual buyers) run at once, and so
	// the most requests in flight (default 256).
	Concurrency int
	// RepeatShare of buyers click again after their purchase: once with the
	// same token (a retry: must get the same order) and once with a new one
	// (must get ALREADY_PURCHASED once they hold their limit).
	RepeatShare float64
	// RepeatDelay is how long a repeat clicker waits before clicking again.
	RepeatDelay time.Duration
	// BotShare is the number of bot sessions per buyer (0.05: one bot for
	// every twenty buyers): forged token, no token, a token borrowed from
	// another user, or hammering the token endpoint.
	BotShare float64
	// HammerRequests is how many requests a hammering bot fires back to back (default 50).
	HammerRequests int
	// A sale with a waiting room (spec.queue, or the sale-level endpoint
	// says so) is bought through it: each buyer joins, waits for admission,
	// then asks for a token with the ticket. RejoinShare of buyers join
	// again (the same ticket must come back); ProbeShare ask for a token
	// before they are admitted (must be refused 403 NOT_ADMITTED).
	RejoinShare, ProbeShare float64
	// QueueTimeout is how long a buyer waits for admission before giving
	// up (default 10m); the queue is expected to admit them or answer
	// SOLD_OUT or ENDED well before.
	QueueTimeout time.Duration
	// ThinkTime: an admitted buyer takes up to this long (uniformly drawn)
	// before asking for the token, as people do; while they think, their
	// admission is outstanding.
	ThinkTime time.Duration
	// PayShare of buyers pay once their order is created; the others walk away.
	PayShare float64
	// PaymentSecret is sent as "Authorization: Bearer <secret>" to the pay endpoint.
	PaymentSecret string
	// Timeout bounds each request (default 5s).
	Timeout time.Duration
	// PollInterval and PollTimeout of the order polling (defaults 100ms, 15s).
	PollInterval, PollTimeout time.Duration
	// Seed makes the plan (who buys what, who pays, who is a bot)
	// reproducible; 0 picks one (reported).
	Seed uint64
	// UserPrefix starts every user id (default "lt-" and 6 random hex digits,
	// so that a second run against the same sale has buyers of its own).
	UserPrefix string
	// ForwardedFor sends each synthetic buyer's own address in
	// X-Forwarded-For (honoured only when the sale trusts this client as a
	// proxy: spec.access.trustedProxies).
	ForwardedFor bool
	// Progress receives a line every ProgressEvery (default 1s) while the
	// load runs; nil for none.
	Progress      io.Writer
	ProgressEvery time.Duration
	// Transport replaces the tuned HTTP transport (tests).
	Transport http.RoundTripper

	// Orders is the sale's MySQL order store; nil skips the MySQL checks.
	Orders *orderdb.Store
	// SettleTimeout is how long the checks wait for every admitted order to
	// reach MySQL (default 30s).
	SettleTimeout time.Duration
	// Kube reads the FlashSale; nil skips its checks (KubeNote says why).
	Kube     client.Reader
	KubeNote string
	// WaitEnded waits (up to WaitTimeout, default 30m) for the FlashSale's
	// phase Ended before the final checks.
	WaitEnded   bool
	WaitTimeout time.Duration

	// queued is set by Run when the sale has a waiting room.
	queued bool
}

// SaleKey is "namespace/name".
func (o *Options) SaleKey() string { return o.Namespace + "/" + o.Name }

// urls checks the API's and the metrics' base URLs; the metrics default to
// the API's (a seckill serving both on one port, as `flashsale demo` does).
func (o *Options) urls() error {
	if o.BaseURL == "" {
		return errors.New("no base URL of the seckill API")
	}
	if o.MetricsURL == "" {
		o.MetricsURL = o.BaseURL
	}
	for _, u := range []struct {
		name string
		url  *string
	}{{"base URL", &o.BaseURL}, {"metrics URL", &o.MetricsURL}} {
		*u.url = strings.TrimRight(*u.url, "/")
		if !strings.HasPrefix(*u.url, "http://") && !strings.HasPrefix(*u.url, "https://") {
			return fmt.Errorf("%s %q must start with http:// or https://", u.name, *u.url)
		}
	}
	return nil
}

func (o *Options) defaults() error {
	if err := o.urls(); err != nil {
		return err
	}
	if o.Namespace == "" || o.Name == "" {
		return errors.New("no sale: give its namespace and name")
	}
	if len(o.SKUs) == 0 {
		return errors.New("no SKUs to buy")
	}
	if o.Profile == "" {
		o.Profile = Spike
	}
	switch o.Profile {
	case Spike:
		if o.SpikeWindow <= 0 {
			o.SpikeWindow = time.Second
		}
	case Sustained:
		if o.Rate <= 0 {
			return errors.New("the sustained profile needs a rate > 0 (requests per second)")
		}
		if o.Duration <= 0 {
			return errors.New("the sustained profile needs a duration > 0")
		}
	default:
		return fmt.Errorf("unknown profile %q: spike or sustained", o.Profile)
	}
	if o.Users < 1 {
		return errors.New("users must be at least 1")
	}
	for name, v := range map[string]float64{"repeat share": o.RepeatShare, "pay share": o.PayShare,
		"rejoin share": o.RejoinShare, "probe share": o.ProbeShare} {
		if v < 0 || v > 1 {
			return fmt.Errorf("%s must be between 0 and 1, not %g", name, v)
		}
	}
	if o.BotShare < 0 {
		return fmt.Errorf("bot share must be >= 0, not %g", o.BotShare)
	}
	if o.PayShare > 0 && o.PaymentSecret == "" {
		return errors.New("buyers are to pay but there is no payment secret (or set the pay share to 0)")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 256
	}
	if o.HammerRequests <= 0 {
		o.HammerRequests = 50
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = 15 * time.Second
	}
	if o.RepeatDelay < 0 {
		o.RepeatDelay = 0
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = 30 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 30 * time.Minute
	}
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = 10 * time.Minute
	}
	return nil
}
