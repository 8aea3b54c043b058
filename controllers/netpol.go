package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;create;patch;delete

// NetworkPolicyConfig says whether and how the operator fences a sale's pods
// with NetworkPolicies.
type NetworkPolicyConfig struct {
	// Enabled makes the operator apply the sale's NetworkPolicies.
	Enabled bool
	// MetricsFrom are the peers allowed to scrape the pods' metrics ports
	// (e.g. the monitoring namespace's Prometheus); empty allows every pod
	// of every namespace.
	MetricsFrom []networkingv1.NetworkPolicyPeer
	// DependencyPorts are the TCP ports of the sale's Redis, MySQL and
	// Kafka, the pods' only egress besides DNS. The reconciler fills them
	// per sale from its endpoints (salePolicyInput) and plans no policies
	// for a sale whose endpoints it cannot read: default ports would cut a
	// sale on other ports off its dependencies.
	DependencyPorts []int32
}

// Default ports, for an address that names none (the client dials these).
const (
	defaultRedisPort = 6379
	defaultMySQLPort = 3306
	defaultKafkaPort = 9092
	dnsPort          = 53
)

// networkPolicies are the NetworkPolicies of a sale's pods, none when off.
// The seckill pods accept buyers on seckillPort from anywhere and scrapes
// on seckillMetricsPort; the worker and rollback pods accept scrapes only;
// all three may reach DNS and the sale's dependencies, nothing else.
//
// The ports are numbers, not the names of the port contract: pods rendered
// by operator 0.1.0 and held through a live sale name every port "http"
// (the worker's 9090, the rollback's 9091, the seckill's 8080, which also
// served its metrics then), and a named port would not let their scrapes
// in. The numbers cover the old pods and the new ones alike.
func networkPolicies(fs *v1alpha1.FlashSale, in PlanInput) []*networkingv1.NetworkPolicy {
	cfg := in.NetworkPolicy
	if !cfg.Enabled {
		return nil
	}
	deps := cfg.DependencyPorts
	scrape := func(port int32) networkingv1.NetworkPolicyIngressRule {
		return networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromInt32(port))},
			From:  metricsPeers(cfg.MetricsFrom),
		}
	}
	buyers := networkingv1.NetworkPolicyIngressRule{
		// No From: the buyers come through whatever Ingress or load
		// balancer the shop runs, from anywhere.
		Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromInt32(seckillPort))},
	}
	seckillEgress := deps
	if p, ok := riskPort(fs); ok {
		seckillEgress = sortedPorts(append(slices.Clone(deps), p))
	}
	return []*networkingv1.NetworkPolicy{
		netpol(fs, ComponentSeckill, []networkingv1.NetworkPolicyIngressRule{buyers, scrape(seckillMetricsPort)}, seckillEgress),
		netpol(fs, ComponentWorker, []networkingv1.NetworkPolicyIngressRule{scrape(workerPort)}, deps),
		netpol(fs, ComponentRollback, []networkingv1.NetworkPolicyIngressRule{scrape(rollbackPort)}, deps),
	}
}

// netpol is the policy of one component's pods: ingress as given, egress
// to DNS and the TCP ports given.
func netpol(fs *v1alpha1.FlashSale, component string, ingress []networkingv1.NetworkPolicyIngressRule, egressPorts []int32) *networkingv1.NetworkPolicy {
	udp := corev1.ProtocolUDP
	dns := intstr.FromInt32(dnsPort)
	egress := []networkingv1.NetworkPolicyEgressRule{{
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, tcpPort(dns)},
	}}
	deps := networkingv1.NetworkPolicyEgressRule{}
	for _, p := range egressPorts {
		deps.Ports = append(deps.Ports, tcpPort(intstr.FromInt32(p)))
	}
	// Ports, not destinations: the endpoints are often host names outside
	// the cluster, whose addresses a policy cannot name.
	egress = append(egress, deps)
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: Name(fs, component), Namespace: fs.Namespace, Labels: Labels(fs, component)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(fs, component)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     ingress,
			Egress:      egress,
		},
	}
}

func tcpPort(p intstr.IntOrString) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &p}
}

// metricsPeers are who may scrape: the configured peers, else every pod of
// every namespace (an empty namespaceSelector), which still keeps out
// anything outside the cluster.
func metricsPeers(from []networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer {
	if len(from) > 0 {
		out := make([]networkingv1.NetworkPolicyPeer, len(from))
		for i := range from {
			from[i].DeepCopyInto(&out[i])
		}
		return out
	}
	return []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}
}

// riskPort is the TCP port of spec.risk's verifier (the seckill pods call it).
func riskPort(fs *v1alpha1.FlashSale) (int32, bool) {
	if fs.Spec.Risk == nil {
		return 0, false
	}
	u, err := url.Parse(fs.Spec.Risk.VerifierURL)
	if err != nil {
		return 0, false
	}
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil && p > 0 {
		return int32(p), true
	}
	if u.Scheme == "https" {
		return 443, true
	}
	return 80, true
}

// ownedNetworkPolicies names the NetworkPolicies a sale may own, for
// teardown: all three, whether or not the operator runs with policies now.
func ownedNetworkPolicies(fs *v1alpha1.FlashSale) []client.Object {
	var out []client.Object
	for _, c := range []string{ComponentSeckill, ComponentWorker, ComponentRollback} {
		out = append(out, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: Name(fs, c), Namespace: fs.Namespace}})
	}
	return out
}

