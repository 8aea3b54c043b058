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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
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
	"sigs.k8s.io/controller-runtime/pkg/source"

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
	// at again: the operator does not watch Secrets (a watch would see every
	// Secret of the cluster), so a fixed Secret is noticed at the next retry.
	configRetry = 15 * time.Second
	// staleRetry is how soon a reconcile whose status patch met a newer
	// stored status (a stale cache) is run again.
	staleRetry = 200 * time.Millisecond
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
	// OperatorVersion is this operator's version (cli.Version), recorded in
	// status.dataPlane and on the Deployments it renders: see holdTemplates.
	OperatorVersion string
	// NetworkPolicy fences each sale's pods (--network-policies).
	NetworkPolicy NetworkPolicyConfig
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
	// plans says what each sale's Planned condition was computed from.
	plans planned
	// tornDown holds the UIDs of the sales this process tore down: a
	// reconcile that reads the sale from a cache not yet showing TornDown
	// must not run the steps again (and report the keys it deleted missing).
	tornDown sync.Map
	// redisAddrCache holds the Redis addresses the overlap check read.
	redisAddrCache addrCache

	// Notifier delivers spec.notifications' events (runtime/notify's
	// Dispatcher, whose OnAttempt is NotificationAttempted). Nil: the
	// outbox fills but nothing is sent.
	Notifier Notifier
	// deliveries carries NotificationAttempted's nudges to the controller.
	deliveries chan event.GenericEvent
}

// The least the operator needs (TestRBACIsMinimal fails on a verb a sale's
// life does not use): FlashSales and Deployments are cached (list, watch);
// what a sale owns is server-side applied (patch, and create: an apply that
// creates the object is authorised as one), read by name through APIReader
// at teardown (get) and deleted. Secrets are read by name only, never
// listed or watched. Leader election's Lease and Event are in a Role of
// their own (config/rbac/leader_election_role.yaml).
// +kubebuilder:rbac:groups=flashsale.dev,resources=flashsales,verbs=list;watch;patch
// +kubebuilder:rbac:groups=flashsale.dev,resources=flashsales/status,verbs=patch
// +kubebuilder:rbac:groups=flashsale.dev,resources=flashsales/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=list;watch;get;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;create;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=list
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;create;patch;delete
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

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

// SetupWithManager registers the reconciler: it watches FlashSales and the
// workloads they own (a pod becoming ready opens the go-live gate at once).
// It does not watch Secrets: they are read by name through APIReader, and a
// sale stalled on a missing Secret looks again every configRetry.
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
		// A delivery attempt brings its sale back: its outbox empties at once.
		WatchesRawSource(source.Channel(r.deliveryNews(), &handler.EnqueueRequestForObject{})).
		// A sale refused for an overlap is looked at again as soon as the
		// sale it names changes (deleted, ended, window moved).
		Watches(&v1alpha1.FlashSale{}, handler.EnqueueRequestsFromMapFunc(r.conflictsNamingChanged),
			builder.WithPredicates(mayFreeOthers)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("flashsale").
		Complete(rec)
}

// deletionStarted passes the update that sets a deletion timestamp.
var deletionStarted = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	return e.ObjectOld.GetDeletionTimestamp() == nil && e.ObjectNew.GetDeletionTimestamp() != nil
}}

// closer closes every sale's connections when the manager stops.
type closer struct{ pool *connPool }

func (c closer) Start(ctx context.Context) error {
	<-ctx.Done()
	c.pool.closeAll()
	return nil
}

// scope is what one reconcile of one sale works with. The steps fill it
// with what they observe; the deferred summary decides from it.
type scope struct {
	fs *v1alpha1.FlashSale
	// before is the status the reconcile started from: the milestones
	// notified are its differences from the status written.
	before *v1alpha1.FlashSaleStatus
	// sale is fs with the defaults filled in, read-only: the spec as the
	// data-plane pods see it.
	sale *v1alpha1.FlashSale
	now  time.Time
	// window is the sale's instants (warm-up, start, end, settling).
	window window
	c      *conns
	// obs starts from what status already records (the gate opened, the
	// sale torn down) and is completed by the steps.
	obs Observed
	// live is what observe read; nil until it has.
	live *liveFigures
	// degraded is what is wrong this reconcile: a reason and a message.
	degraded []string
	// missing is what holds the go-live gate closed: a reason and a message.
	missing []string
	// connected: the sale's dependencies answered this reconcile.
	connected bool
	// stale: this process tore the sale down a moment ago, and the read
	// does not show it yet. Nothing was looked at.
	stale bool
	// configErr stalls the sale until a human fixes its configuration.
	configErr *ConfigError
	// conflict is the Conflict message while an overlapping sale holds
	// this one back ("" when none does).
	conflict string
	// err is the failure the reconcile stopped at.
	err error
}

func newScope(fs *v1alpha1.FlashSale, now time.Time) *scope {
	sale := fs.DeepCopy()
	sale.SetDefaults()
	return &scope{fs: fs, before: fs.Status.DeepCopy(), sale: sale, now: now, window: windowOf(sale), obs: Observed{
		Live:     fs.Status.OpenedAt != nil,
		TornDown: apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionTornDown),
	}}
}

// stopAt records the error a step stopped at: a broken configuration
// stalls the sale (Failed) until a human acts; any other failure leaves the
// observation incomplete, to be retried soon.
func (s *scope) stopAt(err error) {
	var cfgErr *ConfigError
	if errors.As(err, &cfgErr) {
		s.configErr = cfgErr
		s.obs.Failed = true
		return
	}
	s.err = err
	s.obs.Incomplete = true
}

