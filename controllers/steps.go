package controllers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/pipeline/lag"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
)

// reconcileConnections reads the sale's Secrets and connects to its
// dependencies, through connections shared with the other sales.
func (r *FlashSaleReconciler) reconcileConnections(ctx context.Context, s *scope) error {
	c, err := r.connect(ctx, s.sale, s.now)
	var cfgErr *ConfigError
	if errors.As(err, &cfgErr) {
		r.setCondition(s, v1alpha1.ConditionConfigValid, metav1.ConditionFalse, cfgErr.Reason, cfgErr.Msg)
		return err
	}
	r.setCondition(s, v1alpha1.ConditionConfigValid, metav1.ConditionTrue, v1alpha1.ReasonConfigValid, "Secrets found and dependencies reachable")
	if err != nil {
		return err
	}
	s.c, s.connected = c, true
	return nil
}

// liveFigures are what observe read this reconcile.
type liveFigures struct {
	// remaining and initial per SKU id, from Redis; missing SKUs have no keys.
	remaining, initial map[string]int64
	counts             map[string]*orderdb.Counts
	created            int64
	unreturned         bool
	streamLag          int64
	kafka              *lag.KafkaLag
	// total queue lag: the streams' backlog plus Kafka's.
	total int64
	// debt per SKU id, from Redis: units a lowering still owes (absent: none).
	debt map[string]int64
	// The three maps above sum a split SKU's buckets. buckets holds each
	// bucket's figures of the split SKUs, bucket 0 first; inFlight the units
	// given by one of their buckets and not yet taken in by another.
	buckets  map[string][]v1alpha1.BucketStatus
	inFlight map[string]int64
	// problems are the split SKUs' trouble this poll (v1alpha1.ReasonTransfersStuck).
	problems []string
	// suggested is status.skus[].suggestedBuckets (0: no rate, none).
	suggested int32
	// queue is the waiting room's figures: nil for a sale without
	// spec.queue, or whose queue records are not in Redis.
	queue *v1alpha1.QueueStatus
}

// reconcileRedis holds the sale shut until the go-live gate opens, warms the
// SKUs that need it (never overwriting a live counter), and sets the pause
// and close switches the seckill pods poll.
func (r *FlashSaleReconciler) reconcileRedis(ctx context.Context, s *scope) error {
	sale, rdb := s.sale, s.c.rdb
	saleKey := sale.SaleKey()
	opened := s.fs.Status.OpenedAt != nil
	if !opened {
		// Before anything else: the pods must never admit a buyer by their
		// own clock while the operator is still verifying.
		if err := switches.SetHeld(ctx, rdb, saleKey, true); err != nil {
			return depErr(v1alpha1.ReasonRedisUnavailable, err)
		}
	}
	if err := r.checkRedis(ctx, s); err != nil { // version and durability (redischeck.go)
		return err
	}
	missing, err := missingSKUs(ctx, rdb, sale)
	if err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	known := map[string]bool{}
	for _, st := range s.fs.Status.SKUs {
		known[st.ID] = true
	}
	var lost []string
	toWarm := sale.DeepCopy()
	toWarm.Spec.SKUs = nil
	for _, sku := range sale.Spec.SKUs {
		switch {
		case opened && known[sku.ID] && missing[sku.ID]:
			// Buyers hold orders against this counter: re-creating it at
			// full stock would sell the units a second time.
			lost = append(lost, sku.ID)
		case missing[sku.ID] || !warmedAt(s.fs, s.fs.Generation):
			toWarm.Spec.SKUs = append(toWarm.Spec.SKUs, sku)
		}
	}
	if len(toWarm.Spec.SKUs) > 0 {
		res, err := warm.Warm(ctx, rdb, toWarm)
		if errors.Is(err, warm.ErrBucketCount) {
			// A SKU removed and added back with another bucket count: its
			// units live in the buckets it was warmed with. A human must put
			// the count back (warm touched nothing).
			msg := "spec.skus[].buckets: " + err.Error()
			r.setCondition(s, v1alpha1.ConditionConfigValid, metav1.ConditionFalse, v1alpha1.ReasonConfigInvalid, msg)
			return &ConfigError{Reason: v1alpha1.ReasonConfigInvalid, Msg: msg}
		}
		if err != nil {
			return depErr(v1alpha1.ReasonRedisUnavailable, err)
		}
		for _, sk := range res.SKUs {
			r.stockChanged(s.fs, sk)
		}
	}
	if len(lost) > 0 {
		msg := fmt.Sprintf("stock counters of SKU %s are gone from Redis mid-sale; they are not re-created (that would sell sold units again): restore Redis, then run `flashsale audit --repair`",
			strings.Join(lost, ", "))
		r.setCondition(s, v1alpha1.ConditionWarmed, metav1.ConditionFalse, v1alpha1.ReasonKeysMissing, msg)
		s.degraded = []string{v1alpha1.ReasonKeysMissing, msg}
	} else {
		r.setCondition(s, v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed,
			fmt.Sprintf("%d SKUs (%d units) in Redis, order streams and purchase script ready", len(sale.Spec.SKUs), sale.TotalStock()))
	}
	if err := switches.SetPaused(ctx, rdb, saleKey, sale.Spec.Paused); err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	if err := switches.SetClosed(ctx, rdb, saleKey, !s.now.Before(s.window.end)); err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	return nil
}

