package controllers

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// Metric names of the operator; the chart's alerts and dashboard use them.
const (
	MetricSalePhase       = "flashsale_operator_sale_phase"
	MetricReconcileErrors = "flashsale_operator_reconcile_errors_total"
	MetricQueueLag        = "flashsale_operator_queue_lag"
	MetricRemaining       = "flashsale_operator_stock_remaining"
	MetricStockConserved  = "flashsale_operator_stock_conserved"
	MetricSaleStartTime   = "flashsale_operator_sale_start_time_seconds"
	MetricStockDebt       = "flashsale_operator_stock_debt"
	MetricOrdersStranded  = "flashsale_operator_orders_stranded"
	// MetricNotifications counts webhook delivery attempts by result
	// (delivered, failed); MetricNotificationsPending is the outbox's size.
	MetricNotifications        = "flashsale_operator_notifications_total"
	MetricNotificationsPending = "flashsale_operator_notifications_pending"
)

var allPhases = []v1alpha1.Phase{
	v1alpha1.PhasePending, v1alpha1.PhaseWarming, v1alpha1.PhaseActive, v1alpha1.PhasePaused,
	v1alpha1.PhaseDraining, v1alpha1.PhaseEnded, v1alpha1.PhaseFailed,
}

// Metrics are the operator's own series, one set per sale.
type Metrics struct {
	phase     *prometheus.GaugeVec
	errors    *prometheus.CounterVec
	lag       *prometheus.GaugeVec
	remaining *prometheus.GaugeVec
	conserved *prometheus.GaugeVec
	startTime *prometheus.GaugeVec
	debt      *prometheus.GaugeVec
	stranded  *prometheus.GaugeVec
	notified  *prometheus.CounterVec
	outbox    *prometheus.GaugeVec
}

// NewMetrics creates the collectors; register them with Collectors.
func NewMetrics() *Metrics {
	sale := []string{"namespace", "name"}
	return &Metrics{
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricSalePhase,
			Help: "1 for the phase each sale is in, 0 for the others."}, append(sale, "phase")),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricReconcileErrors,
			Help: "Reconciles that failed, by sale and reason (RedisUnavailable, MySQLUnavailable, KafkaUnavailable, ...)."}, append(sale, "reason")),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricQueueLag,
			Help: "Orders admitted but not yet stored in MySQL, as the operator last read it."}, sale),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricRemaining,
			Help: "Stock left over all SKUs, as the operator last read it."}, sale),
		conserved: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricStockConserved,
			Help: "1 when the latest audit found the stock conserved, 0 when not."}, sale),
		startTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricSaleStartTime,
			Help: "The sale's spec.startTime (unix seconds); alerts compare it with time()."}, sale),
		debt: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricStockDebt,
			Help: "Units buyers hold beyond a SKU's lowered stock, which the rollback takes out of the sale as their orders are cancelled (status.skus[].debt)."}, append(sale, "sku")),
		stranded: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricOrdersStranded,
			Help: "Valid orders only a dead-letter topic or stream holds (MySQL refused them), as the latest audit found, less those abandoned on purpose; the sale does not end while it is above 0."}, sale),
		notified: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricNotifications,
			Help: "Webhook delivery attempts of spec.notifications, by webhook and result (delivered: answered 2xx; failed: to be retried)."}, append(sale, "webhook", "result")),
		outbox: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricNotificationsPending,
			Help: "Events in the sale's outbox (status.notifications.outbox) not yet delivered to every webhook."}, sale),
	}
}

// Collectors are to be registered with the manager's registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.phase, m.errors, m.lag, m.remaining, m.conserved, m.startTime, m.debt, m.stranded, m.notified, m.outbox}
}

func (m *Metrics) observe(fs *v1alpha1.FlashSale, err error) {
	if err != nil {
		m.errors.WithLabelValues(fs.Namespace, fs.Name, dependencyReason(err)).Inc()
	}
	if fs.Status.Phase == "" {
		return
	}
	for _, p := range allPhases {
		v := 0.0
		if p == fs.Status.Phase {
			v = 1
		}
		m.phase.WithLabelValues(fs.Namespace, fs.Name, string(p)).Set(v)
	}
	m.startTime.WithLabelValues(fs.Namespace, fs.Name).Set(float64(fs.Spec.StartTime.Unix()))
	m.lag.WithLabelValues(fs.Namespace, fs.Name).Set(float64(fs.Status.QueueLag))
	m.remaining.WithLabelValues(fs.Namespace, fs.Name).Set(float64(fs.Status.Remaining))
	for _, sku := range fs.Status.SKUs {
		m.debt.WithLabelValues(fs.Namespace, fs.Name, sku.ID).Set(float64(sku.Debt))
	}
	if a := fs.Status.Audit; a != nil {
		v := 0.0
		if a.Conserved {
			v = 1
		}
		m.conserved.WithLabelValues(fs.Namespace, fs.Name).Set(v)
		m.stranded.WithLabelValues(fs.Namespace, fs.Name).Set(float64(max(a.Stranded-a.Abandoned, 0)))
	}
}

func (m *Metrics) reconcileError(fs *v1alpha1.FlashSale, reason string) {
	m.errors.WithLabelValues(fs.Namespace, fs.Name, reason).Inc()
}

func (m *Metrics) forget(fs *v1alpha1.FlashSale) {
	l := prometheus.Labels{"namespace": fs.Namespace, "name": fs.Name}
	m.phase.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.lag.DeletePartialMatch(l)
	m.remaining.DeletePartialMatch(l)
	m.conserved.DeletePartialMatch(l)
	m.startTime.DeletePartialMatch(l)
	m.debt.DeletePartialMatch(l)
	m.stranded.DeletePartialMatch(l)
	m.notified.DeletePartialMatch(l)
	m.outbox.DeletePartialMatch(l)
}

func (m *Metrics) notificationAttempt(namespace, name, webhook string, delivered bool) {
	result := "failed"
	if delivered {
		result = "delivered"
	}
	m.notified.WithLabelValues(namespace, name, webhook, result).Inc()
}

func (m *Metrics) notificationsPending(fs *v1alpha1.FlashSale, n int) {
	m.outbox.WithLabelValues(fs.Namespace, fs.Name).Set(float64(n))
}
