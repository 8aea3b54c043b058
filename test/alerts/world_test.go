package alerts_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const (
	saleName  = "alerts"
	paySecret = "alerts-pay-secret" //nolint:gosec // G101: the test sale's payment secret, nothing real
	// scarce sells out during the test; plenty never does (a sale whose
	// every SKU sold out would start draining).
	scarce, plenty = "1001", "1002"
)

// world is one sale run for real: the operator (`flashsale manager` against
// envtest), its seckill, worker, rollback and a metrics-serving audit as
// processes of the flashsale binary, on a private Redis with a replica, a
// fresh MariaDB database and an in-process Kafka (kfake), plus redis_exporter
// and mysqld_exporter. The worker, the rollback and mysqld_exporter reach
// MariaDB through mysql, a proxy the test cuts. Everything stops at cleanup.
type world struct {
	t       *testing.T
	ns      string
	k8s     client.Client
	kubecfg string
	bin     string
	redis   *testutil.RedisServer
	replica *testutil.RedisServer
	rdb     *redis.Client
	dsn     string
	mysql   *testutil.Proxy
	kafka   *kfake.Cluster
	// brokerDown makes the broker unreachable.
	brokerDown atomic.Bool
	file       string
	shop       *shop
	// ports are the ports handed out to the processes.
	ports map[int]bool
	jobs  []scrapeJob
}

func startWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, ns: testutil.UniqueName(t)}
	w.bin = buildFlashsale(t)
	cfg, k8s := testutil.Kube(t, cli.Scheme())
	w.k8s, w.kubecfg = k8s, testutil.Kubeconfig(t, cfg)
	// A private Redis: the exporter's series are this sale's alone, and
	// it has a maxmemory (the dashboard's memory panel shows it against
	// it) and a replica (spec.redis.durability).
	w.redis = testutil.StartRedisServer(t, "--maxmemory", "512mb")
	w.replica = testutil.StartReplica(t, w.redis)
	w.rdb = w.redis.Client(t)
	_, w.dsn = testutil.MySQL(t)
	dcfg, err := mysql.ParseDSN(w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	w.mysql = testutil.TCPProxy(t, dcfg.Addr)
	w.kafka, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.kafka.Close)
	// While brokerDown is set, the broker closes every connection that
	// sends it a request: Kafka unreachable.
	w.kafka.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		w.kafka.KeepControl()
		if w.brokerDown.Load() {
			return nil, errors.New("kafka is down (test fault)"), true
		}
		return nil, nil, false
	})
	w.startOperator()
	w.startDataPlane()
	w.startExporters()
	return w
}

// buildFlashsale builds the flashsale binary once into a temporary directory.
func buildFlashsale(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "flashsale")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = testutil.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build flashsale: %v\n%s", err, b)
	}
	return out
}

// proxiedDSN is the DSN through the proxy the test cuts, with short
// timeouts so that a cut is noticed within seconds.
func (w *world) proxiedDSN() string {
	cfg, err := mysql.ParseDSN(w.dsn)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg.Addr = w.mysql.Addr()
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = time.Second, 2*time.Second, 2*time.Second
	return cfg.FormatDSN()
}