func warmedAt(fs *v1alpha1.FlashSale, gen int64) bool {
	c := apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionWarmed)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == gen
}

// missingSKUs are the SKUs a stock counter of which is absent (of any of
// its buckets, for a split SKU), read in one pipeline of one-key EXISTS: the
// buckets have their own hash tags, so one EXISTS of them all would be
// CROSSSLOT on a cluster. A split SKU missing one bucket counts as missing:
// warming creates the absent buckets only (never resetting a live one), and
// mid-sale a bucket gone is a loss like a whole counter gone.
func missingSKUs(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale) (map[string]bool, error) {
	pipe := rdb.Pipeline()
	cmds := make([][]*redis.IntCmd, len(sale.Spec.SKUs))
	for i, sku := range sale.Spec.SKUs {
		for _, k := range keys.Buckets(sale.SaleKey(), sku.ID, sku.BucketCount()) {
			cmds[i] = append(cmds[i], pipe.Exists(ctx, k.Stock))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("check stock keys: %w", err)
	}
	out := map[string]bool{}
	for i, sku := range sale.Spec.SKUs {
		for _, c := range cmds[i] {
			if c.Val() == 0 {
				out[sku.ID] = true
			}
		}
	}
	return out, nil
}

// reconcileSchema migrates the orders schema from the operator itself, not
// from a Job: the operator already holds a MySQL connection for the live
// counts and the audit, goose's migrations are idempotent and take a lock,
// and a Job would add a pod start (seconds) to every warm-up.
func (r *FlashSaleReconciler) reconcileSchema(ctx context.Context, s *scope) error {
	if apimeta.IsStatusConditionTrue(s.fs.Status.Conditions, v1alpha1.ConditionSchemaReady) {
		return nil
	}
	if _, err := orderdb.Migrate(ctx, s.c.db); err != nil {
		return depErr(v1alpha1.ReasonMySQLUnavailable, err)
	}
	v, err := orderdb.Version(ctx, s.c.db)
	if err != nil {
		return depErr(v1alpha1.ReasonMySQLUnavailable, err)
	}
	r.setCondition(s, v1alpha1.ConditionSchemaReady, metav1.ConditionTrue, v1alpha1.ReasonSchemaMigrated,
		fmt.Sprintf("orders schema at version %d", v))
	return nil
}

// reconcileTopic creates the order and dead-letter topics through sarama.
func (r *FlashSaleReconciler) reconcileTopic(_ context.Context, s *scope) error {
	if s.sale.Spec.Kafka == nil {
		r.setCondition(s, v1alpha1.ConditionTopicReady, metav1.ConditionTrue, v1alpha1.ReasonNoKafka,
			"no spec.kafka: orders flow from the Redis Streams straight to MySQL")
		return nil
	}
	c := apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionTopicReady)
	if c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonTopicCreated && c.ObservedGeneration == s.fs.Generation {
		return nil
	}
	saleKey := s.sale.SaleKey()
	topic, partitions := keys.Topic(saleKey), s.sale.Spec.Kafka.Partitions
	if err := kafkautil.EnsureTopic(s.c.kafka, topic, partitions); err != nil {
		return depErr(v1alpha1.ReasonKafkaUnavailable, err)
	}
	if err := kafkautil.EnsureTopic(s.c.kafka, keys.DeadLetterTopic(saleKey), 1); err != nil {
		return depErr(v1alpha1.ReasonKafkaUnavailable, err)
	}
	r.setCondition(s, v1alpha1.ConditionTopicReady, metav1.ConditionTrue, v1alpha1.ReasonTopicCreated,
		fmt.Sprintf("topic %s with %d partitions and dead-letter topic %s", topic, partitions, keys.DeadLetterTopic(saleKey)))
	return nil
}

