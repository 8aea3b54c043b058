package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/tools/loadtest"
)

// ErrInvariantsBroken is returned when a load test's checks fail: the
// command exits non-zero.
var ErrInvariantsBroken = errors.New("invariants broken")

// loadtestFlags are the loadtest command's flags: the run's options and what
// the command resolves into them (the sale, the SKUs, secrets, MySQL).
type loadtestFlags struct {
	o                                    loadtest.Options
	file, fsRef, skus, profile, dsn      string
	paySecret, paySecretFile, kubeconfig string
	asJSON, quiet                        bool
}

func newLoadtestCommand() *cobra.Command {
	var lf loadtestFlags
	cmd := &cobra.Command{
		Use:   "loadtest --url http://HOST:PORT (--file sale.yaml | --fs NAMESPACE/NAME) [--profile spike|sustained]",
		Short: "Send buyers, repeat clickers and bots at a sale's API; report latency and outcomes; check the invariants",
		Long: `loadtest speaks the seckill HTTP API against --url as real buyers do: a token,
the purchase, polling the order until it is durable, then paying (--pay-share of
them, through the pay endpoint with the payment secret) or walking away. Some
buyers click again (--repeat-share: the same token must bring the same order, a
fresh one ALREADY_PURCHASED once they hold their limit) and bots try their luck
(--bot-share: a forged token, no token, a token borrowed from another user, or
hammering far over the per-user rate, which must be answered 429).

A sale with a waiting room (spec.queue; the sale-level GET
/api/v1/sales/{ns}/{sale} says so) is bought through it: each buyer joins
(POST .../queue; --rejoin-share of them join again and must get the same ticket),
waits (GET .../queue/{ticket}, polling when pollAfterSeconds or Retry-After says),
then asks for the token with its ticket and buys as above. --probe-share of them
ask for a token before they are admitted (must be refused 403 NOT_ADMITTED), and
bots present forged and borrowed tickets (403 BAD_TICKET).

Profiles:
  spike      --users buyers arriving within --spike-window (1-2 s)
  sustained  --rate requests/s (all steps together) for --duration, over --users buyers

A progress line goes to stderr every second; the report (--json for machines)
to stdout: requests/s, latency percentiles per step (token, purchase, poll, pay,
bot), outcomes per HTTP status and error code, and the orders paid and expired.

Then the invariants are checked, and the command exits non-zero naming the ones
that failed: no oversell (admitted <= stock per SKU), nobody over their per-user
limit, same-token retries answered with the same order, no bot admitted, hammering
bots answered 429; for a queued sale, one ticket per user, no token without
admission, admissions outstanding at most stock x overbook (+ one second of
admissions; from the seckill pods' flashsale_queue_* gauges and the buyers' view),
and the queue answering SOLD_OUT to the buyers still waiting once the stock is
gone (none left waiting); with --mysql-dsn, every order answered 202 is in MySQL with the
right status (paid when paid, else created or cancelled); with --fs and a
kubeconfig, the FlashSale's final status matches MySQL and its audit is conserved
(--wait-ended waits for phase Ended first).

The sale (namespace, name, SKUs, stock, limits, rate limits) comes from --file, or
from the cluster with --fs; --skus ID[:STOCK[:LIMIT]],... picks SKUs or overrides.

Reaching the API: "kubectl port-forward svc/<sale>-seckill 8080:80" tunnels to ONE
pod and tops out at a few thousand requests/s; to spread the load over every
seckill pod, run loadtest on a node (or in a pod) against the Service's ClusterIP.
Every buyer sends its own address in X-Forwarded-For; the API believes it only
from a trusted proxy (spec.access.trustedProxies), otherwise spec.rateLimit.
perIPPerSecond applies to this one client.`,
		Example: `  # 5,000 buyers in one second against a port-forwarded sale, with the MySQL and cluster checks
  kubectl -n shop port-forward svc/singles-day-seckill 8080:80 &
  FLASHSALE_PAYMENT_SECRET=... FLASHSALE_MYSQL_DSN='root@tcp(127.0.0.1:3306)/shop' \
    flashsale loadtest --url http://127.0.0.1:8080 --fs shop/singles-day --users 5000 --wait-ended

  # 2,000 requests/s for 5 minutes against a sale run without Kubernetes
  flashsale loadtest --file sale.yaml --url http://127.0.0.1:8080 --profile sustained --rate 2000 --duration 5m --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return lf.run(cmd) },
	}
	lf.bind(cmd)
	return cmd
}

func (lf *loadtestFlags) bind(cmd *cobra.Command) {
	o := &lf.o
	f := cmd.Flags()
	f.StringVar(&o.BaseURL, "url", "http://127.0.0.1:8080", "base URL of the seckill API (a port-forward, the Service's ClusterIP, an ingress)")
	f.StringVar(&o.MetricsURL, "metrics-url", "",
		"base URL of the seckill's /metrics, where a queued sale's gauges are sampled (default: the --url host on port 9090, the seckill Service's and pods' metrics port; give --url's value for a seckill run with --metrics-addr=\"\")")
	f.StringVarP(&lf.file, "file", "f", "", "FlashSale manifest of the sale: its namespace/name, SKUs, stock, limits and rate limits")
	f.StringVar(&lf.fsRef, "fs", "", "the FlashSale NAMESPACE/NAME: names the sale and, with a kubeconfig, reads its SKUs and checks its final status")
	f.StringVar(&lf.kubeconfig, "kubeconfig", "", "kubeconfig for --fs (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
	f.StringVar(&lf.skus, "skus", "", "SKUs to buy, ID[:STOCK[:LIMIT]],... (default: every SKU of the sale); STOCK and LIMIT override the sale's for the checks")
	f.StringVar(&lf.profile, "profile", string(loadtest.Spike), "spike or sustained")
	f.IntVar(&o.Users, "users", 5000, "distinct buyers (spike: each arrives once)")
	f.DurationVar(&o.SpikeWindow, "spike-window", time.Second, "spike: the buyers arrive within this window")
	f.Float64Var(&o.Rate, "rate", 1000, "sustained: requests per second, all steps together")
	f.DurationVar(&o.Duration, "duration", time.Minute, "sustained: how long to keep the rate")
	f.IntVar(&o.Concurrency, "concurrency", 256, "virtual buyers at once (so at most this many requests in flight)")
	f.Float64Var(&o.RepeatShare, "repeat-share", 0.2, "share of buyers who click again (same token, then a fresh one)")
	f.DurationVar(&o.RepeatDelay, "repeat-delay", 500*time.Millisecond, "how long a repeat clicker waits before clicking again")
	f.Float64Var(&o.BotShare, "bot-share", 0.05, "bot sessions per buyer (0.05: one for every 20 buyers)")
	f.IntVar(&o.HammerRequests, "hammer", 50, "requests a hammering bot fires back to back")
	f.Float64Var(&o.RejoinShare, "rejoin-share", 0.2, "queued sale: share of buyers who join the waiting room again (must get the same ticket)")
	f.Float64Var(&o.ProbeShare, "probe-share", 0.02, "queued sale: share of buyers who ask for a token before they are admitted (must be refused)")
	f.DurationVar(&o.QueueTimeout, "queue-timeout", 10*time.Minute, "queued sale: how long a buyer waits for admission before giving up")
	f.DurationVar(&o.ThinkTime, "think-time", 0, "queued sale: an admitted buyer waits up to this long (uniformly drawn) before asking for the token")
	f.Float64Var(&o.PayShare, "pay-share", 0.7, "share of buyers who pay; the others let the payment deadline pass")
	f.StringVar(&lf.paySecretFile, "payment-secret-file", "", "file holding the pay endpoint's shared secret; env "+envPaymentSecretFile)
	fromEnv(f, "payment-secret-file", envPaymentSecretFile)
	f.StringVar(&lf.paySecret, "payment-secret", "", "the pay endpoint's shared secret (prefer the environment: "+envPaymentSecret+")")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Second, "timeout of each request")
	f.DurationVar(&o.PollInterval, "poll-interval", 100*time.Millisecond, "how often a buyer polls their order")
	f.DurationVar(&o.PollTimeout, "poll-timeout", 15*time.Second, "how long a buyer polls (and retries a pending payment) before giving up")
	f.Uint64Var(&o.Seed, "seed", 0, "seed of the plan (who buys what, pays, clicks again, is a bot); 0 picks one, printed in the report")
	f.StringVar(&o.UserPrefix, "user-prefix", "", "prefix of every user id (default: lt-<random>-, so each run has buyers of its own)")
	f.BoolVar(&o.ForwardedFor, "forwarded-for", true, "send each buyer's synthetic address in X-Forwarded-For")
	f.StringVar(&lf.dsn, "mysql-dsn", "", "go-sql-driver DSN of the sale's orders database, for the no-lost-order check; env "+envMySQLDSN)
	fromEnv(f, "mysql-dsn", envMySQLDSN)
	f.DurationVar(&o.SettleTimeout, "settle-timeout", 30*time.Second, "how long to wait for every admitted order to reach MySQL")
	f.BoolVar(&o.WaitEnded, "wait-ended", false, "with --fs: wait until the FlashSale's phase is Ended before the final checks")
	f.DurationVar(&o.WaitTimeout, "wait-timeout", 30*time.Minute, "how long --wait-ended waits")
	f.BoolVar(&lf.asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&lf.quiet, "quiet", false, "no progress lines on stderr")
}

// run resolves the options, runs the load test, writes its report and
// fails when an invariant is broken.
func (lf *loadtestFlags) run(cmd *cobra.Command) error {
	ctx := cmd.Context()
	o := &lf.o
	if err := lf.resolve(ctx); err != nil {
		return err
	}
	if lf.dsn != "" {
		db, err := openOrderDB(ctx, lf.dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		o.Orders = orderdb.New(db)
	}
	if !lf.quiet {
		o.Progress = cmd.ErrOrStderr()
	}
	rep, err := loadtest.Run(ctx, *o)
	if rep != nil {
		if werr := lf.writeReport(cmd.OutOrStdout(), rep); err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("%w: %s", ErrInvariantsBroken, strings.Join(rep.Failed(), ", "))
	}
	return nil
}

// resolve fills in the options the flags name: the profile, the sale, its
// SKUs and the payment secret.
func (lf *loadtestFlags) resolve(ctx context.Context) error {
	o := &lf.o
	o.Profile = loadtest.Profile(lf.profile)
	if o.MetricsURL == "" {
		o.MetricsURL = metricsURLOf(o.BaseURL)
	}
	sale, err := resolveLoadtestSale(ctx, o, lf.file, lf.fsRef, lf.kubeconfig)
	if err != nil {
		return err
	}
	o.Sale = sale
	want, err := loadtest.ParseSKUs(lf.skus)
	if err != nil {
		return err
	}
	if o.SKUs, err = loadtest.MergeSKUs(want, sale); err != nil {
		return err
	}
	if len(o.SKUs) == 0 {
		return errors.New("no SKUs: give --file, --fs with a kubeconfig, or --skus ID[:STOCK[:LIMIT]] (comma separated)")
	}
	if o.PaymentSecret, err = loadtestPaymentSecret(lf.paySecret, lf.paySecretFile); err != nil {
		return err
	}
	if o.PayShare > 0 && o.PaymentSecret == "" {
		return fmt.Errorf("buyers are to pay (--pay-share %g) but there is no payment secret: set %s, --payment-secret-file or --payment-secret (or --pay-share 0)",
			o.PayShare, envPaymentSecret)
	}
	return nil
}

// seckillMetricsPort is the seckill pods' and Service's metrics port
// (controllers' port contract: "metrics", 9090).
const seckillMetricsPort = "9090"

// metricsURLOf is the seckill's metrics URL beside the API's base URL: the
// same host on the metrics port. An unparsable base gives "" (the loadtest
// then reports the base URL itself).
func metricsURLOf(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + net.JoinHostPort(u.Hostname(), seckillMetricsPort)
}

// writeReport writes the report as JSON (--json) or as text.
func (lf *loadtestFlags) writeReport(out io.Writer, rep *loadtest.Report) error {
	if lf.asJSON {
		return rep.WriteJSON(out)
	}
	return rep.WriteText(out)
}

// resolveLoadtestSale names the sale (from --file or --fs), connects to the
// cluster when --fs is given and a kubeconfig is found, and returns the
// FlashSale when one is known (the manifest first, else the cluster's).
func resolveLoadtestSale(ctx context.Context, o *loadtest.Options, file, fsRef, kubeconfig string) (*v1alpha1.FlashSale, error) {
	var sale *v1alpha1.FlashSale
	if file != "" {
		fs, err := manifest.Load(file)
		if err != nil {
			return nil, err
		}
		sale = fs
		o.Namespace, o.Name = fs.Namespace, fs.Name
	}
	if fsRef == "" {
		if sale == nil {
			return nil, errors.New("no sale: give --file sale.yaml or --fs NAMESPACE/NAME")
		}
		o.KubeNote = "no --fs NAMESPACE/NAME: the FlashSale's status is not checked"
		return sale, nil
	}
	ns, name, ok := strings.Cut(fsRef, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("--fs %q: want NAMESPACE/NAME", fsRef)
	}
	if sale != nil && (ns != o.Namespace || name != o.Name) {
		return nil, fmt.Errorf("--fs %s/%s and --file (%s) name different sales", ns, name, sale.SaleKey())
	}
	o.Namespace, o.Name = ns, name
	cfg, err := loadtestKubeConfig(kubeconfig)
	if err != nil {
		o.KubeNote = "no kubeconfig (" + err.Error() + "): the FlashSale's status is not checked"
		return sale, nil
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	o.Kube = c
	if sale != nil {
		return sale, nil
	}
	fs, err := loadtest.GetFlashSale(ctx, c, ns, name)
	if err != nil {
		return nil, err
	}
	return fs, nil
}

func loadtestKubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	return ctrl.GetConfig()
}

// loadtestPaymentSecret: the flag, else the file, else the environment.
func loadtestPaymentSecret(secret, file string) (string, error) {
	if secret != "" {
		return strings.TrimSpace(secret), nil
	}
	b, err := readPaymentSecret(file)
	return string(b), err
}
