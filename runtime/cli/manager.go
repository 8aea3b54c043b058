package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/notify"
)

// Scheme holds the kinds the operator reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// managerFlags are the manager's command line.
type managerFlags struct {
	probeAddr, logFormat             string
	leaderElect                      bool
	leaderNamespace                  string
	image, pullPolicy, defaultSecret string
	refresh, auditEvery, cleanup     time.Duration
	concurrency                      int
	metrics                          metricsFlags
	watchNamespaces                  string
	netpol                           networkPolicyFlags
}

func newManagerCommand() *cobra.Command {
	var mf managerFlags
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the operator: reconcile every FlashSale of the cluster through its life",
		Long: `manager runs the FlashSale controller with leader election, a Prometheus
/metrics endpoint and /healthz and /readyz probes. It deploys the data plane
of each sale with its own image (--image), so one image serves every role.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return mf.run(cmd.Context()) },
	}
	mf.register(cmd.Flags())
	return cmd
}

func (mf *managerFlags) register(f *pflag.FlagSet) {
	mf.metrics.register(f)
	f.StringVar(&mf.probeAddr, "health-probe-bind-address", ":8081", "serve /healthz and /readyz here")
	f.BoolVar(&mf.leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles")
	f.StringVar(&mf.leaderNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election lease (default: env POD_NAMESPACE, else the in-cluster namespace)")
	f.StringVar(&mf.image, "image", os.Getenv("FLASHSALE_IMAGE"), "image of the data-plane pods (the operator's own); env FLASHSALE_IMAGE")
	f.StringVar(&mf.pullPolicy, "image-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the data-plane pods")
	f.StringVar(&mf.defaultSecret, "default-endpoints-secret", controllers.DefaultEndpointsSecret,
		"Secret in each sale's namespace with keys redis-address, mysql-dsn, kafka-brokers, used where a sale names no Secret")
	f.DurationVar(&mf.refresh, "refresh-interval", controllers.DefaultRefreshInterval, "how often a running sale's status is refreshed")
	f.DurationVar(&mf.auditEvery, "audit-interval", controllers.DefaultAuditInterval, "how often a running sale is audited (the conservation law)")
	f.DurationVar(&mf.cleanup, "cleanup-timeout", controllers.DefaultCleanupTimeout, "how long a deleted sale waits for an unreachable dependency before its cleanup gives up")
	f.IntVar(&mf.concurrency, "max-concurrent-reconciles", 8, "sales reconciled at once")
	mf.netpol.register(f)
	f.StringVar(&mf.watchNamespaces, "watch-namespaces", "", "reconcile only the FlashSales of these namespaces (comma-separated; empty: all namespaces)")
	f.StringVar(&mf.logFormat, "log-format", "json", "text or json")
}

// options checks the flags and turns them into the manager's options; bad
// flags fail here, before anything connects.
func (mf *managerFlags) options() (ctrl.Options, error) {
	if mf.image == "" {
		return ctrl.Options{}, fmt.Errorf("no data-plane image: set --image or FLASHSALE_IMAGE (normally the operator's own image)")
	}
	metricsOpts, err := mf.metrics.options()
	if err != nil {
		return ctrl.Options{}, err
	}
	namespaces, err := parseNamespaces(mf.watchNamespaces)
	if err != nil {
		return ctrl.Options{}, err
	}
	return ctrl.Options{
		Scheme:                  Scheme(),
		Cache:                   CacheOptions(namespaces),
		Client:                  ClientOptions(),
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  mf.probeAddr,
		LeaderElection:          mf.leaderElect,
		LeaderElectionID:        "flashsale-operator.flashsale.dev",
		LeaderElectionNamespace: mf.leaderNamespace,
		// A new leader starts at once instead of waiting out the old
		// lease: the sale's clock does not stop for an election.
		LeaderElectionReleaseOnCancel: true,
	}, nil
}

func (mf *managerFlags) run(ctx context.Context) error {
	ctrl.SetLogger(logr.FromSlogHandler(newLogger(mf.logFormat).Handler()))
	opts, err := mf.options()
	if err != nil {
		return err
	}
	netpolCfg, err := mf.netpol.config()
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	r := controllers.NewFlashSaleReconciler(mgr)
	ctrlmetrics.Registry.MustRegister(r.Metrics.Collectors()...)
	r.Image = mf.image
	r.OperatorVersion = Version()
	r.PullPolicy = corev1.PullPolicy(mf.pullPolicy)
	r.DefaultSecret = mf.defaultSecret
	r.RefreshInterval = mf.refresh
	r.AuditInterval = mf.auditEvery
	r.CleanupTimeout = mf.cleanup
	r.MaxConcurrentReconciles = mf.concurrency
	r.NetworkPolicy = netpolCfg
	// Webhook deliveries run beside the reconciles (on the leader only), so
	// that a slow endpoint never holds a reconcile.
	notifier := notify.NewDispatcher(notify.Options{OnAttempt: r.NotificationAttempted})
	if err := mgr.Add(notifier); err != nil {
		return fmt.Errorf("add notifier: %w", err)
	}
	r.Notifier = notifier
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