// reconcileTokenSecret makes sure every seckill pod signs tokens with the
// same key when the sale names no key Secret: the operator generates one,
// once, and never rotates it under a running sale.
func (r *FlashSaleReconciler) reconcileTokenSecret(ctx context.Context, s *scope) error {
	if tokenRef(s.fs) != nil {
		return nil
	}
	name := types.NamespacedName{Namespace: s.fs.Namespace, Name: TokenSecretName(s.fs)}
	var sec corev1.Secret
	err := r.APIReader.Get(ctx, name, &sec)
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read token Secret: %w", err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return fmt.Errorf("generate token key: %w", err)
	}
	sec = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name.Name, Namespace: name.Namespace, Labels: Labels(s.fs, "token")},
		Data:       map[string][]byte{tokenKeysKey: []byte("hex:" + hex.EncodeToString(buf) + "\n")},
	}
	if err := controllerutil.SetControllerReference(s.fs, &sec, r.Scheme); err != nil {
		return err
	}
	if err := r.Create(ctx, &sec); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create token Secret: %w", err)
	}
	return nil
}

// observe reads the live counts: stock from Redis, orders by status from
// MySQL, the queue lag from the streams and Kafka. The summary writes them
// to status; from them follow whether the sale sold out and whether it
// settled.
func (r *FlashSaleReconciler) observe(ctx context.Context, s *scope) error {
	sale, saleKey := s.sale, s.sale.SaleKey()
	f := &liveFigures{}
	if err := readRedisFigures(ctx, s.c.rdb, sale, f); err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	if err := readOrders(ctx, s.c.orders, saleKey, f); err != nil {
		return depErr(v1alpha1.ReasonMySQLUnavailable, err)
	}
	if err := readQueueLag(ctx, s.c, sale, f); err != nil {
		if errors.Is(err, lag.ErrNoTopic) {
			// Deleted under us: the next reconcile creates it again.
			clearCondition(s, v1alpha1.ConditionTopicReady)
		}
		return err
	}
	s.live = f
	warnBuckets(s, f.problems)
	r.setBucketsSpread(s)
	s.obs.SoldOut = f.soldOut(sale)
	s.obs.Settled = !s.now.Before(s.window.settleFrom) && f.drained()
	return nil
}

// readRedisFigures reads what status shows of Redis: the stock of every
// SKU and bucket, the units in flight between buckets, where the buckets
// live, the bucket count to suggest and the waiting room's figures. It
// first tends the split SKUs' buckets (tendBuckets), so the units of
// transfers a crash left half-done count where they belong. A split SKU's
// own trouble goes to f.problems.
func readRedisFigures(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, f *liveFigures) error {
	f.problems = tendBuckets(ctx, rdb, sale)
	if err := readSteadyStock(ctx, rdb, sale, f); err != nil {
		return err
	}
	if err := readPrimaries(ctx, rdb, sale, f); err != nil {
		return err
	}
	if err := readSuggestion(ctx, rdb, sale, f); err != nil {
		return err
	}
	return readQueue(ctx, rdb, sale, f)
}

