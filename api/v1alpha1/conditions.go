package v1alpha1

// Condition types of a FlashSale. Each is set on every reconcile; Events use
// the same reasons, so `kubectl describe` reads as a log of the sale.
const (
	// ConditionReady is True while the sale is as its phase intends: warmed
	// and verified before the start (Verified), live (Live, Paused, Draining),
	// or ended cleanly (TornDown). Its reason says what is missing otherwise.
	ConditionReady = "Ready"
	// ConditionConfigValid is False when the sale's configuration cannot be
	// used: a Secret or a key in it is missing, an address is malformed.
	ConditionConfigValid = "ConfigValid"
	// ConditionWarmed is True once Redis holds the stock counters, streams and
	// scripts of this generation of the spec.
	ConditionWarmed = "Warmed"
	// ConditionSchemaReady is True once the orders schema is migrated.
	ConditionSchemaReady = "SchemaReady"
	// ConditionTopicReady is True once the Kafka topics exist (always True
	// without Kafka).
	ConditionTopicReady = "TopicReady"
	// ConditionWorkloadsReady is True when the seckill, worker and rollback
	// pods are ready and the order consumers are assigned.
	ConditionWorkloadsReady = "WorkloadsReady"
	// ConditionDegraded is True while something the sale depends on is failing
	// (Redis, MySQL, Kafka unreachable; dead letters present; pods missing).
	ConditionDegraded = "Degraded"
	// ConditionStockConsistent is the latest audit's conservation law:
	// initial stock = remaining + in flight + created + paid.
	ConditionStockConsistent = "StockConsistent"
	// ConditionTornDown is True once the sale has settled and its workloads,
	// keys and topics were removed per the teardown policy.
	ConditionTornDown = "TornDown"
	// ConditionOrdersStranded is True while valid orders wait only in a
	// dead-letter topic or stream (MySQL refused them): the sale stays
	// Draining until they are stored or abandoned on purpose
	// (spec.teardown.strandedOrders).
	ConditionOrdersStranded = "OrdersStranded"
	// ConditionBucketsSpread is True when the buckets of every SKU split
	// into buckets live on distinct Redis primaries, False (with a Warning
	// Event) when two share one, so the split does not spread the load.
	ConditionBucketsSpread = "BucketsSpread"
	// ConditionPlanned is the sale's plan, set before warm-up and kept up to
	// date: True (PlanFits) when every figure fits its budget, False
	// (PlanDoesNotFit, with a Warning Event) when one does not; the message
	// lists the warnings first, then the figures (flashsale plan prints the same).
	ConditionPlanned = "Planned"
	// ConditionConflict is True while another sale sells one of this sale's
	// SKU ids against the same Redis in an overlapping window and came first:
	// this sale is not warmed until the overlap is gone. The message names the other sale.
	ConditionConflict = "Conflict"
	// ConditionNotificationsDelivered is False while a webhook of
	// spec.notifications keeps failing (the message names it and its last
	// error); set only when the sale has webhooks.
	ConditionNotificationsDelivered = "NotificationsDelivered"
)

// Condition reasons, also used as Event reasons.
const (
	ReasonWaitingForWarmup      = "WaitingForWarmup"
	ReasonSecretMissing         = "SecretMissing"
	ReasonConfigInvalid         = "ConfigInvalid"
	ReasonConfigValid           = "ConfigValid"
	ReasonRedisUnavailable      = "RedisUnavailable"
	ReasonMySQLUnavailable      = "MySQLUnavailable"
	ReasonKafkaUnavailable      = "KafkaUnavailable"
	ReasonWarmed                = "Warmed"
	ReasonStockRaised           = "StockRaised"
	ReasonStockLowered          = "StockLowered"
	ReasonKeysMissing           = "KeysMissing"
	ReasonSchemaMigrated        = "SchemaMigrated"
	ReasonTopicCreated          = "TopicCreated"
	ReasonNoKafka               = "NoKafka"
	ReasonWorkloadsApplied      = "WorkloadsApplied"
	ReasonPodsNotReady          = "PodsNotReady"
	ReasonConsumersNotReady     = "ConsumersNotAssigned"
	ReasonWorkloadsReady        = "WorkloadsReady"
	ReasonLive                  = "Live"
	ReasonVerified              = "Verified"
	ReasonPaused                = "Paused"
	ReasonResumed               = "Resumed"
	ReasonSoldOut               = "SoldOut"
	ReasonDraining              = "Draining"
	ReasonScaled                = "Scaled"
	ReasonDeadLetters           = "DeadLetters"
	ReasonHealthy               = "Healthy"
	ReasonConserved             = "Conserved"
	ReasonNotConserved          = "NotConserved"
	ReasonAuditFailed           = "AuditFailed"
	ReasonNotAudited            = "NotAudited"
	ReasonSettled               = "Settled"
	ReasonTornDown              = "TornDown"
	ReasonTeardownFailed        = "TeardownFailed"
	ReasonCleanupAbandoned      = "CleanupAbandoned"
	ReasonCleanedUp             = "CleanedUp"
	ReasonOrdersStranded        = "OrdersStranded"
	ReasonNoneStranded          = "NoneStranded"
	ReasonOrdersAbandoned       = "OrdersAbandoned"
	ReasonOrdersUndrained       = "OrdersUndrained"
	ReasonStockDebt             = "StockDebt"
	ReasonRedisTooOld           = "RedisTooOld"
	ReasonDurabilityUnavailable = "DurabilityUnavailable"
	ReasonBucketsSpread         = "BucketsSpread"
	ReasonBucketsColocated      = "BucketsColocated"
	// ReasonTransfersStuck: the operator cannot complete or count a split
	// SKU's transfers between buckets, or clear its Holds (a malformed
	// transfer record, a take the receiving bucket refuses). The units of
	// those transfers stay off sale and the final audit waits until a human
	// fixes the record (docs/operator.md, "Buckets").
	ReasonTransfersStuck  = "TransfersStuck"
	ReasonReconcileFailed = "ReconcileFailed"
	ReasonPlanFits        = "PlanFits"
	ReasonPlanDoesNotFit  = "PlanDoesNotFit"
	ReasonOverlappingSale = "OverlappingSale"
	ReasonNoOverlap       = "NoOverlap"
	ReasonClosed          = "Closed"
	ReasonDelivered       = "Delivered"
	ReasonDeliveryFailing = "DeliveryFailing"
	ReasonPhaseChanged    = "PhaseChanged"
)
