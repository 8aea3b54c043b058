// Package seckill is the purchase API of one sale: path tokens, the atomic
// purchase, result polling and SKU stock, with rate limits, block and allow
// lists, a risk hook, and a sold-out short-circuit answered from memory.
package seckill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"k8s.io/utils/clock"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/access"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/page"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/ratelimit"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/risk"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
)

// RiskChecker is asked before the purchase script runs; an error means the
// checker failed and its Decision carries the fail-open/closed choice.
type RiskChecker interface {
	Check(ctx context.Context, r risk.Request) (risk.Decision, error)
}

// Config is everything a Server needs. Sale, Redis and Signer are required.
type Config struct {
	Sale   *v1alpha1.FlashSale
	Redis  redis.UniversalClient
	Signer *token.Signer
	// Risk defaults to allowing every purchase.
	Risk RiskChecker
	// Clock defaults to the real clock: the sale window is enforced with the
	// pod's clock.
	Clock clock.Clock
	// PollInterval is how often switches and stock are re-read (default 250 ms).
	PollInterval time.Duration
	// AutoPipeline coalesces concurrent purchases into pipelined Redis calls.
	AutoPipeline bool
	// Batch coalesces concurrent purchases of one SKU bucket into one
	// purchase script call (purchase.Options.Batch): about 40% less Redis
	// CPU per purchase under load (make bench). A sale that asks for durability batches
	// its own way (durable.go) and ignores it.
	Batch bool
	// Refiller refills the buyer's home bucket of a SKU split into buckets
	// when it runs out (default: package buckets' Refiller on Redis).
	Refiller Refiller
	// Durability is what an admitted purchase waits for before its 202
	// (see durable.go); the zero value waits for nothing.
	Durability Durability
	// PodID names this pod in the rate-limit registry (default: hostname + random).
	PodID  string
	Logger *slog.Logger
	// Orders is the MySQL order store the pay endpoint settles payments in.
	// Without it (or without PaymentSecret) the pay endpoint answers 503
	// NOT_CONFIGURED rather than being open.
	Orders *orderdb.Store
	// PaymentSecret is the shared secret the shop's payment service presents
	// as "Authorization: Bearer <secret>". SetPaymentSecret replaces it live.
	PaymentSecret []byte
	// AdmitInterval is how often the admitter of a queued sale runs
	// (default DefaultAdmitInterval).
	AdmitInterval time.Duration
	// Page serves the buyer's page at /sales/{ns}/{sale}/ (default:
	// page.Handler()).
	Page http.Handler
}

// Server is the seckill API of one sale.
type Server struct {
	sale     *v1alpha1.FlashSale
	saleKey  string
	ns, name string
	rdb      redis.UniversalClient
	signer   *token.Signer
	risk     RiskChecker
	clk      clock.Clock
	script   *purchase.Script
	limiter  *ratelimit.Limiter
	// reads limits order lookups (result polling, replay lookups) per user
	// and per IP at the sale's rates, in buckets of their own.
	reads *ratelimit.Limiter
	// queueReads limits joins and waits the same way, in buckets of their
	// own: a buyer polling the queue never starves their order polling.
	queueReads *ratelimit.Limiter
	registry   *ratelimit.Registry
	access     *access.List
	trusted    []netip.Prefix
	state      *saleState
	skus       map[string]v1alpha1.SKU
	metrics    *Metrics
	log        *slog.Logger
	poll       time.Duration
	handler    http.Handler   // the buyers' API and page
	ops        http.Handler   // /metrics, /healthz, /readyz
	durable    *durableClient // nil unless the sale asks for durability
	refiller   Refiller

	orders    *orderdb.Store
	paySecret atomic.Pointer[[]byte]

	// The waiting room (nil queue: the sale has none), see queue.go.
	queue      *queue.Queue
	queueCfg   queue.Config
	admitEvery time.Duration
	done       userBuffer
	shorten    userBuffer // admissions to shorten (queueRefused)
	page       http.Handler
}

