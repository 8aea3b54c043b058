package rollback

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metric names (dashboards and alert rules rely on them).
const (
	MetricCancelled    = "flashsale_rollback_orders_cancelled_total"
	MetricReturned     = "flashsale_rollback_units_returned_total"
	MetricDebtPaid     = "flashsale_rollback_units_debt_paid_total"
	MetricPassDuration = "flashsale_rollback_pass_duration_seconds"
	MetricErrors       = "flashsale_rollback_errors_total"
	MetricLastSuccess  = "flashsale_rollback_last_success_timestamp_seconds"
)

// Metrics are the rollback loop's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	cancelled    *prometheus.CounterVec
	returned     *prometheus.CounterVec
	debtPaid     *prometheus.CounterVec
	passDuration *prometheus.HistogramVec
	errors       *prometheus.CounterVec
	lastSuccess  *prometheus.GaugeVec
}

// NewMetrics registers the metrics (and the Go and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		cancelled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCancelled,
			Help: "Unpaid orders this process cancelled (won the created → cancelled compare-and-set).",
		}, []string{"sale", "sku"}),
		returned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricReturned,
			Help: "Units of stock this process returned to Redis.",
		}, []string{"sale", "sku"}),
		debtPaid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDebtPaid,
			Help: "Units returned that paid off a lowering of the stock (they left the sale instead of going back on sale); counted in " + MetricReturned + " too.",
		}, []string{"sale", "sku"}),
		passDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricPassDuration,
			Help:    "Time one rollback pass (finish + cancel + return) took.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"sale"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricErrors,
			Help: "Failed rollback steps, by step (list_unreturned, list_expired, cancel, release, mark_returned).",
		}, []string{"sale", "step"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricLastSuccess,
			Help: "When the last rollback pass completed without error (unix seconds).",
		}, []string{"sale"}),
	}
	m.Registry.MustRegister(m.cancelled, m.returned, m.debtPaid, m.passDuration, m.errors, m.lastSuccess,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