// readQueue reads the waiting room of a sale with spec.queue (one round
// trip: the queue's records share the sale-wide hash tag). The warm-up
// creates them (a spec change warms again, so spec.queue added later gets
// them too); records absent all the same (Redis lost them) show no figures
// rather than zeros that would claim nobody joined.
func readQueue(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, f *liveFigures) error {
	if sale.Spec.Queue == nil {
		return nil
	}
	q, ok, err := queue.Read(ctx, rdb, sale.SaleKey())
	if err != nil {
		return fmt.Errorf("read the waiting room: %w", err)
	}
	if ok {
		f.queue = &v1alpha1.QueueStatus{Joined: q.Joined, Waiting: q.Waiting, Admitted: q.Admitted, Outstanding: q.Outstanding}
	}
	return nil
}

// stockCmds are the reads of one bucket's counters.
type stockCmds struct{ stock, initial, debt *redis.StringCmd }

// readStock reads every bucket's remaining stock, initial and debt in one
// pipeline of one-key GETs (so a cluster sends each to its shard), into
// f's per-SKU sums and, for split SKUs, per-bucket figures. A SKU none of
// whose buckets has a counter is missing from f.remaining, one without an
// initial from f.initial, and one without debt from f.debt.
func readStock(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale, f *liveFigures) error {
	saleKey := sale.SaleKey()
	pipe := rdb.Pipeline()
	cmds := make([][]stockCmds, len(sale.Spec.SKUs))
	for i, sku := range sale.Spec.SKUs {
		for _, k := range keys.Buckets(saleKey, sku.ID, sku.BucketCount()) {
			cmds[i] = append(cmds[i], stockCmds{pipe.Get(ctx, k.Stock), pipe.Get(ctx, k.Initial), pipe.Get(ctx, k.Debt)})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	f.remaining, f.initial, f.debt = map[string]int64{}, map[string]int64{}, map[string]int64{}
	f.buckets = map[string][]v1alpha1.BucketStatus{}
	for i, sku := range sale.Spec.SKUs {
		for b, c := range cmds[i] {
			bs := f.addBucket(sku.ID, c)
			if sku.BucketCount() > 1 {
				bs.Bucket = int32(b)
				f.buckets[sku.ID] = append(f.buckets[sku.ID], bs)
			}
		}
	}
	return nil
}

// addBucket adds one bucket's counters to its SKU's sums and returns the
// bucket's own figures (sold: the units its buyers hold, initial − stock).
func (f *liveFigures) addBucket(sku string, c stockCmds) v1alpha1.BucketStatus {
	var bs v1alpha1.BucketStatus
	if n, err := c.stock.Int64(); err == nil {
		f.remaining[sku] += n
		bs.Remaining = n
	}
	if n, err := c.initial.Int64(); err == nil {
		f.initial[sku] += n
		bs.Sold = n - bs.Remaining
	}
	if n, err := c.debt.Int64(); err == nil && n != 0 {
		f.debt[sku] += n
		bs.Debt = n
	}
	return bs
}

// readOrders reads the orders by SKU and status, and whether any order
// still waits for its stock to be returned.
func readOrders(ctx context.Context, orders *orderdb.Store, saleKey string, f *liveFigures) error {
	counts, err := orders.CountBySKU(ctx, saleKey)
	if err != nil {
		return err
	}
	f.counts = counts
	for _, c := range counts {
		f.created += c.Created
	}
	un, err := orders.Unreturned(ctx, saleKey, 1)
	if err != nil {
		return err
	}
	f.unreturned = len(un) > 0
	return nil
}

// readQueueLag reads the backlog of the order streams and, with Kafka, of
// the topic and its consumer group.
func readQueueLag(ctx context.Context, c *conns, sale *v1alpha1.FlashSale, f *liveFigures) error {
	saleKey := sale.SaleKey()
	sl, err := lag.Stream(ctx, c.rdb, saleKey, sale.SKUIDs(), orderstate.BucketsOf(sale))
	if err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	f.streamLag = sl.Total
	f.total = sl.Total
	if sale.Spec.Kafka == nil {
		return nil
	}
	kl, err := lag.Kafka(c.kafka, c.admin, keys.Topic(saleKey), keys.ConsumerGroup(saleKey))
	if err != nil {
		return depErr(v1alpha1.ReasonKafkaUnavailable, err)
	}
	f.kafka = &kl
	f.total += kl.Total
	return nil
}

// soldOut: every SKU's counters are down to zero (or gone), in every
// bucket, with no unit in flight between two.
func (f *liveFigures) soldOut(sale *v1alpha1.FlashSale) bool {
	for _, sku := range sale.Spec.SKUs {
		if f.remaining[sku.ID]+f.inFlight[sku.ID] > 0 {
			return false
		}
	}
	return len(sale.Spec.SKUs) > 0
}

// drained: nothing is left moving, no order in the queue, none awaiting
// payment or rollback.
func (f *liveFigures) drained() bool {
	return f.total == 0 && f.created == 0 && !f.unreturned
}

// workerTarget scales the pipeline by the queue backlog, one pod per
// lagThreshold orders, between the floor and the partition count (a pod
// beyond it would hold no partition). It comes back to the floor only once
// the queue is empty, so a backlog that shrinks is not left to fewer pods.
func workerTarget(sale *v1alpha1.FlashSale, lagNow int64, current int32) int32 {
	floor := sale.Spec.Worker.Replicas
	ceiling := int32(v1alpha1.DefaultPartitions)
	if sale.Spec.Kafka != nil {
		ceiling = sale.Spec.Kafka.Partitions
	}
	ceiling = max(ceiling, floor)
	if lagNow <= 0 {
		return floor
	}
	th := sale.Spec.Worker.LagThreshold
	if th <= 0 {
		th = v1alpha1.DefaultLagThreshold
	}
	want := int32(min((lagNow+th-1)/th, int64(ceiling)))
	return min(max(want, current, floor), ceiling)
}

// reconcileWorkloads applies the planned objects with server-side apply and
// reads back whether their pods are ready.
func (r *FlashSaleReconciler) reconcileWorkloads(ctx context.Context, s *scope) error {
	if s.obs.Settled {
		// Being torn down: applying the Deployments again would bring back
		// the pods teardown is waiting to see gone.
		return nil
	}
	sale, fs := s.sale, s.fs
	ended := !s.now.Before(s.window.end)
	t, err := r.workloadTargets(ctx, s, ended)
	if err != nil {
		return err
	}
	image, err := r.dataPlaneImage(ctx, s) // pinned at warm-up (status.dataPlane)
	if err != nil {
		return err
	}
	plan, err := BuildPlan(sale, PlanInput{Image: image, OperatorVersion: r.OperatorVersion, PullPolicy: r.PullPolicy, DefaultSecret: r.DefaultSecret, Targets: t, NetworkPolicy: r.salePolicyInput(ctx, s)})
	if err != nil {
		return err
	}
	if err := r.holdTemplates(ctx, s, plan); err != nil { // an operator upgrade does not roll a live sale
		return err
	}
	objs := []client.Object{plan.ConfigMap, plan.Service, plan.PDB, plan.Seckill, plan.Worker, plan.Rollback}
	if plan.HPA != nil {
		objs = append(objs, plan.HPA)
	}
	for _, np := range plan.NetworkPolicies {
		objs = append(objs, np)
	}
	// An unchanged plan is applied again only now and then (to undo a
	// hand edit), not on every status refresh: a hundred sales refreshed
	// every few seconds would otherwise keep the API server busy with no-op
	// applies.
	sum, err := planHash(objs)
	if err != nil {
		return err
	}
	if r.applied.fresh(fs.SaleKey(), sum, s.now, r.ResolveEvery) {
		return r.readWorkloads(ctx, s, t, ended)
	}
	for _, o := range objs {
		if err := r.apply(ctx, fs, o); err != nil {
			return err
		}
	}
	r.applied.record(fs.SaleKey(), sum, s.now)
	if plan.HPA == nil {
		hpa := &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: fs.Namespace, Name: Name(fs, ComponentSeckill)}}
		if err := r.Delete(ctx, hpa); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete seckill autoscaler: %w", err)
		}
	}
	if err := r.deleteNetworkPolicies(ctx, fs); err != nil { // left by a run with --network-policies
		return err
	}
	return r.readWorkloads(ctx, s, t, ended)
}