// New builds a Server; it does not touch Redis until Start.
func New(cfg Config) (*Server, error) {
	if cfg.Sale == nil || cfg.Redis == nil || cfg.Signer == nil {
		return nil, errors.New("seckill: Sale, Redis and Signer are required")
	}
	s := &Server{
		sale:     cfg.Sale,
		saleKey:  cfg.Sale.SaleKey(),
		ns:       cfg.Sale.Namespace,
		name:     cfg.Sale.Name,
		rdb:      cfg.Redis,
		signer:   cfg.Signer,
		risk:     cfg.Risk,
		clk:      cfg.Clock,
		skus:     map[string]v1alpha1.SKU{},
		metrics:  NewMetrics(),
		log:      cfg.Logger,
		poll:     cfg.PollInterval,
		orders:   cfg.Orders,
		refiller: cfg.Refiller,
		page:     cfg.Page,
	}
	if s.refiller == nil {
		s.refiller = buckets.NewRefiller(cfg.Redis, s.saleKey)
	}
	s.SetPaymentSecret(cfg.PaymentSecret)
	if s.page == nil {
		s.page = page.Handler()
	}
	if s.risk == nil {
		s.risk = risk.AllowAll{}
	}
	if s.clk == nil {
		s.clk = clock.RealClock{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.poll <= 0 {
		s.poll = 250 * time.Millisecond
	}
	for _, sku := range cfg.Sale.Spec.SKUs {
		s.skus[sku.ID] = sku
	}
	var err error
	s.script, err = s.newScript(cfg)
	if err != nil {
		return nil, err
	}
	rl := cfg.Sale.Spec.RateLimit
	s.limiter = ratelimit.New(ratelimit.Rates{
		RequestsPerSecond: float64(rl.RequestsPerSecond),
		PerUserPerSecond:  float64(rl.PerUserPerSecond),
		PerIPPerSecond:    float64(rl.PerIPPerSecond),
	}, s.clk)
	reads := ratelimit.Rates{
		PerUserPerSecond: float64(rl.PerUserPerSecond),
		PerIPPerSecond:   float64(rl.PerIPPerSecond),
	}
	s.reads = ratelimit.New(reads, s.clk)
	s.queueReads = ratelimit.New(reads, s.clk)
	if err := s.setAccess(cfg.Sale.Spec.Access); err != nil {
		return nil, err
	}
	podID := cfg.PodID
	if podID == "" {
		podID = defaultPodID()
	}
	s.registry = ratelimit.NewRegistry(cfg.Redis, keys.ForSale(s.saleKey).Pods, podID, 3*time.Second, s.clk)
	s.state = s.newState(cfg.Sale.Spec.SKUs)
	s.setQueue(cfg)
	s.handler = s.routes()
	s.ops = s.opsRoutes()
	return s, nil
}

// setQueue builds the waiting room of a sale with spec.queue.
func (s *Server) setQueue(cfg Config) {
	qc, ok := queue.ConfigOf(cfg.Sale)
	if !ok {
		return
	}
	// On the real clock the queue follows Redis's clock: a pod whose clock
	// runs ahead must not admit early for everybody. A fake clock (tests)
	// is passed as it is.
	qc.RedisClock = realClock(s.clk)
	s.queueCfg = qc
	s.queue = queue.New(cfg.Redis, s.saleKey, qc)
	s.admitEvery = cfg.AdmitInterval
	if s.admitEvery <= 0 {
		s.admitEvery = DefaultAdmitInterval
	}
}

// realClock says whether clk is the wall clock.
func realClock(clk clock.Clock) bool {
	switch clk.(type) {
	case clock.RealClock, *clock.RealClock:
		return true
	}
	return false
}

// setAccess loads the sale's block and allow lists and trusted proxies.
func (s *Server) setAccess(a *v1alpha1.Access) error {
	if a == nil {
		return nil
	}
	var err error
	if s.access, err = access.NewList(a.AllowUsers, a.BlockUsers, a.AllowCIDRs, a.BlockCIDRs); err != nil {
		return fmt.Errorf("spec.access: %w", err)
	}
	if s.trusted, err = access.ParsePrefixes(a.TrustedProxies); err != nil {
		return fmt.Errorf("spec.access.trustedProxies: %w", err)
	}
	return nil
}

// newState is the pod's cached view of the sale, reporting to the metrics.
func (s *Server) newState(skus []v1alpha1.SKU) *saleState {
	st := newSaleState(s.rdb, s.saleKey, skus)
	st.observe = s.metrics.observeRedis
	st.outEverywhere = s.outEverywhere
	st.onSKU = func(sku string, remaining int64, soldOut bool) {
		s.metrics.remaining.WithLabelValues(s.saleKey, sku).Set(float64(remaining))
		v := 0.0
		if soldOut {
			v = 1
		}
		s.metrics.soldOut.WithLabelValues(s.saleKey, sku).Set(v)
	}
	return st
}

func defaultPodID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// Metrics returns the server's metrics (for tests and the demo).
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler serves the buyers: the API and the sale's page, nothing else.
func (s *Server) Handler() http.Handler { return s.handler }

// OpsHandler serves /metrics, /healthz and /readyz. Serve it on a listener of
// its own (the pod's metrics port) so that whatever exposes the buyers' port
// (an Ingress, a load balancer) cannot expose the metrics or the probes.
func (s *Server) OpsHandler() http.Handler { return s.ops }

// Start loads the scripts, reads the sale state once, and keeps the state,
// the pod registry and the rate-limit share fresh until ctx is done; a
// queued sale's admitter runs until then too.
func (s *Server) Start(ctx context.Context) error {
	if err := s.checkRedis(ctx); err != nil {
		return err
	}
	if err := s.script.Load(ctx); err != nil {
		return err
	}
	if err := s.state.refresh(ctx, s.clk.Now()); err != nil {
		return err
	}
	if s.queue != nil {
		if err := s.queue.Load(ctx); err != nil {
			return fmt.Errorf("load the waiting room's scripts: %w", err)
		}
		go s.runAdmitter(ctx)
	}
	if live, err := s.registry.Beat(ctx); err == nil {
		s.setShare(live)
	}
	go s.state.run(ctx, s.poll, s.clk.Now, func(err error) {
		s.log.Warn("Refreshing sale state failed; serving from the last known state", "sale", s.saleKey, "err", err)
	})
	s.registry.OnError = func(err error) {
		s.log.Warn("Pod heartbeat failed; keeping the last rate-limit share", "sale", s.saleKey, "err", err)
	}
	go s.registry.Run(ctx, time.Second, s.setShare)
	return nil
}

func (s *Server) setShare(live int) {
	s.limiter.SetShare(live)
	s.reads.SetShare(live)
	s.queueReads.SetShare(live)
	s.metrics.livePods.WithLabelValues(s.saleKey).Set(float64(live))
}

// Leave removes this pod from the rate-limit registry so the others take over
// its share at once (call on shutdown).
func (s *Server) Leave(ctx context.Context) error { return s.registry.Leave(ctx) }

// Listen says where Serve listens.
type Listen struct {
	// API is the buyers' address (the pod's http port).
	API string
	// Metrics is the address of /metrics, /healthz and /readyz (the pod's
	// metrics port). Empty serves them on the API's listener, as one port
	// is all a local run (flashsale demo, a laptop) wants.
	Metrics string
	// Ready is told the bound addresses once both listen (metrics is nil
	// when Metrics is empty).
	Ready func(api, metrics net.Addr)
}

// Serve serves the API, and the metrics and probes, on the listeners of l
// until ctx is done, then shuts them down gracefully.
func (s *Server) Serve(ctx context.Context, l Listen) error {
	api, err := net.Listen("tcp", l.API)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.API, err)
	}
	servers := []*http.Server{newHTTPServer(s.handler)}
	listeners := []net.Listener{api}
	var metricsAddr net.Addr
	if l.Metrics == "" {
		servers[0].Handler = s.oneListener()
	} else {
		ml, err := net.Listen("tcp", l.Metrics)
		if err != nil {
			_ = api.Close()
			return fmt.Errorf("metrics listener: listen on %s: %w", l.Metrics, err)
		}
		metricsAddr = ml.Addr()
		servers = append(servers, newHTTPServer(s.ops))
		listeners = append(listeners, ml)
	}
	if l.Ready != nil {
		l.Ready(api.Addr(), metricsAddr)
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.Leave(shutdownCtx)
	for _, srv := range servers {
		if serr := srv.Shutdown(shutdownCtx); err == nil {
			err = serr
		}
	}
	return err
}

// oneListener serves the API and, beside it, the metrics and probes: the
// single port of a local run.
func (s *Server) oneListener() http.Handler {
	mux := http.NewServeMux()
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		mux.Handle(path, s.ops)
	}
	mux.Handle("/", s.handler)
	return mux
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// routes builds the mux. Method checks happen in the handlers so that a wrong
// method gets the contract's JSON error, not net/http's plain text.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/api/v1/sales/{ns}/{sale}/token", s.endpoint("token", http.MethodPost, s.handleToken))
	mux.Handle("/api/v1/sales/{ns}/{sale}/purchase", s.endpoint("purchase", http.MethodPost, s.handlePurchase))
	mux.Handle("/api/v1/sales/{ns}/{sale}/orders/{orderNo}", s.endpoint("order", http.MethodGet, s.handleOrder))
	mux.Handle("/api/v1/sales/{ns}/{sale}/orders/{orderNo}/pay", s.endpoint("pay", http.MethodPost, s.handlePay))
	mux.Handle("/api/v1/sales/{ns}/{sale}/skus/{sku}", s.endpoint("sku", http.MethodGet, s.handleSKU))
	mux.Handle("/api/v1/sales/{ns}/{sale}", s.endpoint("sale", http.MethodGet, s.handleSale, http.MethodHead))
	mux.Handle("/api/v1/sales/{ns}/{sale}/queue", s.endpoint("join", http.MethodPost, s.handleJoin))
	mux.Handle("/api/v1/sales/{ns}/{sale}/queue/{ticket}", s.endpoint("wait", http.MethodGet, s.handleWait))
	mux.Handle("/sales/{ns}/{sale}", s.pageHandler(true))
	mux.Handle("/sales/{ns}/{sale}/{$}", s.pageHandler(false))
	mux.HandleFunc("/", notFound)
	return mux
}

