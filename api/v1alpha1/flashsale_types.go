package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where a FlashSale is in its life. It is computed from the spec, what
// was observed and the current time; it is never the source of truth.
// +kubebuilder:validation:Enum=Pending;Warming;Active;Paused;Draining;Ended;Failed
type Phase string

// The phases of a sale, in the order a sale normally walks through them.
const (
	// PhasePending means the warm-up window has not opened yet.
	PhasePending Phase = "Pending"
	// PhaseWarming means Redis, the topic, the schema and the pods are being prepared.
	PhaseWarming Phase = "Warming"
	// PhaseActive means purchases are admitted.
	PhaseActive Phase = "Active"
	// PhasePaused means the kill switch is on: purchases are answered 503.
	PhasePaused Phase = "Paused"
	// PhaseDraining means purchases are closed while orders drain and unpaid orders roll back.
	PhaseDraining Phase = "Draining"
	// PhaseEnded means the sale has settled and was torn down.
	PhaseEnded Phase = "Ended"
	// PhaseFailed means the sale cannot proceed without a human.
	PhaseFailed Phase = "Failed"
)

// RedisMode says how to talk to Redis.
// +kubebuilder:validation:Enum=standalone;cluster
type RedisMode string

const (
	// RedisStandalone is a single Redis server (or a proxy in front of several).
	RedisStandalone RedisMode = "standalone"
	// RedisCluster is a Redis Cluster; every key of one SKU shares one hash slot.
	RedisCluster RedisMode = "cluster"
)

// SKU is one item on sale.
type SKU struct {
	// id identifies the SKU within the sale. It appears in Redis keys, order
	// numbers and URLs, so it is limited to letters, digits, '_', '.' and '-'.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+$`
	ID string `json:"id"`

	// stock is the number of units on sale. Raising it mid-sale adds the difference.
	// +required
	// +kubebuilder:validation:Minimum=0
	Stock int64 `json:"stock"`

	// price is the unit price as a decimal string with at most two decimals, e.g. "3999.00".
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9]{1,12}(\.[0-9]{1,2})?$`
	Price string `json:"price"`

	// perUserLimit is how many units one user may hold at once.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	PerUserLimit int32 `json:"perUserLimit,omitempty"`

	// buckets splits the SKU's stock over this many Redis hash tags, so a
	// Redis Cluster runs its purchases on up to this many shards instead of
	// one. Each buyer buys from one home bucket (a hash of the user), so the
	// per-user limit and retried tokens are checked in one place; unsold units
	// move between buckets near sell-out, so none strands. The operator
	// suggests a count in status.skus[].suggestedBuckets. It cannot change
	// once set: orders live in the bucket that admitted them.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.skus[].buckets cannot change once set: orders live in the bucket that admitted them"
	Buckets int32 `json:"buckets,omitempty"`
}

// BucketCount is how many buckets the SKU is split into (at least 1).
func (s SKU) BucketCount() int { return max(int(s.Buckets), 1) }

// RateLimit bounds the request rate of the purchase and token endpoints.
// Zero means unlimited for that dimension.
type RateLimit struct {
	// requestsPerSecond is the rate for the whole sale, shared by all seckill pods.
	// +optional
	// +kubebuilder:validation:Minimum=0
	RequestsPerSecond int64 `json:"requestsPerSecond,omitempty"`

	// perUserPerSecond is the rate allowed to one user.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PerUserPerSecond int32 `json:"perUserPerSecond,omitempty"`

	// perIPPerSecond is the rate allowed to one client IP.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PerIPPerSecond int32 `json:"perIPPerSecond,omitempty"`
}

// Access holds block and allow lists. Block lists win over allow lists; an
// allowed user or IP skips the rate limits and the risk check.
type Access struct {
	// allowUsers are user ids that bypass rate limits and the risk check.
	// +optional
	// +listType=set
	AllowUsers []string `json:"allowUsers,omitempty"`

	// blockUsers are user ids refused with 403 BLOCKED.
	// +optional
	// +listType=set
	BlockUsers []string `json:"blockUsers,omitempty"`

	// allowCIDRs are client networks (a CIDR such as 10.0.0.0/8 or a single IP;
	// at most 10,000) that bypass rate limits and the risk check.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10000
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="spec.access.allowCIDRs: each entry must be a CIDR such as 10.0.0.0/8 or a single IP address"
	AllowCIDRs []string `json:"allowCIDRs,omitempty"`

	// blockCIDRs are client networks (a CIDR or a single IP; at most 10,000)
	// refused with 403 BLOCKED.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10000
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="spec.access.blockCIDRs: each entry must be a CIDR such as 10.0.0.0/8 or a single IP address"
	BlockCIDRs []string `json:"blockCIDRs,omitempty"`

	// trustedProxies are the networks (a CIDR or a single IP; at most 10,000)
	// of the gateways in front of the seckill pods; the client IP is taken
	// from X-Forwarded-For only behind them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10000
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="spec.access.trustedProxies: each entry must be a CIDR such as 10.0.0.0/8 or a single IP address"
	TrustedProxies []string `json:"trustedProxies,omitempty"`
}

// Risk configures an external verifier (captcha, risk score) asked before each purchase.
type Risk struct {
	// verifierURL is the HTTP endpoint that receives a JSON description of the
	// purchase and answers {"allow": bool, "reason": "..."}.
	// +required
	// +kubebuilder:validation:Pattern=`^https?://`
	VerifierURL string `json:"verifierURL"`

	// timeout bounds each call to the verifier: a positive Go duration such as "150ms".
	// +optional
	// +kubebuilder:default="150ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.risk.timeout must be a positive duration such as 150ms or 1s (units: h, m, s, ms)"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// failOpen admits the purchase when the verifier fails or times out.
	// When false, such a purchase is refused with 403 RISK_REJECTED.
	// +optional
	FailOpen bool `json:"failOpen,omitempty"`
}

