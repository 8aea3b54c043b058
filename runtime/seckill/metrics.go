package seckill

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metric names are part of what dashboards and alert rules rely on.
const (
	MetricRequests        = "flashsale_seckill_requests_total"
	MetricRequestDuration = "flashsale_seckill_request_duration_seconds"
	MetricRedisDuration   = "flashsale_redis_call_duration_seconds"
	MetricStockRemaining  = "flashsale_stock_remaining"
	MetricSoldOut         = "flashsale_sku_sold_out"
	MetricLivePods        = "flashsale_seckill_live_pods"
	MetricTokenRejected   = "flashsale_token_rejections_total"
	MetricRiskChecks      = "flashsale_risk_checks_total"
	MetricOrdersAdmitted  = "flashsale_orders_admitted_total"

	// The waiting room's (spec.queue).
	MetricQueueWaiting     = "flashsale_queue_waiting"
	MetricQueueAdmitted    = "flashsale_queue_admitted"
	MetricQueueOutstanding = "flashsale_queue_outstanding"
	MetricQueueAdmissions  = "flashsale_queue_admissions_total"
	MetricQueueWait        = "flashsale_queue_wait_seconds"
)

// Metrics are the seckill API's Prometheus metrics, on a registry of their own
// so that several servers can live in one test process.
type Metrics struct {
	Registry *prometheus.Registry

	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	redis          *prometheus.HistogramVec
	remaining      *prometheus.GaugeVec
	soldOut        *prometheus.GaugeVec
	livePods       *prometheus.GaugeVec
	tokenRejected  *prometheus.CounterVec
	riskChecks     *prometheus.CounterVec
	ordersAdmitted *prometheus.CounterVec
	// notDurable counts 202s whose durability wait did not confirm them;
	// registered even when the sale asks for no durability, so the alert's
	// series exists (at zero) on every pod.
	notDurable *prometheus.CounterVec

	queueWaiting     *prometheus.GaugeVec
	queueAdmitted    *prometheus.GaugeVec
	queueOutstanding *prometheus.GaugeVec
	admissions       *prometheus.CounterVec
	queueWait        *prometheus.HistogramVec
}

// NewMetrics registers the metrics (and the Go and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Requests answered, by endpoint and outcome (ok or the error code).",
		}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricRequestDuration,
			Help:    "Time to answer a request, by endpoint and outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"endpoint", "outcome"}),
		redis: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricRedisDuration,
			Help:    "Latency of Redis calls made by the seckill API, by operation and result.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op", "result"}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricStockRemaining,
			Help: "Stock left in Redis per SKU, as this pod last saw it.",
		}, []string{"sale", "sku"}),
		soldOut: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricSoldOut,
			Help: "1 while the SKU is sold out, as this pod last saw it.",
		}, []string{"sale", "sku"}),
		livePods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricLivePods,
			Help: "Live seckill pods of the sale sharing its rate limits.",
		}, []string{"sale"}),
		tokenRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricTokenRejected,
			Help: "Purchase tokens refused, by reason (malformed, unknown_key, bad_signature, too_far_ahead, expired).",
		}, []string{"reason"}),
		riskChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRiskChecks,
			Help: "Risk verifier answers: allow, deny, or error (the fail-open/closed choice applied).",
		}, []string{"result"}),
		ordersAdmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricOrdersAdmitted,
			Help: "Orders admitted by the purchase script, per SKU.",
		}, []string{"sale", "sku"}),
	}
	m.notDurable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricDurabilityTimeouts,
		Help: `Admitted orders answered 202 with "durable": false, by reason: replicas or aof (not confirmed within the timeout), error (the wait failed).`,
	}, []string{"sale", "reason"})
	m.addQueue()
	m.Registry.MustRegister(m.requests, m.duration, m.redis, m.remaining, m.soldOut, m.livePods,
		m.tokenRejected, m.riskChecks, m.ordersAdmitted, m.notDurable,
		m.queueWaiting, m.queueAdmitted, m.queueOutstanding, m.admissions, m.queueWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// addQueue builds the waiting room's metrics. The gauges are the queue's
// sale-wide figures as this pod last read them (every pod reports the same:
// aggregate with max, not sum); the counter and the histogram are this
// pod's own admissions (aggregate with sum).
func (m *Metrics) addQueue() {
	m.queueWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricQueueWaiting,
		Help: "Buyers in the waiting room not admitted yet (sale-wide, as this pod last read it).",
	}, []string{"sale"})
	m.queueAdmitted = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricQueueAdmitted,
		Help: "Buyers admitted from the waiting room so far (sale-wide, as this pod last read it).",
	}, []string{"sale"})
	m.queueOutstanding = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricQueueOutstanding,
		Help: "Admissions not used yet and younger than admissionTTL: they count against remaining stock x overbook.",
	}, []string{"sale"})
	m.admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricQueueAdmissions,
		Help: "Buyers admitted from the waiting room by this pod's admitter.",
	}, []string{"sale"})
	m.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricQueueWait,
		Help:    "Time from joining the waiting room to admission (pre-queue joiners: from their join, before the start).",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600},
	}, []string{"sale"})
}

func (m *Metrics) observeRequest(endpoint, outcome string, d time.Duration) {
	m.requests.WithLabelValues(endpoint, outcome).Inc()
	m.duration.WithLabelValues(endpoint, outcome).Observe(d.Seconds())
}

func (m *Metrics) observeRedis(op string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.redis.WithLabelValues(op, result).Observe(d.Seconds())
}