// addr is a free loopback address no other process of the test was given.
func (w *world) addr() string {
	for {
		port := testutil.FreePort(w.t)
		if !w.ports[port] {
			if w.ports == nil {
				w.ports = map[int]bool{}
			}
			w.ports[port] = true
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
}

// startOperator runs `flashsale manager` and creates the sale: it starts 20
// s from now, with a waiting room (spec.queue), Kafka, durability on one
// replica, and a payment window short enough that the rollback cancels
// orders during the test.
func (w *world) startOperator() {
	t, ctx := w.t, context.Background()
	if err := w.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.ns}}); err != nil {
		t.Fatal(err)
	}
	if err := w.k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: controllers.DefaultEndpointsSecret, Namespace: w.ns},
		StringData: map[string]string{controllers.KeyRedisAddress: w.redis.Addr, controllers.KeyMySQLDSN: w.dsn,
			controllers.KeyKafkaBrokers: strings.Join(w.kafka.ListenAddrs(), ",")},
	}); err != nil {
		t.Fatal(err)
	}
	metrics := w.addr()
	w.start("operator", []string{"KUBECONFIG=" + w.kubecfg}, "manager", "--image=flashsale:alerts",
		"--health-probe-bind-address=0", "--log-format=text", "--metrics-secure=false", "--metrics-bind-address="+metrics,
		"--watch-namespaces="+w.ns, "--refresh-interval=1s", "--audit-interval=2s")
	w.jobs = append(w.jobs, scrapeJob{Name: "operator", Addr: metrics})

	now := time.Now().Truncate(time.Second)
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: saleName},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime:      metav1.NewTime(now.Add(20 * time.Second)),
			EndTime:        metav1.NewTime(now.Add(time.Hour)),
			WarmupLead:     &metav1.Duration{Duration: 5 * time.Minute},
			PaymentTimeout: &metav1.Duration{Duration: 20 * time.Second},
			SKUs: []v1alpha1.SKU{
				{ID: scarce, Stock: 3, Price: "999.00", PerUserLimit: 1},
				{ID: plenty, Stock: 100000, Price: "9.90", PerUserLimit: 1},
			},
			Queue: &v1alpha1.Queue{AdmitPerSecond: 1000},
			// Tokens outlive the faults before the sell-out scenario.
			Token:     &v1alpha1.Token{TTL: &metav1.Duration{Duration: 10 * time.Minute}},
			RateLimit: v1alpha1.RateLimit{RequestsPerSecond: 100000, PerUserPerSecond: 100, PerIPPerSecond: 10000},
			Kafka:     &v1alpha1.Kafka{Partitions: 2},
			Redis:     v1alpha1.Redis{Durability: &v1alpha1.Durability{Replicas: 1}},
			Seckill:   v1alpha1.Seckill{Replicas: 1},
			Worker:    v1alpha1.Worker{Replicas: 1},
		},
	}
	if err := w.k8s.Create(ctx, fs); err != nil {
		t.Fatal(err)
	}
	w.markReady()
}