// Token configures the short-lived path token that a buyer fetches before purchasing.
type Token struct {
	// ttl is how long a token stays valid: a positive Go duration such as "10s".
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.token.ttl must be a positive duration such as 10s or 1m (units: h, m, s, ms)"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// keySecretRef names a Secret key holding the HMAC keys, one per line,
	// current first; a second line keeps the previous key valid during rotation.
	// +optional
	KeySecretRef *corev1.SecretKeySelector `json:"keySecretRef,omitempty"`
}

// Placement puts a workload's pods on the nodes an SRE chose for the sale
// (dedicated, high-priority nodes) and labels them for the cluster's own
// tooling. Each field is copied into the pod template as is.
type Placement struct {
	// nodeSelector the pods must match.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations of the pods (e.g. of dedicated sale nodes' taints).
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity of the pods. Empty keeps the operator's default for the
	// workload (the API pods spread over nodes).
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// topologySpreadConstraints of the pods. A constraint without a
	// labelSelector selects this workload's pods of this sale.
	// +optional
	// +listType=atomic
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// priorityClassName of the pods, so that a sale is not preempted by
	// batch work on a busy night.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// podLabels are extra labels of the pods. The operator's own keys
	// (app.kubernetes.io/*, flashsale.dev/*) are refused: they select the pods.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('app.kubernetes.io/') && !k.startsWith('flashsale.dev/'))",message="podLabels must not set the operator's own keys (app.kubernetes.io/*, flashsale.dev/*)"
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are extra annotations of the pods. The operator's own
	// keys (flashsale.dev/*) are refused.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('flashsale.dev/'))",message="podAnnotations must not set the operator's own keys (flashsale.dev/*)"
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
}

// Seckill sizes the purchase API pods.
type Seckill struct {
	// replicas is the number of API pods pre-scaled before the start, and the autoscaling floor.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	Replicas int32 `json:"replicas,omitempty"`

	// maxReplicas is the autoscaling ceiling; 0 disables autoscaling.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxReplicas int32 `json:"maxReplicas,omitempty"`

	// targetCPUUtilization is the average CPU use (percent of the request)
	// the autoscaler aims for between replicas and maxReplicas.
	// +optional
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	TargetCPUUtilization int32 `json:"targetCPUUtilization,omitempty"`

	// drainingReplicas is how many API pods stay while the sale drains: purchases
	// are closed then, but buyers still poll their results and the shop's
	// payment service still calls the pay endpoint.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	DrainingReplicas int32 `json:"drainingReplicas,omitempty"`

	// resources of each API pod.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Placement of the API pods: nodeSelector, tolerations, affinity,
	// topologySpreadConstraints, priorityClassName, podLabels, podAnnotations.
	Placement `json:",inline"`
}

// Worker sizes the order pipeline pods.
type Worker struct {
	// replicas is the number of pipeline pods before the start and the floor
	// the operator scales back to once the queue has drained; at most the
	// Kafka partition count.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	Replicas int32 `json:"replicas,omitempty"`

	// lagThreshold is the queue backlog (orders) one pipeline pod is expected
	// to work off; while the backlog is larger the operator adds pods, one per
	// lagThreshold orders, up to the Kafka partition count (the way KEDA's
	// Kafka scaler reads lag).
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	LagThreshold int64 `json:"lagThreshold,omitempty"`

	// resources of each pipeline pod.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Placement of the pipeline pods: nodeSelector, tolerations, affinity,
	// topologySpreadConstraints, priorityClassName, podLabels, podAnnotations.
	Placement `json:",inline"`
}