// salePolicyInput is r.NetworkPolicy with the ports of the sale's
// dependencies filled in. They are read from the sale's endpoints Secret
// once per set of endpoints (the connections the sale shares carry the
// fingerprint of what was read) and kept: the Secrets are not read again
// on every reconcile.
//
// Where the ports cannot be known this reconcile (the Secret unreadable,
// or no longer what the sale is connected to), it turns the policies off
// for this plan: none is written or changed, the ones that exist stay as
// they are (deleteNetworkPolicies deletes only when the operator runs
// without policies), and the next reconcile tries again.
func (r *FlashSaleReconciler) salePolicyInput(ctx context.Context, s *scope) NetworkPolicyConfig {
	cfg := r.NetworkPolicy
	if !cfg.Enabled {
		return cfg
	}
	ports, err := r.saleDependencyPorts(ctx, s)
	if err != nil {
		log.FromContext(ctx).Info("NetworkPolicies left as they are: the sale's dependency ports are unknown", "reason", err.Error())
		cfg.Enabled = false
		return cfg
	}
	cfg.DependencyPorts = ports
	return cfg
}

// saleDependencyPorts are the ports of the endpoints the sale is connected
// to, from the cache or read anew.
func (r *FlashSaleReconciler) saleDependencyPorts(ctx context.Context, s *scope) ([]int32, error) {
	if s.c == nil {
		return nil, errors.New("not connected to the sale's dependencies")
	}
	if ports, ok := depPortCache.get(s.c.fingerprint); ok {
		return ports, nil
	}
	e, err := r.resolveEndpoints(ctx, s.sale)
	if err != nil {
		return nil, fmt.Errorf("read the endpoints: %w", err)
	}
	if e.fingerprint() != s.c.fingerprint {
		// The Secret changed since the sale connected: its ports and the
		// brokers or nodes the live connections learnt would not match.
		// The connections follow within ResolveEvery, the policies then.
		return nil, errors.New("the endpoints Secret changed since the sale connected")
	}
	ports := dependencyPorts(ctx, e, s.c)
	depPortCache.put(e.fingerprint(), ports)
	return ports, nil
}

// deleteNetworkPolicies deletes the sale's NetworkPolicies when the
// operator runs without them (--network-policies switched off on a
// running operator's upgrade): otherwise they would fence the pods until
// the sale is torn down. The caller calls it only when it applies the
// plan, so a hundred sales without policies do not cost three DELETEs
// each on every status refresh. With policies on it does nothing, even
// when this plan holds none (the sale's ports unknown): those stay.
func (r *FlashSaleReconciler) deleteNetworkPolicies(ctx context.Context, fs *v1alpha1.FlashSale) error {
	if r.NetworkPolicy.Enabled {
		return nil
	}
	for _, np := range ownedNetworkPolicies(fs) {
		if err := r.Delete(ctx, np); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete NetworkPolicy %s: %w", np.GetName(), err)
		}
	}
	return nil
}

// dependencyPorts are the TCP ports the pods dial: those of the Secret's
// addresses, and those the live connections learnt beyond them (the other
// nodes of a Redis Cluster, the brokers Kafka advertises).
func dependencyPorts(ctx context.Context, e Endpoints, c *conns) []int32 {
	var ports []int32
	for _, a := range e.RedisAddrs {
		ports = append(ports, portOf(a, defaultRedisPort))
	}
	ports = append(ports, mysqlPort(e.MySQLDSN))
	for _, b := range e.KafkaBrokers {
		ports = append(ports, portOf(b, defaultKafkaPort))
	}
	if c != nil && c.kafka != nil {
		for _, b := range c.kafka.Brokers() {
			ports = append(ports, portOf(b.Addr(), defaultKafkaPort))
		}
	}
	if cc, ok := c.redisCluster(); ok {
		// Best effort: a node it cannot list now is missed until the
		// endpoints change (the seed addresses are in either way).
		_ = cc.ForEachShard(ctx, func(_ context.Context, n *redis.Client) error {
			ports = append(ports, portOf(n.Options().Addr, defaultRedisPort))
			return nil
		})
	}
	return sortedPorts(ports)
}

// redisCluster is the sale's Redis Cluster client, if it runs on one.
func (c *conns) redisCluster() (*redis.ClusterClient, bool) {
	if c == nil {
		return nil, false
	}
	cc, ok := c.rdb.(*redis.ClusterClient)
	return cc, ok
}

// portOf is the port of a host:port address; an address without one (or
// not a number) falls back to the service's default port.
func portOf(addr string, def int32) int32 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return def
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return def
	}
	return int32(n)
}

// mysqlPort is the port of a go-sql-driver DSN's tcp address; a unix
// socket or an address without a port falls back to 3306.
func mysqlPort(dsn string) int32 {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil || cfg.Net != "tcp" {
		return defaultMySQLPort
	}
	return portOf(cfg.Addr, defaultMySQLPort)
}

func sortedPorts(ports []int32) []int32 {
	slices.Sort(ports)
	return slices.Compact(ports)
}

// depPortCache holds the dependency ports by endpoints fingerprint (a hash
// of the Secret's content, so a changed Secret is a new entry, read anew).
// Sales on the same endpoints share an entry; the reconciles that use it
// run concurrently, hence the mutex; it is bounded so that endpoints
// rotated many times over a long-lived operator do not grow it for ever.
var depPortCache = &portCache{m: map[string][]int32{}}

// maxPortCacheEntries bounds depPortCache.
const maxPortCacheEntries = 1024

type portCache struct {
	mu sync.Mutex
	m  map[string][]int32
}

func (c *portCache) get(fp string) ([]int32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[fp]
	return p, ok
}

func (c *portCache) put(fp string, ports []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[fp]; !ok && len(c.m) >= maxPortCacheEntries {
		// Evict one entry, not all: emptying it would make every live
		// sale read its Secret again at once.
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[fp] = slices.Clone(ports)
}
