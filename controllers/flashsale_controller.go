package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// Finalizer keeps a FlashSale until its Redis keys and topics are cleaned up.
const Finalizer = "flashsale.dev/cleanup"

// FieldOwner is the field manager of everything the operator applies.
const FieldOwner = "flashsale-operator"

// Defaults of the reconciler's intervals.
const (
	DefaultRefreshInterval = 5 * time.Second
	DefaultAuditInterval   = 30 * time.Second
	DefaultResolveEvery    = time.Minute
	DefaultDialTimeout     = 3 * time.Second
	DefaultCleanupTimeout  = 2 * time.Minute
	// configRetry is how often a sale whose configuration is broken is looked
	// at again (a Secret change also triggers a reconcile at once).
	configRetry = time.Minute
)

// FlashSaleReconciler runs each FlashSale through its life.
type FlashSaleReconciler struct {
	client.Client
	// APIReader reads Secrets straight from the API server, so the manager
	// caches no Secret it does not need.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Clock     clock.PassiveClock
	Recorder  events.EventRecorder
	Metrics   *Metrics

	// Image of the data-plane pods unless a sale names its own: the
	// operator's own image, which holds every subcommand.
	Image      string
	PullPolicy corev1.PullPolicy
	// DefaultSecret is the endpoints Secret (in the sale's namespace) used
	// where a sale names no Secret.
	DefaultSecret string

	// RefreshInterval is how often live counts are re-read while the sale runs.
	RefreshInterval time.Duration
	// AuditInterval is how often the audit checks the conservation law mid-sale.
	AuditInterval time.Duration
	// ResolveEvery is how often a sale's Secrets are re-read.
	ResolveEvery time.Duration
	// DialTimeout bounds each call to Redis, MySQL and Kafka.
	DialTimeout time.Duration
	// CleanupTimeout is how long a deleted sale waits for an unreachable
	// dependency before its finalizer gives up, so that deleting a namespace
	// never hangs for ever.
	CleanupTimeout time.Duration
	// MaxConcurrentReconciles is how many sales are reconciled at once.
	MaxConcurrentReconciles int

	pool    connPool
	applied appliedPlans
	// tornDown holds the UIDs of the sales this process tore down: a
	// reconcile that reads the sale from a cache not yet showing TornDown
	// must not run the steps again (and report the keys it deleted missing).
	tornDown sync.Map
}

// +kubebuilder:rbac:groups=flashsale.dev,resources=flashsales,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=flashsale.dev,resources=flashsales/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=flashsale.dev,resources=flashsales/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

func (r *FlashSaleReconciler) defaults() {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = r.Client
	}
	if r.DefaultSecret == "" {
		r.DefaultSecret = DefaultEndpointsSecret
	}
	if r.PullPolicy == "" {
		r.PullPolicy = corev1.PullIfNotPresent
	}
	if r.RefreshInterval <= 0 {
		r.RefreshInterval = DefaultRefreshInterval
	}
	if r.AuditInterval <= 0 {
		r.AuditInterval = DefaultAuditInterval
	}
	if r.ResolveEvery <= 0 {
		r.ResolveEvery = DefaultResolveEvery
	}
	if r.DialTimeout <= 0 {
		r.DialTimeout = DefaultDialTimeout
	}
	if r.CleanupTimeout <= 0 {
		r.CleanupTimeout = DefaultCleanupTimeout
	}
	if r.Metrics == nil {
		r.Metrics = NewMetrics()
	}
}

// NewFlashSaleReconciler wires a reconciler to mgr: its cached client, the
// uncached reader Secrets are read through, its scheme and Event recorder,
// the real clock and fresh metrics (to be registered by the caller). The
// other fields keep their defaults until the caller sets them.
func NewFlashSaleReconciler(mgr ctrl.Manager) *FlashSaleReconciler {
	return &FlashSaleReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Clock:     clock.RealClock{},
		Recorder:  mgr.GetEventRecorder(FieldOwner),
		Metrics:   NewMetrics(),
	}
}