// Rollback sizes the pod that cancels unpaid orders and returns their stock.
type Rollback struct {
	// resources of the rollback pod.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// Placement of the rollback pod: nodeSelector, tolerations, affinity,
	// topologySpreadConstraints, priorityClassName, podLabels, podAnnotations.
	Placement `json:",inline"`
}

// Payment configures the pay endpoint the shop's payment service calls.
type Payment struct {
	// secretRef names a Secret key holding the shared secret the payment
	// service presents ("Authorization: Bearer <secret>"). Without it the pay
	// endpoint answers 503 NOT_CONFIGURED: it is never open to anyone.
	// +optional
	SecretRef *corev1.SecretKeySelector `json:"secretRef,omitempty"`
}

// CleanupPolicy says what happens to a sale's data when it is torn down.
// +kubebuilder:validation:Enum=Delete;Keep
type CleanupPolicy string

const (
	// CleanupDelete removes the data at teardown.
	CleanupDelete CleanupPolicy = "Delete"
	// CleanupKeep leaves the data for a human (or another tool) to read.
	CleanupKeep CleanupPolicy = "Keep"
)

// Teardown says what the operator removes once the sale has ended or the
// FlashSale is deleted. Workloads are always removed; orders in MySQL are
// always kept.
type Teardown struct {
	// redisKeys: Delete removes every Redis key of the sale; Keep leaves them.
	// +optional
	// +kubebuilder:default=Delete
	RedisKeys CleanupPolicy `json:"redisKeys,omitempty"`

	// topic: Delete removes the sale's order and dead-letter topics; Keep leaves them.
	// +optional
	// +kubebuilder:default=Delete
	Topic CleanupPolicy `json:"topic,omitempty"`

	// strandedOrders says what happens to valid orders that wait only in a
	// dead-letter topic or stream (MySQL refused their row) when the sale
	// would otherwise settle. Wait (the default) keeps the sale Draining with
	// the OrdersStranded condition until they are stored (`flashsale audit
	// --repair`, or the operator's own retry once MySQL accepts them).
	// Abandon copies them into the MySQL table seckill_dead_letter, which
	// outlives the sale, and lets teardown go on; the Event counts them.
	// Messages that are not orders at all are always copied there.
	// +optional
	// +kubebuilder:default=Wait
	StrandedOrders StrandedOrdersPolicy `json:"strandedOrders,omitempty"`
}

// StrandedOrdersPolicy says what teardown does with orders only a dead-letter
// store holds.
// +kubebuilder:validation:Enum=Wait;Abandon
type StrandedOrdersPolicy string

const (
	// StrandedWait holds the teardown until every stranded order is in MySQL.
	StrandedWait StrandedOrdersPolicy = "Wait"
	// StrandedAbandon archives them in seckill_dead_letter and tears down.
	StrandedAbandon StrandedOrdersPolicy = "Abandon"
)

