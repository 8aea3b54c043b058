package v1alpha1

import (
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults that the CRD applies through markers; SetDefaults applies the same
// values for manifests read from a file by the data-plane commands, which never
// pass through the API server.
const (
	DefaultWarmupLead     = 5 * time.Minute
	DefaultPaymentTimeout = 15 * time.Minute
	DefaultTokenTTL       = 10 * time.Second
	DefaultRiskTimeout    = 150 * time.Millisecond
	DefaultPartitions     = 12
	// MaxNameLength leaves room for the suffixes of the objects named after a sale.
	MaxNameLength = 50
	// DefaultLagThreshold is the backlog one pipeline pod is expected to work off.
	DefaultLagThreshold = 1000
	// DefaultTargetCPUUtilization is what the seckill autoscaler aims for.
	DefaultTargetCPUUtilization = 60
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

// SetDefaults fills the fields the CRD defaults through markers.
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
	for i := range s.SKUs {
		if s.SKUs[i].PerUserLimit == 0 {
			s.SKUs[i].PerUserLimit = 1
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
	if s.Redis.Mode == "" {
		s.Redis.Mode = RedisStandalone
	}
	if s.Kafka != nil && s.Kafka.Partitions == 0 {
		s.Kafka.Partitions = DefaultPartitions
	}
}

// Validate checks what the CRD's schema and CEL rules check, for manifests
// read from a file. Each problem names the field and says why; all problems
// are reported at once.
func (f *FlashSale) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if f.APIVersion != "" && f.APIVersion != GroupVersion.String() {
		bad("apiVersion", "must be %s, got %q", GroupVersion.String(), f.APIVersion)
	}
	if f.Kind != "" && f.Kind != "FlashSale" {
		bad("kind", "must be FlashSale, got %q", f.Kind)
	}
	if !isDNSLabel(f.Name) {
		bad("metadata.name", "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got %q", f.Name)
	}
	if len(f.Name) > MaxNameLength {
		bad("metadata.name", "must be at most %d characters: the operator names the sale's Deployments and Service after it", MaxNameLength)
	}
	if !isDNSLabel(f.Namespace) {
		bad("metadata.namespace", "must be a DNS-1123 label, got %q", f.Namespace)
	}
	s := &f.Spec
	if s.StartTime.IsZero() {
		bad("spec.startTime", "is required")
	}
	if s.EndTime.IsZero() {
		bad("spec.endTime", "is required")
	}
	if !s.StartTime.IsZero() && !s.EndTime.IsZero() && !s.EndTime.After(s.StartTime.Time) {
		bad("spec.endTime", "must be after spec.startTime")
	}
	if s.WarmupLead != nil && s.WarmupLead.Duration < 0 {
		bad("spec.warmupLead", "must not be negative")
	}
	if s.PaymentTimeout != nil && s.PaymentTimeout.Duration <= 0 {
		bad("spec.paymentTimeout", "must be positive")
	}
	if len(s.SKUs) == 0 {
		bad("spec.skus", "at least one SKU is required")
	}
	seen := map[string]bool{}
	for i, sku := range s.SKUs {
		field := fmt.Sprintf("spec.skus[%d]", i)
		if !isSKUID(sku.ID) {
			bad(field+".id", "must be 1-64 characters of letters, digits, '_', '.', '-', got %q", sku.ID)
		}
		if seen[sku.ID] {
			bad(field+".id", "duplicate SKU id %q", sku.ID)
		}
		seen[sku.ID] = true
		if sku.Stock < 0 {
			bad(field+".stock", "must be >= 0, got %d", sku.Stock)
		}
		if !isPrice(sku.Price) {
			bad(field+".price", "must be a decimal with at most two decimals like \"3999.00\", got %q", sku.Price)
		}
		if sku.PerUserLimit < 1 {
			bad(field+".perUserLimit", "must be >= 1, got %d", sku.PerUserLimit)
		}
	}
	rl := s.RateLimit
	if rl.RequestsPerSecond < 0 || rl.PerUserPerSecond < 0 || rl.PerIPPerSecond < 0 {
		bad("spec.rateLimit", "rates must be >= 0 (0 means unlimited)")
	}
	if s.Token != nil && s.Token.TTL != nil && s.Token.TTL.Duration <= 0 {
		bad("spec.token.ttl", "must be positive")
	}
	if s.Risk != nil {
		if !strings.HasPrefix(s.Risk.VerifierURL, "http://") && !strings.HasPrefix(s.Risk.VerifierURL, "https://") {
			bad("spec.risk.verifierURL", "must be an http(s) URL, got %q", s.Risk.VerifierURL)
		}
		if s.Risk.Timeout != nil && s.Risk.Timeout.Duration <= 0 {
			bad("spec.risk.timeout", "must be positive")
		}
	}
	if s.Redis.Mode != "" && s.Redis.Mode != RedisStandalone && s.Redis.Mode != RedisCluster {
		bad("spec.redis.mode", "must be standalone or cluster, got %q", s.Redis.Mode)
	}
	if s.Seckill.MaxReplicas != 0 && s.Seckill.MaxReplicas < s.Seckill.Replicas {
		bad("spec.seckill.maxReplicas", "must be 0 (no autoscaling) or >= spec.seckill.replicas")
	}
	for _, c := range []struct {
		field  string
		policy CleanupPolicy
	}{{"spec.teardown.redisKeys", s.Teardown.RedisKeys}, {"spec.teardown.topic", s.Teardown.Topic}} {
		if c.policy != "" && c.policy != CleanupDelete && c.policy != CleanupKeep {
			bad(c.field, "must be Delete or Keep, got %q", c.policy)
		}
	}
	if s.Worker.LagThreshold < 0 {
		bad("spec.worker.lagThreshold", "must be >= 1, got %d", s.Worker.LagThreshold)
	}
	if s.Kafka != nil && s.Kafka.Partitions > 0 && s.Worker.Replicas > s.Kafka.Partitions {
		bad("spec.worker.replicas", "must be <= spec.kafka.partitions (%d), got %d", s.Kafka.Partitions, s.Worker.Replicas)
	}
	return errors.Join(errs...)
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func isSKUID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func isPrice(s string) bool {
	whole, frac, hasDot := strings.Cut(s, ".")
	if len(whole) == 0 || len(whole) > 12 || !allDigits(whole) {
		return false
	}
	if hasDot && (len(frac) == 0 || len(frac) > 2 || !allDigits(frac)) {
		return false
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