// workloadTargets decides the replica counts: seckill at its floor, or
// above it where the autoscaler took it, and at its draining size once the
// sale ended; the workers by the queue backlog (a change is told by an
// Event and recorded in status).
func (r *FlashSaleReconciler) workloadTargets(ctx context.Context, s *scope, ended bool) (Targets, error) {
	sale, fs := s.sale, s.fs
	t := Targets{Seckill: sale.Spec.Seckill.Replicas, Autoscale: sale.Spec.Seckill.MaxReplicas > 0 && !ended}
	var cur appsv1.Deployment
	err := r.Get(ctx, types.NamespacedName{Namespace: fs.Namespace, Name: Name(fs, ComponentSeckill)}, &cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return t, fmt.Errorf("read seckill Deployment: %w", err)
	}
	if t.Autoscale && err == nil && cur.Spec.Replicas != nil {
		// The autoscaler owns the count above the floor: re-applying the
		// floor would undo its scale-up.
		t.Seckill = max(t.Seckill, *cur.Spec.Replicas)
	}
	if ended {
		t.Seckill = sale.Spec.Seckill.DrainingReplicas
	}
	prevWorkers := fs.Status.WorkerReplicas
	t.Worker = workerTarget(sale, s.live.total, max(prevWorkers, 0))
	if prevWorkers != 0 && t.Worker != prevWorkers {
		r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonScaled, "Scale",
			"Order workers %d → %d: queue lag %d (%d per pod)", prevWorkers, t.Worker, s.live.total, sale.Spec.Worker.LagThreshold)
	}
	fs.Status.WorkerReplicas = t.Worker
	return t, nil
}