// Durability says what a purchase waits for before the buyer is answered
// 202. Redis replicates asynchronously: without a wait, a primary that dies
// right after answering takes the order with it. The wait happens after the
// purchase script ran, on the same connection.
type Durability struct {
	// replicas is how many replicas must acknowledge the purchase (Redis WAIT)
	// before the buyer is answered; 0 does not wait.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16
	Replicas int32 `json:"replicas,omitempty"`

	// aof waits for the primary's append-only file to be fsynced (Redis
	// WAITAOF, Redis 7.2 or later; warm-up refuses an older server with this
	// set, as it does a server without appendonly yes).
	// +optional
	AOF bool `json:"aof,omitempty"`

	// timeout bounds the wait: a Go duration such as "250ms". A purchase whose
	// wait times out is still answered 202 (the order exists on the primary
	// and stays findable by result polling) with "durable": false, and counted
	// in flashsale_seckill_durability_timeouts_total.
	// +optional
	// +kubebuilder:default="250ms"
	// It is at most 2s: the seckill gives up on a purchase after 3 s, and a
	// wait that outlived that would answer 503 instead of "durable": false.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('2s')",message="spec.redis.durability.timeout must be a duration from 1ms to 2s, such as 250ms"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// Redis says where the sale's Redis is.
type Redis struct {
	// addressSecretRef names a Secret key holding the address(es), comma separated
	// (several seed nodes for a cluster). Without it the operator reads the key
	// redis-address of its default endpoints Secret (flashsale-endpoints) in the
	// sale's namespace.
	// +optional
	AddressSecretRef *corev1.SecretKeySelector `json:"addressSecretRef,omitempty"`

	// passwordSecretRef names a Secret key holding the Redis password, if any.
	// +optional
	PasswordSecretRef *corev1.SecretKeySelector `json:"passwordSecretRef,omitempty"`

	// mode is standalone or cluster.
	// +optional
	// +kubebuilder:default=standalone
	Mode RedisMode `json:"mode,omitempty"`

	// durability says what a purchase waits for before its 202 (replicas,
	// AOF fsync). Unset: nothing, the fastest and the least safe against a
	// primary's crash (see the runbook).
	// +optional
	Durability *Durability `json:"durability,omitempty"`
}

// Kafka says where the order topic lives. Without it orders flow from the Redis
// Stream straight to MySQL.
type Kafka struct {
	// brokersSecretRef names a Secret key holding the broker list, comma
	// separated. Without it: the key kafka-brokers of the default endpoints Secret.
	// +optional
	BrokersSecretRef *corev1.SecretKeySelector `json:"brokersSecretRef,omitempty"`

	// partitions of the sale's order topic.
	// +optional
	// +kubebuilder:default=12
	// +kubebuilder:validation:Minimum=1
	Partitions int32 `json:"partitions,omitempty"`
}

// MySQL says where orders are stored.
type MySQL struct {
	// dsnSecretRef names a Secret key holding a go-sql-driver DSN. Without it:
	// the key mysql-dsn of the default endpoints Secret.
	// +optional
	DSNSecretRef *corev1.SecretKeySelector `json:"dsnSecretRef,omitempty"`
}

// Queue is a sale's waiting room. Buyers join it (from prequeueLead before
// startTime until endTime) and get a signed ticket, one per user however
// often they join. Everyone who joined before the start gets a random place
// at the start; later joiners queue in arrival order behind them. Ticket
// holders are admitted in place order at admitPerSecond, and never more
// admissions are outstanding than the remaining stock times overbook, so
// admission slows as stock runs out and stops when it is gone. An admission
// is a session: only a live one (not used, younger than admissionTTL) may
// fetch path tokens; it ends when its buyer's purchase is made, when they
// are refused SOLD_OUT or ALREADY_PURCHASED with no other SKU on sale, or
// when the TTL passes. A refusal of one SKU while another is on sale
// shortens it to 15 s (the buyer may choose the other item; one who leaves
// frees the budget for the next in line).
type Queue struct {
	// prequeueLead is how long before startTime buyers may join: a Go
	// duration such as "10m", at most spec.warmupLead (the pods that take
	// the joins start at warm-up). Unset: spec.warmupLead.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.queue.prequeueLead must be a duration such as 10m (units: h, m, s, ms), not negative"
	PrequeueLead *metav1.Duration `json:"prequeueLead,omitempty"`

	// admitPerSecond is how many ticket holders are admitted per second,
	// sale-wide.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	AdmitPerSecond int32 `json:"admitPerSecond"`

	// overbook bounds outstanding admissions (live: admitted, not used) by
	// the remaining stock times this factor: a decimal from 1 to 10 such as
	// "1.5". Some admitted buyers never buy; a factor above 1 keeps the
	// stock selling without admitting buyers it cannot serve.
	// +optional
	// +kubebuilder:default="1.5"
	// +kubebuilder:validation:Pattern=`^[0-9]{1,2}(\.[0-9]{1,3})?$`
	// +kubebuilder:validation:XValidation:rule="double(self) >= 1.0 && double(self) <= 10.0",message="spec.queue.overbook must be a decimal from 1 to 10, such as 1.5"
	Overbook string `json:"overbook,omitempty"`

	// admissionTTL is how long an unused admission lives: until then the
	// admitted buyer may fetch path tokens and the admission counts against
	// the overbooking budget; after it the admission lapses (no more tokens;
	// a token already fetched still buys until it expires) and its share of
	// the budget goes to the next in line.
	// +optional
	// +kubebuilder:default="2m"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.queue.admissionTTL must be a positive duration such as 2m"
	AdmissionTTL *metav1.Duration `json:"admissionTTL,omitempty"`
}

// Expected is the load the SRE expects, the input of the sale's plan.
type Expected struct {
	// buyers is how many distinct buyers are expected over the sale.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000
	Buyers int64 `json:"buyers,omitempty"`

	// purchasesPerSecond is the purchase attempts per second expected at
	// the peak (the first seconds), sale-wide. Unset: spec.rateLimit.requestsPerSecond.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	PurchasesPerSecond int64 `json:"purchasesPerSecond,omitempty"`

	// skus gives the peak of single SKUs (a hot item); the rest of the
	// sale-wide peak spreads evenly over the SKUs not listed.
	// +optional
	// +listType=map
	// +listMapKey=id
	// +kubebuilder:validation:MaxItems=200
	SKUs []ExpectedSKU `json:"skus,omitempty"`
}

// ExpectedSKU is the peak expected on one SKU.
type ExpectedSKU struct {
	// id of a SKU of spec.skus.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	ID string `json:"id"`

	// purchasesPerSecond expected on this SKU at the peak.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	PurchasesPerSecond int64 `json:"purchasesPerSecond"`
}

// NotificationEvent names one kind of event a webhook may receive.
// +kubebuilder:validation:Enum=Live;SoldOut;Paused;Resumed;Ended;NotConserved;OrdersStranded
type NotificationEvent string

// The events of a sale sent to webhooks. Their CloudEvents type is
// "dev.flashsale." followed by the name in lower case (dev.flashsale.soldout).
const (
	// EventLive: the go-live gate opened; purchases are admitted.
	EventLive NotificationEvent = "Live"
	// EventSoldOut: one SKU sold its last unit (data: the SKU's figures).
	EventSoldOut NotificationEvent = "SoldOut"
	// EventPaused: the kill switch went on.
	EventPaused NotificationEvent = "Paused"
	// EventResumed: the kill switch went off again.
	EventResumed NotificationEvent = "Resumed"
	// EventEnded: the sale settled; data carries the final figures and audit.
	EventEnded NotificationEvent = "Ended"
	// EventNotConserved: an audit found stock not conserved.
	EventNotConserved NotificationEvent = "NotConserved"
	// EventOrdersStranded: valid orders wait only in a dead-letter queue.
	EventOrdersStranded NotificationEvent = "OrdersStranded"
)

// Webhook is one endpoint that receives the sale's events.
type Webhook struct {
	// name identifies the endpoint in status, conditions and metrics.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// url receives each event as an HTTP POST of a structured-mode
	// CloudEvent (application/cloudevents+json).
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))",message="spec.notifications.webhooks[].url must be an http:// or https:// URL"
	URL string `json:"url"`

	// secretRef names the Secret key holding the HMAC-SHA256 key that
	// signs each delivery (the webhook-signature header, Standard Webhooks).
	// +required
	SecretRef corev1.SecretKeySelector `json:"secretRef"`

	// events this endpoint receives; empty: all of them.
	// +optional
	// +listType=set
	Events []NotificationEvent `json:"events,omitempty"`
}