// SetupWithManager registers the reconciler: it watches FlashSales, the
// workloads they own (a pod becoming ready opens the go-live gate at once)
// and Secrets (a missing Secret created later un-fails the sale).
func (r *FlashSaleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return r.SetupWithManagerAs(mgr, r)
}

// SetupWithManagerAs is SetupWithManager with rec handling the requests in
// place of r: rec wraps r (it must call r.Reconcile), e.g. to count or time
// the reconciles as the benchmarks do.
func (r *FlashSaleReconciler) SetupWithManagerAs(mgr ctrl.Manager, rec reconcile.Reconciler) error {
	r.defaults()
	if err := mgr.Add(closer{&r.pool}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.FlashSale{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, deletionStarted))).
		Owns(&appsv1.Deployment{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.salesInNamespace),
			builder.WithPredicates(predicate.ResourceVersionChangedPredicate{}), builder.OnlyMetadata).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("flashsale").
		Complete(rec)
}

// deletionStarted passes the update that sets a deletion timestamp.
var deletionStarted = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	return e.ObjectOld.GetDeletionTimestamp() == nil && e.ObjectNew.GetDeletionTimestamp() != nil
}}

// salesInNamespace maps a Secret to the sales of its namespace: cheap, and a
// Secret is rarely changed while sales run.
func (r *FlashSaleReconciler) salesInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.FlashSaleList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, fs := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&fs)})
	}
	return reqs
}

// closer closes every sale's connections when the manager stops.
type closer struct{ pool *connPool }

func (c closer) Start(ctx context.Context) error {
	<-ctx.Done()
	c.pool.closeAll()
	return nil
}

// scope is what one reconcile of one sale works with.
type scope struct {
	fs *v1alpha1.FlashSale
	// sale is fs with the defaults filled in, read-only: the spec as the
	// data-plane pods see it.
	sale *v1alpha1.FlashSale
	now  time.Time
	c    *conns
	obs  Observed
	live liveFigures
	// degraded collects what is wrong this reconcile.
	degraded []string
	// missing is what holds the go-live gate closed.
	missing []string
	// settling: the sale has settled and is being torn down.
	settling bool
}

// Reconcile computes the sale's phase from its spec, what it observes and
// the clock, makes the owned things match, and requeues for the next
// boundary (or the next status refresh while the sale runs).
func (r *FlashSaleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	r.defaults()
	log := ctrl.LoggerFrom(ctx)
	fs := &v1alpha1.FlashSale{}
	if err := r.Get(ctx, req.NamespacedName, fs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := r.Clock.Now()
	if !fs.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, fs, now)
	}
	if !controllerutil.ContainsFinalizer(fs, Finalizer) {
		patch := client.MergeFrom(fs.DeepCopy())
		controllerutil.AddFinalizer(fs, Finalizer)
		if err := r.Patch(ctx, fs, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}

	base := fs.DeepCopy()
	sale := fs.DeepCopy()
	sale.SetDefaults()
	s := &scope{fs: fs, sale: sale, now: now}
	defer func() {
		if statusChanged(&base.Status, &fs.Status) {
			if err := r.Status().Patch(ctx, fs, client.MergeFrom(base)); err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("patch status: %w", err))
			}
		}
		r.Metrics.observe(fs, retErr)
	}()

	res, err := r.reconcileNormal(ctx, s)
	if err != nil {
		log.Error(err, "Reconcile failed", "phase", fs.Status.Phase)
	}
	return res, err
}

// statusChanged compares two statuses ignoring lastRefreshTime: a refresh
// that read the same figures is not worth a write (nor a line in
// `kubectl get fs -w`).
func statusChanged(before, after *v1alpha1.FlashSaleStatus) bool {
	a, b := before.DeepCopy(), after.DeepCopy()
	a.LastRefreshTime, b.LastRefreshTime = nil, nil
	return !equality.Semantic.DeepEqual(a, b)
}

