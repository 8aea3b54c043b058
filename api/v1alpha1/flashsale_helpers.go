package v1alpha1

import (
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The defaults the CRD declares through +kubebuilder:default markers (in
// flashsale_types.go), as Go values for code that reads a FlashSale built in
// Go. The markers are the source: TestSetDefaultsMatchesTheCRD
// (runtime/sale/manifest) fails when these drift from them.
const (
	DefaultWarmupLead     = 5 * time.Minute
	DefaultPaymentTimeout = 15 * time.Minute
	DefaultTokenTTL       = 10 * time.Second
	DefaultRiskTimeout    = 150 * time.Millisecond
	// DefaultDurabilityTimeout bounds a purchase's wait for replicas or AOF.
	DefaultDurabilityTimeout = 250 * time.Millisecond
	DefaultPartitions        = 12
	// DefaultLagThreshold is the backlog one pipeline pod is expected to work off.
	DefaultLagThreshold = 1000
	// DefaultTargetCPUUtilization is what the seckill autoscaler aims for.
	DefaultTargetCPUUtilization = 60
	// DefaultOverbook and DefaultAdmissionTTL are spec.queue's defaults.
	DefaultOverbook     = "1.5"
	DefaultAdmissionTTL = 2 * time.Minute
)

// SaleKey is "namespace/name": the identity of a sale in Redis keys, tokens,
// order numbers and the URL.
func (f *FlashSale) SaleKey() string { return f.Namespace + "/" + f.Name }

// SKU returns the SKU with the given id.
func (f *FlashSale) SKU(id string) (SKU, bool) {
	for _, s := range f.Spec.SKUs {
		if s.ID == id {
			return s, true
		}
	}
	return SKU{}, false
}

// TokenTTL is the configured token lifetime.
func (f *FlashSale) TokenTTL() time.Duration {
	if f.Spec.Token != nil && f.Spec.Token.TTL != nil {
		return f.Spec.Token.TTL.Duration
	}
	return DefaultTokenTTL
}

// PaymentTimeout is how long a buyer has to pay.
func (f *FlashSale) PaymentTimeout() time.Duration {
	if f.Spec.PaymentTimeout != nil {
		return f.Spec.PaymentTimeout.Duration
	}
	return DefaultPaymentTimeout
}

// SetDefaults fills, in a FlashSale built in Go, the fields the API server
// would default from the CRD: a zero value counts as unset, as it does for a
// Go client whose omitempty fields never reach the server. It also puts a sale
// without a namespace in "default", as kubectl does.
//
// A manifest read from a file is not defaulted here but from the CRD itself
// (runtime/sale/manifest); TestSetDefaultsMatchesTheCRD keeps the two equal.
func (f *FlashSale) SetDefaults() {
	s := &f.Spec
	if f.Namespace == "" {
		f.Namespace = "default"
	}
	if s.WarmupLead == nil {
		s.WarmupLead = &metav1.Duration{Duration: DefaultWarmupLead}
	}
	if s.PaymentTimeout == nil {
		s.PaymentTimeout = &metav1.Duration{Duration: DefaultPaymentTimeout}
	}
	if q := s.Queue; q != nil {
		if q.Overbook == "" {
			q.Overbook = DefaultOverbook
		}
		if q.AdmissionTTL == nil {
			q.AdmissionTTL = &metav1.Duration{Duration: DefaultAdmissionTTL}
		}
	}
	for i := range s.SKUs {
		if s.SKUs[i].PerUserLimit == 0 {
			s.SKUs[i].PerUserLimit = 1
		}
		if s.SKUs[i].Buckets == 0 {
			s.SKUs[i].Buckets = 1
		}
	}
	if s.Token == nil {
		s.Token = &Token{}
	}
	if s.Token.TTL == nil {
		s.Token.TTL = &metav1.Duration{Duration: DefaultTokenTTL}
	}
	if s.Risk != nil && s.Risk.Timeout == nil {
		s.Risk.Timeout = &metav1.Duration{Duration: DefaultRiskTimeout}
	}
	if s.Seckill.Replicas == 0 {
		s.Seckill.Replicas = 2
	}
	if s.Seckill.DrainingReplicas == 0 {
		s.Seckill.DrainingReplicas = 1
	}
	if s.Seckill.TargetCPUUtilization == 0 {
		s.Seckill.TargetCPUUtilization = DefaultTargetCPUUtilization
	}
	if s.Worker.Replicas == 0 {
		s.Worker.Replicas = 1
	}
	if s.Worker.LagThreshold == 0 {
		s.Worker.LagThreshold = DefaultLagThreshold
	}
	if s.Teardown.RedisKeys == "" {
		s.Teardown.RedisKeys = CleanupDelete
	}
	if s.Teardown.Topic == "" {
		s.Teardown.Topic = CleanupDelete
	}
	if s.Teardown.StrandedOrders == "" {
		s.Teardown.StrandedOrders = StrandedWait
	}
	if d := s.Redis.Durability; d != nil && d.Timeout == nil {
		d.Timeout = &metav1.Duration{Duration: DefaultDurabilityTimeout}
	}
	if s.Redis.Mode == "" {
		s.Redis.Mode = RedisStandalone
	}
	if s.Kafka != nil && s.Kafka.Partitions == 0 {
		s.Kafka.Partitions = DefaultPartitions
	}
}

// WarmupLead is how long before the start the sale is prepared.
func (f *FlashSale) WarmupLead() time.Duration {
	if f.Spec.WarmupLead != nil {
		return f.Spec.WarmupLead.Duration
	}
	return DefaultWarmupLead
}

// SKUIDs are the ids of the sale's SKUs in spec order.
func (f *FlashSale) SKUIDs() []string {
	ids := make([]string, len(f.Spec.SKUs))
	for i, s := range f.Spec.SKUs {
		ids[i] = s.ID
	}
	return ids
}

// TotalStock is the sum of the SKUs' stock.
func (f *FlashSale) TotalStock() int64 {
	var n int64
	for _, s := range f.Spec.SKUs {
		n += s.Stock
	}
	return n
}

// QueueOpensAt is when buyers may start joining the waiting room:
// spec.queue.prequeueLead (unset: spec.warmupLead) before the start. The
// zero time for a sale without a queue.
func (f *FlashSale) QueueOpensAt() time.Time {
	q := f.Spec.Queue
	if q == nil {
		return time.Time{}
	}
	lead := f.WarmupLead()
	if q.PrequeueLead != nil && q.PrequeueLead.Duration < lead {
		lead = q.PrequeueLead.Duration
	}
	return f.Spec.StartTime.Add(-lead)
}

// Overbook is spec.queue.overbook as a number (1 for a sale without a queue
// or an unparsable value, which the CRD's rules refuse).
func (f *FlashSale) Overbook() float64 {
	q := f.Spec.Queue
	if q == nil {
		return 1
	}
	s := q.Overbook
	if s == "" {
		s = DefaultOverbook
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 1 {
		return 1
	}
	return v
}

// AdmissionTTL is how long an admission that has not bought counts as
// outstanding (spec.queue.admissionTTL).
func (f *FlashSale) AdmissionTTL() time.Duration {
	if q := f.Spec.Queue; q != nil && q.AdmissionTTL != nil && q.AdmissionTTL.Duration > 0 {
		return q.AdmissionTTL.Duration
	}
	return DefaultAdmissionTTL
}