// Notifications are the sale's outgoing webhooks.
type Notifications struct {
	// webhooks receive the sale's events, each at least once.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	Webhooks []Webhook `json:"webhooks"`
}

// FlashSaleSpec is what the shop declares about one sale.
//
// +kubebuilder:validation:XValidation:rule="self.endTime > self.startTime",message="spec.endTime must be after spec.startTime",fieldPath=".endTime"
// +kubebuilder:validation:XValidation:rule="!has(self.kafka) || !has(self.worker) || !has(self.worker.replicas) || !has(self.kafka.partitions) || self.worker.replicas <= self.kafka.partitions",message="spec.worker.replicas must not exceed spec.kafka.partitions: a worker beyond the partition count would sit idle",fieldPath=".worker.replicas"
// +kubebuilder:validation:XValidation:rule="!has(self.queue) || !has(self.queue.prequeueLead) || !has(self.warmupLead) || duration(self.queue.prequeueLead) <= duration(self.warmupLead)",message="spec.queue.prequeueLead must not exceed spec.warmupLead: the pods that take the joins start at warm-up",fieldPath=".queue.prequeueLead"
// +kubebuilder:validation:XValidation:rule="!has(self.seckill) || !has(self.seckill.maxReplicas) || self.seckill.maxReplicas == 0 || self.seckill.maxReplicas >= self.seckill.replicas",message="spec.seckill.maxReplicas must be 0 (no autoscaling) or at least spec.seckill.replicas",fieldPath=".seckill.maxReplicas"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.closed) || !oldSelf.closed || (has(self.closed) && self.closed)",message="spec.closed cannot be set back to false: buyers were told the sale ended",fieldPath=".closed"
// +kubebuilder:validation:XValidation:rule="!has(self.expected) || !has(self.expected.skus) || self.expected.skus.all(e, self.skus.exists(k, k.id == e.id))",message="spec.expected.skus: each id must be a SKU of spec.skus",fieldPath=".expected.skus"
type FlashSaleSpec struct {
	// startTime is when purchases open.
	// +required
	StartTime metav1.Time `json:"startTime"`

	// endTime is when purchases close; it must be after startTime.
	// +required
	EndTime metav1.Time `json:"endTime"`

	// warmupLead is how long before startTime Redis is pre-warmed and pods
	// pre-scaled: a Go duration such as "5m" or "1h30m", not negative.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.warmupLead must be a duration such as 5m or 1h30m (units: h, m, s, ms), not negative"
	WarmupLead *metav1.Duration `json:"warmupLead,omitempty"`

	// paymentTimeout is how long a buyer has to pay; unpaid orders are then
	// cancelled and their stock returned. A positive Go duration such as "15m".
	// +optional
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="spec.paymentTimeout must be a positive duration such as 15m or 1h30m (units: h, m, s, ms)"
	PaymentTimeout *metav1.Duration `json:"paymentTimeout,omitempty"`

	// paused is the kill switch: while true purchases are answered 503 PAUSED.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// closed ends the sale early: once true, purchases close as at endTime
	// (410 ENDED) and the sale drains and settles from the moment the
	// operator saw it (status.closedAt). It cannot be set back to false:
	// buyers were told the sale ended.
	// +optional
	Closed bool `json:"closed,omitempty"`

	// expected is what the SRE expects of the sale (buyers, peak purchase
	// rate). It changes nothing the sale does: the operator and
	// `flashsale plan` size the sale against it (the Planned condition).
	// +optional
	Expected *Expected `json:"expected,omitempty"`

	// notifications sends the sale's milestones and troubles to webhooks
	// as signed CloudEvents.
	// +optional
	Notifications *Notifications `json:"notifications,omitempty"`

	// skus are the items on sale.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=200
	// +kubebuilder:validation:XValidation:rule="self.all(x, self.exists_one(y, y.id == x.id))",message="spec.skus: SKU ids must be unique"
	// +listType=map
	// +listMapKey=id
	SKUs []SKU `json:"skus"`

	// rateLimit bounds request rates.
	// +optional
	RateLimit RateLimit `json:"rateLimit,omitempty"`

	// access holds block and allow lists.
	// +optional
	Access *Access `json:"access,omitempty"`

	// queue puts a waiting room in front of the sale (see Queue); omit it
	// for first come, first served.
	// +optional
	Queue *Queue `json:"queue,omitempty"`

	// risk configures an external verifier asked before each purchase.
	// +optional
	Risk *Risk `json:"risk,omitempty"`

	// token configures the path token.
	// +optional
	// +kubebuilder:default={}
	Token *Token `json:"token,omitempty"`

	// seckill sizes the purchase API pods.
	// +optional
	// +kubebuilder:default={}
	Seckill Seckill `json:"seckill,omitempty"`

	// worker sizes the order pipeline pods.
	// +optional
	// +kubebuilder:default={}
	Worker Worker `json:"worker,omitempty"`

	// redis says where the sale's Redis is.
	// +optional
	// +kubebuilder:default={}
	Redis Redis `json:"redis,omitempty"`

	// kafka says where the order topic lives; omit it to run without Kafka.
	// +optional
	Kafka *Kafka `json:"kafka,omitempty"`

	// mysql says where orders are stored.
	// +optional
	MySQL MySQL `json:"mysql,omitempty"`

	// rollback sizes the rollback pod.
	// +optional
	Rollback Rollback `json:"rollback,omitempty"`

	// payment configures the pay endpoint.
	// +optional
	Payment *Payment `json:"payment,omitempty"`

	// teardown says what is removed once the sale has ended or is deleted.
	// +optional
	// +kubebuilder:default={}
	Teardown Teardown `json:"teardown,omitempty"`

	// image of the data-plane pods (seckill, worker, rollback). Empty means
	// the operator's own image: one binary serves every role.
	// +optional
	Image string `json:"image,omitempty"`

	// imagePullPolicy of the data-plane pods.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
}