// readWorkloads reads back whether the pods of the three Deployments are ready.
func (r *FlashSaleReconciler) readWorkloads(ctx context.Context, s *scope, t Targets, ended bool) error {
	fs := s.fs
	var notReady []string
	for _, comp := range []string{ComponentSeckill, ComponentWorker, ComponentRollback} {
		var d appsv1.Deployment
		if err := r.Get(ctx, types.NamespacedName{Namespace: fs.Namespace, Name: Name(fs, comp)}, &d); err != nil {
			if apierrors.IsNotFound(err) {
				// Deleted by hand: apply the plan again on the next reconcile
				// (the Deployment watch brings it at once).
				r.applied.forget(fs.SaleKey())
				notReady = append(notReady, comp+" not created yet")
				continue
			}
			return fmt.Errorf("read %s Deployment: %w", comp, err)
		}
		if ok, why := deploymentReady(&d); !ok {
			notReady = append(notReady, comp+" "+why)
		}
	}
	if len(notReady) > 0 {
		msg := "pods not ready: " + strings.Join(notReady, "; ")
		r.setCondition(s, v1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, v1alpha1.ReasonPodsNotReady, msg)
		s.missing = []string{v1alpha1.ReasonPodsNotReady, msg}
		if fs.Status.OpenedAt != nil && !ended {
			s.degraded = []string{v1alpha1.ReasonPodsNotReady, msg}
		}
		return nil
	}
	r.setCondition(s, v1alpha1.ConditionWorkloadsReady, metav1.ConditionTrue, v1alpha1.ReasonWorkloadsReady,
		fmt.Sprintf("seckill %d, worker %d and rollback 1 pods ready", t.Seckill, t.Worker))
	return nil
}