// reconcileNormal runs the sub-reconcilers in the order of a sale's life and
// stops at the first that cannot go on.
func (r *FlashSaleReconciler) reconcileNormal(ctx context.Context, s *scope) (ctrl.Result, error) {
	fs, sale, now := s.fs, s.sale, s.now
	if _, done := r.tornDown.Load(fs.UID); done && !apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionTornDown) {
		// A stale read: this process tore the sale down a moment ago.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	if apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionTornDown) {
		s.obs.TornDown = true
		r.setPhase(s, DecidePhase(&sale.Spec, s.obs, now).Phase)
		fs.Status.ObservedGeneration = fs.Generation
		return ctrl.Result{}, nil
	}

	c, err := r.connect(ctx, sale, now)
	var cfgErr *ConfigError
	if errors.As(err, &cfgErr) {
		r.setCondition(s, v1alpha1.ConditionConfigValid, metav1.ConditionFalse, cfgErr.Reason, cfgErr.Msg)
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, cfgErr.Reason, cfgErr.Msg)
		s.obs.Failed = true
		r.setPhase(s, DecidePhase(&sale.Spec, s.obs, now).Phase)
		// Stalled: nothing to retry until a human acts; the Secret watch
		// brings the sale back at once when they do.
		fs.Status.ObservedGeneration = fs.Generation
		return ctrl.Result{RequeueAfter: configRetry}, nil
	}
	r.setCondition(s, v1alpha1.ConditionConfigValid, metav1.ConditionTrue, v1alpha1.ReasonConfigValid, "Secrets found and dependencies reachable")
	if err != nil {
		return r.degraded(s, err)
	}
	s.c = c

	warmFrom := sale.Spec.StartTime.Add(-sale.WarmupLead())
	if now.Before(warmFrom) {
		d := DecidePhase(&sale.Spec, s.obs, now)
		r.setPhase(s, d.Phase)
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy, "Redis, MySQL and Kafka reachable")
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForWarmup,
			"warm-up starts at "+warmFrom.UTC().Format(time.RFC3339))
		fs.Status.ObservedGeneration = fs.Generation
		fs.Status.Stock = sale.TotalStock()
		fs.Status.Remaining = fs.Status.Stock
		// Look again at the warm-up instant, and now and then before it to
		// notice a dependency that went away.
		return ctrl.Result{RequeueAfter: min(d.RequeueAfter(now), r.ResolveEvery)}, nil
	}

	for _, step := range []func(context.Context, *scope) error{
		r.reconcileRedis,
		r.reconcileSchema,
		r.reconcileTopic,
		r.reconcileTokenSecret,
		r.observe,
		r.reconcileWorkloads,
		r.reconcileGate,
		r.reconcileAudit,
		r.reconcileSettle,
	} {
		if err := step(ctx, s); err != nil {
			return r.degraded(s, err)
		}
	}

	if len(s.degraded) > 0 {
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionTrue, s.degraded[0], s.degraded[1])
	} else {
		r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonHealthy, "every dependency and workload is healthy")
	}
	d := DecidePhase(&sale.Spec, s.obs, now)
	r.setPhase(s, d.Phase)
	r.setReady(s, d.Phase)
	fs.Status.ObservedGeneration = fs.Generation
	if d.Phase == v1alpha1.PhaseEnded {
		return ctrl.Result{}, nil
	}
	after := r.RefreshInterval
	if next := d.RequeueAfter(now); next > 0 && next < after {
		after = next
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// degraded records a failing dependency and retries soon: mid-sale the
// operator must notice recovery within seconds, not after an exponential
// backoff of minutes.
func (r *FlashSaleReconciler) degraded(s *scope, err error) (ctrl.Result, error) {
	reason := v1alpha1.ReasonReconcileFailed
	var de *DependencyError
	if errors.As(err, &de) {
		reason = de.Reason
	}
	r.setCondition(s, v1alpha1.ConditionDegraded, metav1.ConditionTrue, reason, err.Error())
	obs := s.obs
	obs.Live = s.fs.Status.OpenedAt != nil
	d := DecidePhase(&s.sale.Spec, obs, s.now)
	if d.Phase != v1alpha1.PhaseDraining || obs.Live {
		r.setPhase(s, d.Phase)
	}
	if s.fs.Status.OpenedAt == nil {
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, err.Error())
	}
	r.Metrics.reconcileError(s.fs, reason)
	return ctrl.Result{RequeueAfter: r.RefreshInterval}, nil
}

