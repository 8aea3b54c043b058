package audit

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names (dashboards and alert rules rely on them).
const (
	MetricConserved   = "flashsale_audit_conserved"
	MetricImbalance   = "flashsale_audit_imbalance_units"
	MetricLost        = "flashsale_audit_lost_orders"
	MetricInFlight    = "flashsale_audit_in_flight_orders"
	MetricDeadLetters = "flashsale_audit_dead_letters"
	MetricStuck       = "flashsale_audit_stuck_orders"
	MetricKafkaLag    = "flashsale_audit_kafka_lag"
	MetricOK          = "flashsale_audit_ok"
	MetricLastRun     = "flashsale_audit_last_run_timestamp_seconds"
	MetricRuns        = "flashsale_audit_runs_total"
)

// Metrics expose the last audit of each sale as gauges. Register
// Collectors() on any registry (the operator's, the worker's) and call
// Observe after every Run.
type Metrics struct {
	conserved, imbalance, lost, inFlight, deadLetters, stuck *prometheus.GaugeVec
	kafkaLag, ok, lastRun                                    *prometheus.GaugeVec
	runs                                                     *prometheus.CounterVec
}

// NewMetrics makes the metrics; nothing is registered yet.
func NewMetrics() *Metrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	return &Metrics{
		conserved:   g(MetricConserved, "1 when, at the last audit, initial = remaining + in flight + created + paid + returning held exactly for the SKU (each order of the Redis snapshot counted once) and no valid order was only in a dead-letter store.", "sale", "sku"),
		imbalance:   g(MetricImbalance, "Initial stock minus what the last audit accounted for: units of LOST orders plus Redis disagreeing with itself (0 when nothing is lost).", "sale", "sku"),
		lost:        g(MetricLost, "Orders admitted in Redis that are nowhere downstream (not in MySQL, stream, Kafka or a dead-letter queue).", "sale", "sku"),
		inFlight:    g(MetricInFlight, "Orders admitted but not durable in MySQL yet (stream, Kafka, dead letters).", "sale", "sku"),
		deadLetters: g(MetricDeadLetters, "Valid orders only in a dead-letter topic or stream, never stored in MySQL (stranded: the audit fails until they are).", "sale", "sku"),
		stuck:       g(MetricStuck, "Stream entries waiting longer than the stuck threshold.", "sale", "sku"),
		kafkaLag:    g(MetricKafkaLag, "The order consumer group's lag on the sale's topic.", "sale"),
		ok:          g(MetricOK, "1 when the last audit held (conserved, nothing lost, Redis consistent).", "sale"),
		lastRun:     g(MetricLastRun, "When the last audit completed (unix seconds).", "sale"),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRuns,
			Help: "Audits run, by result (ok, failed, error)."}, []string{"sale", "result"}),
	}
}

// Collectors lists the metrics, to register on a registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.conserved, m.imbalance, m.lost, m.inFlight, m.deadLetters, m.stuck, m.kafkaLag, m.ok, m.lastRun, m.runs}
}

// Observe records a report.
func (m *Metrics) Observe(r *Report) {
	for _, s := range r.SKUs {
		m.conserved.WithLabelValues(r.SaleKey, s.SKU).Set(b2f(s.Conserved))
		m.imbalance.WithLabelValues(r.SaleKey, s.SKU).Set(float64(s.Imbalance))
		m.lost.WithLabelValues(r.SaleKey, s.SKU).Set(float64(s.Lost))
		m.inFlight.WithLabelValues(r.SaleKey, s.SKU).Set(float64(s.InFlight.Total))
		m.deadLetters.WithLabelValues(r.SaleKey, s.SKU).Set(float64(s.Stranded))
		m.stuck.WithLabelValues(r.SaleKey, s.SKU).Set(float64(s.Stuck))
	}
	m.kafkaLag.WithLabelValues(r.SaleKey).Set(float64(r.KafkaLag))
	m.ok.WithLabelValues(r.SaleKey).Set(b2f(r.OK))
	m.lastRun.WithLabelValues(r.SaleKey).Set(float64(r.At.Unix()))
	result := "ok"
	if !r.OK {
		result = "failed"
	}
	m.runs.WithLabelValues(r.SaleKey, result).Inc()
}

// ObserveError counts an audit that could not complete.
func (m *Metrics) ObserveError(saleKey string) { m.runs.WithLabelValues(saleKey, "error").Inc() }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