// SKUStatus is the live count of one SKU.
type SKUStatus struct {
	// id of the SKU.
	ID string `json:"id"`
	// stock is the declared stock (spec.skus[].stock).
	Stock int64 `json:"stock"`
	// remaining is the stock on sale in Redis now.
	Remaining int64 `json:"remaining"`
	// sold is the number of units buyers hold now: admitted and not
	// cancelled (on their way to MySQL, awaiting payment, or paid). The
	// figures add up as stock = remaining + sold − debt: sold exceeds the
	// declared stock only while a lowering is owed.
	Sold int64 `json:"sold"`
	// paid is the number of paid orders.
	// +optional
	Paid int64 `json:"paid,omitempty"`
	// cancelled is the number of orders cancelled for non-payment.
	// +optional
	Cancelled int64 `json:"cancelled,omitempty"`
	// soldOut is true while remaining is zero.
	// +optional
	SoldOut bool `json:"soldOut,omitempty"`
	// debt is how many units a lowering of the stock could not take back
	// because buyers held them: the next units returned by the rollback pay
	// it off (they leave the sale) before any goes back on sale.
	// +optional
	Debt int64 `json:"debt,omitempty"`
	// suggestedBuckets is the bucket count the operator suggests for this
	// SKU: spec.rateLimit.requestsPerSecond over the per-shard budget of
	// purchases per second (docs/operator.md), capped by the Redis Cluster's
	// primaries. Absent when the sale sets no rate limit.
	// +optional
	SuggestedBuckets int32 `json:"suggestedBuckets,omitempty"`
	// buckets are the figures of each bucket of a SKU split into buckets.
	// +optional
	// +listType=map
	// +listMapKey=bucket
	Buckets []BucketStatus `json:"buckets,omitempty"`
}