// setCondition sets a condition and, when its status or reason changed,
// records an Event with the same reason: Events then read as the log of
// the sale without repeating themselves every refresh.
func (r *FlashSaleReconciler) setCondition(s *scope, typ string, status metav1.ConditionStatus, reason, msg string) {
	prev := apimeta.FindStatusCondition(s.fs.Status.Conditions, typ)
	changed := prev == nil || prev.Status != status || prev.Reason != reason
	apimeta.SetStatusCondition(&s.fs.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: s.fs.Generation, LastTransitionTime: metav1.NewTime(s.now),
	})
	// Ready summarises the others: its changes are told by the condition
	// that caused them and by the PhaseChanged Event, not a second time.
	if !changed || r.Recorder == nil || typ == v1alpha1.ConditionReady {
		return
	}
	eventType := corev1.EventTypeNormal
	bad := status == metav1.ConditionFalse
	if typ == v1alpha1.ConditionDegraded {
		bad = status == metav1.ConditionTrue
	}
	if bad {
		eventType = corev1.EventTypeWarning
	}
	// The first Healthy/Ready=False of a fresh sale is not news.
	if prev == nil && eventType == corev1.EventTypeWarning && (reason == v1alpha1.ReasonWaitingForWarmup) {
		return
	}
	if prev == nil && typ == v1alpha1.ConditionDegraded && status == metav1.ConditionFalse {
		return
	}
	r.Recorder.Eventf(s.fs, nil, eventType, reason, typ, "%s", msg)
}

// event records an Event that no condition carries (a stock raise, a scale).
func (r *FlashSaleReconciler) event(fs *v1alpha1.FlashSale, eventType, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(fs, nil, eventType, reason, action, format, args...)
	}
}

var phaseNotes = map[v1alpha1.Phase]string{
	v1alpha1.PhasePending:  "waiting for the warm-up window",
	v1alpha1.PhaseWarming:  "pre-warming Redis, creating the topic and schema, pre-scaling the pods",
	v1alpha1.PhaseActive:   "purchases are admitted",
	v1alpha1.PhasePaused:   "purchases are answered 503 PAUSED",
	v1alpha1.PhaseDraining: "purchases are closed; orders drain and unpaid ones roll back",
	v1alpha1.PhaseEnded:    "the sale has settled and was torn down",
	v1alpha1.PhaseFailed:   "the sale cannot proceed without a human; see the conditions",
}

func (r *FlashSaleReconciler) setPhase(s *scope, p v1alpha1.Phase) {
	prev := s.fs.Status.Phase
	if prev == p {
		return
	}
	s.fs.Status.Phase = p
	from := string(prev)
	if from == "" {
		from = "(new)"
	}
	eventType := corev1.EventTypeNormal
	if p == v1alpha1.PhaseFailed {
		eventType = corev1.EventTypeWarning
	}
	r.event(s.fs, eventType, v1alpha1.ReasonPhaseChanged, "Phase", "%s → %s: %s", from, p, phaseNotes[p])
}

func (r *FlashSaleReconciler) setReady(s *scope, p v1alpha1.Phase) {
	switch {
	case p == v1alpha1.PhaseEnded:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonTornDown, "the sale has ended and was torn down")
	case len(s.missing) > 0 && s.fs.Status.OpenedAt == nil:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionFalse, s.missing[0], s.missing[1])
	case p == v1alpha1.PhaseWarming:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonVerified,
			"everything is verified; buyers are admitted from "+s.sale.Spec.StartTime.UTC().Format(time.RFC3339))
	case p == v1alpha1.PhasePaused:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonPaused, "the sale is paused: purchases are answered 503")
	case p == v1alpha1.PhaseDraining:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonDraining, "purchases are closed; orders drain and unpaid ones roll back")
	default:
		r.setCondition(s, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonLive, "the sale is live")
	}
}