// markReady plays the Deployment controller and the kubelet, which envtest
// has not: every Deployment of the sale is reported available, now and
// whenever the operator changes one, until the test ends.
func (w *world) markReady() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var list appsv1.DeploymentList
			if err := w.k8s.List(ctx, &list, client.InNamespace(w.ns)); err == nil {
				for i := range list.Items {
					d := &list.Items[i]
					n := int32(1)
					if d.Spec.Replicas != nil {
						n = *d.Spec.Replicas
					}
					st := d.Status
					if st.ObservedGeneration != d.Generation || st.Replicas != n || st.UpdatedReplicas != n ||
						st.ReadyReplicas != n || st.AvailableReplicas != n {
						d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
						_ = w.k8s.Status().Update(ctx, d)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
}

// startDataPlane runs the seckill, worker, rollback and audit as the pods
// run them: from the operator's rendered sale.yaml and token Secret.
func (w *world) startDataPlane() {
	t, ctx := w.t, context.Background()
	var cm corev1.ConfigMap
	var tok corev1.Secret
	testutil.Eventually(t, time.Minute, "the operator renders the sale's ConfigMap and token Secret", func() bool {
		return w.k8s.Get(ctx, types.NamespacedName{Namespace: w.ns, Name: saleName + "-config"}, &cm) == nil &&
			w.k8s.Get(ctx, types.NamespacedName{Namespace: w.ns, Name: saleName + "-token"}, &tok) == nil
	})
	dir := t.TempDir()
	w.file = filepath.Join(dir, "sale.yaml")
	keys := filepath.Join(dir, "token-keys")
	if err := os.WriteFile(w.file, []byte(cm.Data["sale.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, tok.Data["keys"], 0o600); err != nil {
		t.Fatal(err)
	}
	brokers := "--kafka-brokers=" + strings.Join(w.kafka.ListenAddrs(), ",")
	common := []string{"--file=" + w.file, "--redis-addr=" + w.redis.Addr}
	sale := map[string]string{"namespace": w.ns, "flashsale_dev_sale": saleName}
	listen, seckillMetrics := w.addr(), w.addr()
	w.start("seckill", []string{"FLASHSALE_PAYMENT_SECRET=" + paySecret}, append([]string{"seckill", "--listen=" + listen,
		"--metrics-addr=" + seckillMetrics, "--mysql-dsn=" + w.dsn, "--token-key-file=" + keys, "--poll-interval=100ms"}, common...)...)
	workerMetrics := w.addr()
	// The worker and the rollback reach MySQL through the proxy: the
	// outage the test makes is theirs (the seckill's payments and the
	// audits go straight to MariaDB).
	w.start("worker", nil, append([]string{"worker", "--metrics-addr=" + workerMetrics, "--mysql-dsn=" + w.proxiedDSN(),
		brokers, "--pod-id=worker-0", "--kafka-session-timeout=2s", "--flush-interval=20ms"}, common...)...)
	rollbackMetrics := w.addr()
	w.start("rollback", nil, append([]string{"rollback", "--metrics-addr=" + rollbackMetrics, "--mysql-dsn=" + w.proxiedDSN()}, common...)...)
	auditMetrics := w.addr()
	w.start("audit", nil, append([]string{"audit", "--metrics-addr=" + auditMetrics, "--every=1s", "--mysql-dsn=" + w.dsn, brokers}, common...)...)
	w.jobs = append(w.jobs,
		scrapeJob{Name: "seckill", Addr: seckillMetrics, Labels: sale},
		scrapeJob{Name: "worker", Addr: workerMetrics, Labels: sale},
		scrapeJob{Name: "rollback", Addr: rollbackMetrics, Labels: sale},
		scrapeJob{Name: "audit", Addr: auditMetrics, Labels: sale})
	w.shop = newShop(t, "http://"+listen+"/api/v1/sales/"+w.ns+"/"+saleName)
}

// startExporters runs redis_exporter on the sale's Redis and
// mysqld_exporter on MariaDB through the proxy: cutting it is MySQL down.
func (w *world) startExporters() {
	t := w.t
	redisAddr, mysqlAddr := w.addr(), w.addr()
	startProcess(t, "redis_exporter", pinnedTool(t, "redis_exporter", "REDIS_EXPORTER"), "-redis.addr", "redis://"+w.redis.Addr,
		"-web.listen-address", redisAddr)
	cfg, err := mysql.ParseDSN(w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(w.mysql.Addr(), ":")
	cnf := filepath.Join(t.TempDir(), "my.cnf")
	// mysqld_exporter reads its credentials only from a my.cnf (or env).
	if err := os.WriteFile(cnf, fmt.Appendf(nil, "[client]\nuser=%s\npassword=%s\nhost=%s\nport=%s\n", cfg.User, cfg.Passwd, host, port), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "mysqld_exporter", pinnedTool(t, "mysqld_exporter", "MYSQLD_EXPORTER"), "--config.my-cnf="+cnf, "--web.listen-address="+mysqlAddr)
	// The exporters run beside the sale, not in it: no sale label.
	w.jobs = append(w.jobs,
		scrapeJob{Name: "redis", Addr: redisAddr, Labels: map[string]string{"namespace": w.ns}},
		scrapeJob{Name: "mysql", Addr: mysqlAddr, Labels: map[string]string{"namespace": w.ns}})
}

// start runs a flashsale subcommand until the test ends.
func (w *world) start(name string, env []string, args ...string) {
	w.t.Helper()
	startProcessEnv(w.t, name, env, w.bin, args...)
}

// tail is the last n bytes of a process's output, for the failure log.
func tail(s string, n int) string {
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