// deploymentReady: the Deployment's controller has seen the latest spec and
// every wanted pod is updated and available.
func deploymentReady(d *appsv1.Deployment) (bool, string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return false, "rollout not observed yet"
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d/%d updated", st.UpdatedReplicas, want)
	case st.AvailableReplicas < want:
		return false, fmt.Sprintf("%d/%d ready", st.AvailableReplicas, want)
	}
	return true, ""
}

// apply server-side applies obj, owned by fs, with the operator's field owner.
func (r *FlashSaleReconciler) apply(ctx context.Context, fs *v1alpha1.FlashSale, obj client.Object) error {
	if err := controllerutil.SetControllerReference(fs, obj, r.Scheme); err != nil {
		return fmt.Errorf("own %T %s: %w", obj, obj.GetName(), err)
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("convert %T %s: %w", obj, obj.GetName(), err)
	}
	unstructured.RemoveNestedField(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u, "spec", "template", "metadata", "creationTimestamp")
	ac := client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u})
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", u["kind"], obj.GetName(), err)
	}
	return nil
}

// reconcileGate opens the sale to buyers once everything is verified: keys
// warmed, schema and topic ready, every pod ready and (with Kafka) the
// consumer group holding every partition. Until then the held switch keeps
// the seckill pods answering 503 NOT_READY even after the start time.
func (r *FlashSaleReconciler) reconcileGate(ctx context.Context, s *scope) error {
	fs := s.fs
	if fs.Status.OpenedAt != nil {
		return nil // s.obs.Live already
	}
	if !s.now.Before(s.window.end) {
		// Past the (effective) end nobody is admitted any more: a sale
		// closed before it opened settles at the close (windowOf), and
		// calling it live now would be untrue.
		return nil
	}
	if !apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionWarmed) {
		c := apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionWarmed)
		s.missing = []string{c.Reason, c.Message}
	}
	if len(s.missing) == 0 && s.live.kafka != nil {
		k := s.live.kafka
		if k.Members == 0 || k.AssignedPartitions < k.Partitions {
			s.missing = []string{v1alpha1.ReasonConsumersNotReady, fmt.Sprintf(
				"consumer group %s: %d members hold %d of %d partitions", keys.ConsumerGroup(s.sale.SaleKey()), k.Members, k.AssignedPartitions, k.Partitions)}
		}
	}
	if len(s.missing) > 0 {
		if !s.now.Before(s.window.start) {
			// Past the start with the gate shut: say what is missing.
			s.degraded = s.missing
		}
		return nil
	}
	if err := switches.SetHeld(ctx, s.c.rdb, s.sale.SaleKey(), false); err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	opened := s.now
	if opened.Before(s.window.start) {
		// The pods still answer 425 NOT_STARTED by their clock until the start.
		opened = s.window.start
	}
	fs.Status.OpenedAt = &metav1.Time{Time: opened}
	s.obs.Live = true
	r.event(fs, corev1.EventTypeNormal, v1alpha1.ReasonLive, "GoLive",
		"Go-live gate open: %d SKUs, %d units, every pod ready; buyers admitted from %s",
		len(s.sale.Spec.SKUs), s.sale.TotalStock(), opened.UTC().Format("2006-01-02T15:04:05Z"))
	return nil
}

func planHash(objs []client.Object) (string, error) {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, o := range objs {
		if err := enc.Encode(o); err != nil {
			return "", fmt.Errorf("hash plan: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// appliedPlans remembers the last plan applied per sale, by sale key.
type appliedPlans struct {
	mu sync.Mutex
	m  map[string]appliedPlan
}

type appliedPlan struct {
	hash string
	at   time.Time
}

func (a *appliedPlans) fresh(saleKey, hash string, now time.Time, maxAge time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.m[saleKey]
	return ok && p.hash == hash && now.Sub(p.at) < maxAge && !now.Before(p.at)
}

func (a *appliedPlans) record(saleKey, hash string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]appliedPlan{}
	}
	a.m[saleKey] = appliedPlan{hash: hash, at: now}
}

func (a *appliedPlans) forget(saleKey string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, saleKey)
}