// BucketStatus is one bucket of a SKU split into buckets.
type BucketStatus struct {
	// bucket is the bucket's index, from 0.
	Bucket int32 `json:"bucket"`
	// remaining is the stock on sale in this bucket now.
	Remaining int64 `json:"remaining"`
	// sold is the number of units this bucket's buyers hold now.
	Sold int64 `json:"sold"`
	// debt is the part of the SKU's debt this bucket owes.
	// +optional
	Debt int64 `json:"debt,omitempty"`
	// primary is the Redis server (host:port) that holds the bucket.
	// +optional
	Primary string `json:"primary,omitempty"`
}

// FlashSaleStatus is what the operator observed about the sale.
type FlashSaleStatus struct {
	// phase is where the sale is in its life.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// conditions are the latest observations (Ready, Warmed, Degraded, StockConsistent, ...).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// skus are the live counts per SKU.
	// +optional
	// +listType=map
	// +listMapKey=id
	SKUs []SKUStatus `json:"skus,omitempty"`

	// stock is the total configured stock.
	// +optional
	Stock int64 `json:"stock"`
	// remaining is the total stock left (the whole stock until it is warmed).
	// +optional
	Remaining int64 `json:"remaining"`
	// sold is the total number of units admitted.
	// +optional
	Sold int64 `json:"sold"`

	// paid is the total number of paid orders.
	// +optional
	Paid int64 `json:"paid,omitempty"`
	// cancelled is the total number of orders cancelled for non-payment.
	// +optional
	Cancelled int64 `json:"cancelled,omitempty"`

	// queueLag is the number of admitted orders not yet stored in MySQL: the
	// Redis Streams' backlog plus the Kafka consumer group's lag.
	// +optional
	QueueLag int64 `json:"queueLag,omitempty"`

	// queue is the waiting room's figures (a sale with spec.queue).
	// +optional
	Queue *QueueStatus `json:"queue,omitempty"`

	// dataPlane is what the sale's pods were pinned to when it warmed: an
	// operator upgrade during the sale does not roll them.
	// +optional
	DataPlane *DataPlaneStatus `json:"dataPlane,omitempty"`

	// closedAt is when the operator first saw spec.closed: the sale's
	// effective end (purchases closed, settling counted from it).
	// +optional
	ClosedAt *metav1.Time `json:"closedAt,omitempty"`

	// notifications is the outbox of events not yet delivered to every
	// webhook that wants them; an event leaves it once all have answered 2xx.
	// +optional
	Notifications *NotificationsStatus `json:"notifications,omitempty"`

	// workerReplicas is the number of pipeline pods the operator asks for now.
	// +optional
	WorkerReplicas int32 `json:"workerReplicas,omitempty"`

	// audit is the latest audit of Redis against MySQL (the final one once Ended).
	// +optional
	Audit *AuditStatus `json:"audit,omitempty"`

	// openedAt is when the go-live gate opened: everything was verified and
	// buyers were admitted from then on.
	// +optional
	OpenedAt *metav1.Time `json:"openedAt,omitempty"`

	// lastRefreshTime is when the live counts last changed. The operator
	// reads them every few seconds but writes status only on a change, so
	// `kubectl get fs -w` prints a line per change, not per refresh.
	// +optional
	LastRefreshTime *metav1.Time `json:"lastRefreshTime,omitempty"`

	// observedGeneration is the generation last reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// DataPlaneStatus pins a sale's data plane to what the operator deployed
// when the sale warmed.
type DataPlaneStatus struct {
	// image of the seckill, worker and rollback pods, fixed at warm-up.
	Image string `json:"image"`
	// operatorVersion is the version of the operator that pinned it.
	// +optional
	OperatorVersion string `json:"operatorVersion,omitempty"`
}

// NotificationsStatus is the sale's outbox of webhook events. The
// reconciler is its one writer: it appends an event when it sees the
// milestone and removes it once the dispatcher reports every endpoint done,
// so an operator restart re-sends what was not confirmed (at least once).
type NotificationsStatus struct {
	// outbox holds the events awaiting delivery, oldest first (at most 50;
	// beyond that the oldest are dropped and counted in dropped).
	// +optional
	// +listType=atomic
	Outbox []OutboxEvent `json:"outbox,omitempty"`

	// delivered counts events delivered to every endpoint.
	// +optional
	Delivered int64 `json:"delivered,omitempty"`

	// dropped counts events removed undelivered because the outbox was full.
	// +optional
	Dropped int64 `json:"dropped,omitempty"`
}

// OutboxEvent is one event awaiting delivery.
type OutboxEvent struct {
	// id is the CloudEvent id, the same on every retry and endpoint, so a
	// receiver drops a repeat by it.
	ID string `json:"id"`
	// type is the event's kind.
	Type NotificationEvent `json:"type"`
	// time the milestone was seen.
	Time metav1.Time `json:"time"`
	// subject: the SKU id of a SoldOut event; empty otherwise.
	// +optional
	Subject string `json:"subject,omitempty"`
	// data is the event's JSON payload.
	// +optional
	Data string `json:"data,omitempty"`
	// pending names the endpoints that have not confirmed it yet.
	// +optional
	// +listType=set
	Pending []string `json:"pending,omitempty"`
}

// QueueStatus is the waiting room of a sale, read from Redis.
type QueueStatus struct {
	// joined is the number of tickets issued (one per user).
	Joined int64 `json:"joined"`
	// waiting is the number of ticket holders not admitted yet.
	Waiting int64 `json:"waiting"`
	// admitted is the number of ticket holders admitted so far.
	Admitted int64 `json:"admitted"`
	// outstanding is the admissions that have not bought yet and still
	// count against remaining stock times overbook.
	// +optional
	Outstanding int64 `json:"outstanding,omitempty"`
}

// AuditStatus summarises one audit: the conservation law
// initial = remaining + in flight + created + paid, checked per SKU.
type AuditStatus struct {
	// time the audit ran.
	Time metav1.Time `json:"time"`
	// conserved is true when every SKU's stock is accounted for.
	Conserved bool `json:"conserved"`
	// initial is the stock warmed plus every raise, over all SKUs.
	Initial int64 `json:"initial"`
	// accounted is remaining + in flight + created + paid, over all SKUs.
	Accounted int64 `json:"accounted"`
	// inFlight is the number of orders admitted but not yet in MySQL.
	// +optional
	InFlight int64 `json:"inFlight,omitempty"`
	// lost is the number of admitted orders found in neither MySQL nor the pipeline.
	// +optional
	Lost int64 `json:"lost"`
	// stranded is the number of valid orders only a dead-letter topic or
	// stream holds (MySQL refused them): while it is not zero the sale is not
	// conserved and does not tear down (see spec.teardown.strandedOrders).
	// +optional
	Stranded int64 `json:"stranded,omitempty"`
	// abandoned is the number of stranded orders archived in the MySQL table
	// seckill_dead_letter by teardown under strandedOrders: Abandon, or when
	// a deleted sale could not store them in time.
	// +optional
	Abandoned int64 `json:"abandoned,omitempty"`
	// message lists the audit's failures, if any.
	// +optional
	Message string `json:"message,omitempty"`
}

// FlashSale is one timed, limited-stock sale run end to end by the operator.
//
// Once the sale has started (its phase is past Warming), buyers hold orders
// against its SKUs and its clock: a SKU cannot be removed, the start cannot
// move and the end cannot move earlier. A sale Failed before it ever opened
// (a configuration error, such as a SKU added back with another bucket
// count) may still lose a SKU: that is how a human fixes it.
//
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase in ['Pending', 'Warming'] || (oldSelf.status.phase == 'Failed' && !has(oldSelf.status.openedAt)) || oldSelf.spec.skus.all(o, self.spec.skus.exists(n, n.id == o.id))",message="spec.skus: a SKU cannot be removed once the sale has started",fieldPath=".spec.skus"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase in ['Pending', 'Warming'] || self.spec.startTime == oldSelf.spec.startTime",message="spec.startTime cannot change once the sale has started",fieldPath=".spec.startTime"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase in ['Pending', 'Warming'] || self.spec.endTime >= oldSelf.spec.endTime",message="spec.endTime cannot move earlier once the sale has started (pause the sale instead)",fieldPath=".spec.endTime"
//
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 50",message="metadata.name must be at most 50 characters: the operator names the sale's Deployments and Service after it"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1123 label (lower-case letters, digits and '-'; no '.'): the operator names the sale's Service after it"
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fs
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Start",type=string,format=date-time,JSONPath=`.spec.startTime`
// +kubebuilder:printcolumn:name="End",type=string,format=date-time,JSONPath=`.spec.endTime`
// +kubebuilder:printcolumn:name="Stock",type=integer,JSONPath=`.status.stock`
// +kubebuilder:printcolumn:name="Remaining",type=integer,JSONPath=`.status.remaining`
// +kubebuilder:printcolumn:name="Sold",type=integer,JSONPath=`.status.sold`
// +kubebuilder:printcolumn:name="Paid",type=integer,JSONPath=`.status.paid`,priority=1
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.queueLag`,priority=1
// +kubebuilder:printcolumn:name="Waiting",type=integer,JSONPath=`.status.queue.waiting`,priority=1
// +kubebuilder:printcolumn:name="Admitted",type=integer,JSONPath=`.status.queue.admitted`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FlashSale struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the shop declares.
	// +required
	Spec FlashSaleSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status FlashSaleStatus `json:"status,omitempty"`
}

// FlashSaleList is a list of FlashSales.
//
// +kubebuilder:object:root=true
type FlashSaleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FlashSale `json:"items"`
}