// opsRoutes are the metrics and the probes, for the metrics port.
func (s *Server) opsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", s.handleReady)
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", notFound)
	return mux
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	writeError(w, refuse(http.StatusNotFound, CodeNotFound, "no such endpoint"))
}

// handlerFunc answers a request or returns the refusal to send.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (outcome string, err *apiError)

// privateCacheControl keeps a buyer's answers (tickets, places, tokens,
// orders, refusals) out of shared caches and off disk. A handler whose
// answer is public (the sale, a SKU's stock) sets its own.
const privateCacheControl = "private, no-store"

// endpoint wraps a handler with the method check, the sale check, metrics,
// the default Cache-Control and the JSON error rendering. also lists other
// methods the handler answers (HEAD for a GET: net/http drops the body).
func (s *Server) endpoint(name, method string, h handlerFunc, also ...string) http.Handler {
	allowed := append([]string{method}, also...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set("Cache-Control", privateCacheControl)
		outcome, aerr := s.serve(w, r, allowed, h)
		if aerr != nil {
			writeError(w, aerr)
			outcome = aerr.code
		}
		s.metrics.observeRequest(name, outcome, time.Since(start))
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, methods []string, h handlerFunc) (string, *apiError) {
	if !slices.Contains(methods, r.Method) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		return "", refuse(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use "+methods[0]+" here")
	}
	if r.PathValue("ns") != s.ns || r.PathValue("sale") != s.name {
		return "", errUnknownSale
	}
	return h(w, r)
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	last := time.Unix(0, s.state.lastOK.Load())
	if age := s.clk.Since(last); age > 3*time.Second {
		writeError(w, refuse(http.StatusServiceUnavailable, CodeNotReady, fmt.Sprintf("sale state not refreshed from Redis for %s", age.Truncate(time.Millisecond))))
		return
	}
	if ok, sku := s.state.allWarmed(); !ok {
		writeError(w, refuse(http.StatusServiceUnavailable, CodeNotReady, "SKU "+sku+" is not warmed: run flashsale warm"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