// Reconcile observes the sale (its spec, its dependencies, its workloads
// and the clock), makes the owned things match, and then, in one deferred
// summary, decides its phase, writes its status and requeues for the next
// boundary (or the next status refresh while the sale runs).
func (r *FlashSaleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	r.defaults()
	fs := &v1alpha1.FlashSale{}
	if err := r.Get(ctx, req.NamespacedName, fs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := r.Clock.Now()
	if !fs.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, fs, now)
	}
	if err := r.ensureFinalizer(ctx, fs); err != nil {
		return ctrl.Result{}, err
	}

	base := fs.DeepCopy()
	r.markClosed(fs, now) // before the window is computed: closedAt ends it
	s := newScope(fs, now)
	defer func() {
		res = r.summarize(s)
		res = r.deliverNotifications(ctx, s, res)
		if statusChanged(&base.Status, &fs.Status) {
			// Optimistic lock: a reconcile that read a status older than the
			// stored one (the cache behind a patch, e.g. when a delivery's
			// nudge comes right after it) must not write what it computed
			// from it: milestones seen again, counts added twice.
			err := r.Status().Patch(ctx, fs, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
			if apierrors.IsConflict(err) {
				// Not a failure: the cache catches up within a moment.
				ctrl.LoggerFrom(ctx).V(1).Info("Status read was stale; looking again", "resourceVersion", base.ResourceVersion)
				res, retErr = ctrl.Result{RequeueAfter: staleRetry}, nil
				return
			}
			if err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("patch status: %w", err))
			}
		}
		if s.err != nil {
			r.Metrics.reconcileError(fs, dependencyReason(s.err))
		}
		r.Metrics.observe(fs, retErr)
	}()
	r.reconcileNormal(ctx, s)
	return res, nil // set by the summary
}

func (r *FlashSaleReconciler) ensureFinalizer(ctx context.Context, fs *v1alpha1.FlashSale) error {
	if controllerutil.ContainsFinalizer(fs, Finalizer) {
		return nil
	}
	patch := client.MergeFrom(fs.DeepCopy())
	controllerutil.AddFinalizer(fs, Finalizer)
	if err := r.Patch(ctx, fs, patch); err != nil {
		return fmt.Errorf("add finalizer: %w", err)
	}
	return nil
}

// statusChanged compares two statuses ignoring lastRefreshTime: a refresh
// that read the same figures is not worth a write (nor a line in
// `kubectl get fs -w`).
func statusChanged(before, after *v1alpha1.FlashSaleStatus) bool {
	a, b := before.DeepCopy(), after.DeepCopy()
	a.LastRefreshTime, b.LastRefreshTime = nil, nil
	return !equality.Semantic.DeepEqual(a, b)
}

// reconcileNormal looks at the sale: its connections and, from the warm-up
// on, the sub-reconcilers in the order of a sale's life, stopping at the
// first that fails. It decides nothing: that is the summary's job.
func (r *FlashSaleReconciler) reconcileNormal(ctx context.Context, s *scope) {
	if s.obs.TornDown {
		return // Ended: nothing is left to look at.
	}
	if _, done := r.tornDown.Load(s.fs.UID); done {
		// A stale read: this process tore the sale down a moment ago.
		s.stale = true
		return
	}
	if r.endUnwarmed(s) {
		return // Ended without a warm-up: closed early or held by an overlap.
	}
	if err := r.reconcileConnections(ctx, s); err != nil {
		s.stopAt(err)
		return
	}
	// The plan (the Planned condition) is kept up to date from here on.
	r.reconcilePlan(ctx, s)
	if r.reconcileConflict(ctx, s) {
		// Another sale sells the same stock: nothing of this one is warmed.
		return
	}
	if s.now.Before(s.window.warmFrom) {
		// Nothing is prepared before the warm-up; the connections are
		// checked now and then to notice a dependency that went away.
		return
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
			s.stopAt(err)
			return
		}
	}
}

// summarize is the deferred summary of a reconcile and the one place the
// phase is decided: from what the steps observed it writes the status and
// says when to look again.
func (r *FlashSaleReconciler) summarize(s *scope) ctrl.Result {
	if s.stale {
		return ctrl.Result{RequeueAfter: time.Second}
	}
	d := DecidePhase(s.sale, s.obs, s.now)
	r.updateStatus(s, d)
	// After the status is decided: the milestones it shows go to the outbox.
	r.reconcileNotifications(s, d)
	return r.requeue(s, d)
}

// requeue says when to look at the sale again, from the decision and how
// the reconcile ended.
func (r *FlashSaleReconciler) requeue(s *scope, d Decision) ctrl.Result {
	switch {
	case s.configErr != nil:
		// Stalled until a human acts: looked at again now and then, so
		// that a Secret created or fixed is noticed within configRetry.
		return ctrl.Result{RequeueAfter: configRetry}
	case s.conflict != "":
		// The watch brings the sale back when the other changes; this is
		// the safety net (a missed event, the other's window simply passing).
		after := configRetry
		if next := d.RequeueAfter(s.now); next > 0 && next < after {
			after = next
		}
		return ctrl.Result{RequeueAfter: after}
	case s.err != nil:
		// Mid-sale the operator must notice recovery within seconds, not
		// after an exponential backoff of minutes.
		return ctrl.Result{RequeueAfter: r.RefreshInterval}
	case d.Phase == v1alpha1.PhaseEnded:
		return ctrl.Result{}
	case d.Phase == v1alpha1.PhasePending:
		// Look again at the warm-up instant, and now and then before it to
		// notice a dependency that went away.
		return ctrl.Result{RequeueAfter: min(d.RequeueAfter(s.now), r.ResolveEvery)}
	}
	after := r.RefreshInterval
	if next := d.RequeueAfter(s.now); next > 0 && next < after {
		after = next
	}
	return ctrl.Result{RequeueAfter: after}
}
