package controllers_test

import (
	"context"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
)

// monitoring is the scrapers' peer the tests configure.
var monitoring = networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
	MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}

// TestNetworkPoliciesOfASale: with policies on, a warming sale gets three
// NetworkPolicies from the real API server: the seckill pods take buyers on
// 8080 from anywhere and scrapes on 9090 from the configured peers only;
// the worker (9090) and rollback (9091) pods take scrapes only, by port
// number (pods of operator 0.1.0 held through a live sale name all their
// ports "http", so a named "metrics" port would not let their scrapes in); every pod may reach DNS
// and the TCP ports of the Redis, MySQL and Kafka its Secret names (read
// from the endpoints, Kafka on a random port), the seckill also the risk
// verifier's. Deleting the sale deletes them.
func TestNetworkPoliciesOfASale(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.r.NetworkPolicy = controllers.NetworkPolicyConfig{Enabled: true, MetricsFrom: []networkingv1.NetworkPolicyPeer{monitoring}}
	fs := e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Risk = &v1alpha1.Risk{VerifierURL: "https://risk.shop.example:8443/check"}
	})
	e.reconcile()
	if n := len(e.policies()); n != 0 {
		t.Fatalf("%d NetworkPolicies while Pending, want none before the pods", n)
	}
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)

	deps := e.dependencyPorts(t)
	want := map[string]struct {
		ingress []ingressRule
		egress  []int32
	}{
		controllers.ComponentSeckill: {
			ingress: []ingressRule{{port: "8080"}, {port: "9090", from: &monitoring}},
			egress:  sorted(append(slices.Clone(deps), 8443)),
		},
		controllers.ComponentWorker:   {ingress: []ingressRule{{port: "9090", from: &monitoring}}, egress: deps},
		controllers.ComponentRollback: {ingress: []ingressRule{{port: "9091", from: &monitoring}}, egress: deps},
	}
	got := e.policies()
	if len(got) != len(want) {
		t.Fatalf("%d NetworkPolicies, want %d: %v", len(got), len(want), names(got))
	}
	for _, np := range got {
		comp := np.Labels["app.kubernetes.io/component"]
		w, ok := want[comp]
		if !ok || np.Name != controllers.Name(fs, comp) {
			t.Errorf("unexpected NetworkPolicy %s (component %q)", np.Name, comp)
			continue
		}
		checkPolicy(t, fs, comp, np, w.ingress, w.egress)
	}

	if err := e.k8s.Delete(e.ctx, e.get()); err != nil {
		t.Fatal(err)
	}
	e.clk.SetTime(e.get().DeletionTimestamp.Add(time.Second))
	e.eventually("the sale is gone", e.gone)
	if left := e.policies(); len(left) != 0 {
		t.Fatalf("NetworkPolicies left after the sale was deleted: %v", names(left))
	}
}

// TestNoNetworkPoliciesWhenOff: the operator's default applies none.
func TestNoNetworkPoliciesWhenOff(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.sale(nil)
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)
	if e.deployment(controllers.ComponentSeckill) == nil {
		t.Fatal("no seckill Deployment while warming")
	}
	if got := e.policies(); len(got) != 0 {
		t.Fatalf("NetworkPolicies with policies off: %v", names(got))
	}
}

// TestNetworkPoliciesRemovedWhenSwitchedOff: an operator upgraded to run
// without --network-policies removes a live sale's policies when it applies
// the sale's plan, rather than leaving them to fence the pods until the
// sale is torn down; the sale's Deployments stay.
func TestNetworkPoliciesRemovedWhenSwitchedOff(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.r.NetworkPolicy = controllers.NetworkPolicyConfig{Enabled: true}
	e.sale(nil)
	e.reconcile()
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)
	if n := len(e.policies()); n != 3 {
		t.Fatalf("%d NetworkPolicies with policies on, want 3", n)
	}

	e.r.NetworkPolicy = controllers.NetworkPolicyConfig{} // helm upgrade --set networkPolicy.enabled=false
	e.clk.Step(time.Second)
	e.reconcile()
	if left := e.policies(); len(left) != 0 {
		t.Fatalf("NetworkPolicies left after switching them off: %v", names(left))
	}
	for _, c := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		if e.deployment(c) == nil {
			t.Errorf("no %s Deployment after switching the policies off", c)
		}
	}
}

// TestNetworkPoliciesKeptWhileEndpointsUnknown: when the sale's endpoints
// Secret cannot be read as its plan is applied, the operator does not guess
// the dependency ports (defaults would cut a sale on other ports, here a
// Kafka on a random port, off its dependencies): the sale's existing
// NetworkPolicies are left untouched while its other objects are applied.
// Once the Secret reads again the policies follow the real ports.
func TestNetworkPoliciesKeptWhileEndpointsUnknown(t *testing.T) {
	e := newEnv(t, envOpts{kafka: true})
	e.r.NetworkPolicy = controllers.NetworkPolicyConfig{Enabled: true}
	fs := e.sale(nil)
	e.reconcile() // Pending: connected, the endpoints read once
	deps := e.dependencyPorts(t)
	// The policies a previous operator process left (its port cache gone
	// with it), here with the sale's real ports.
	for _, c := range []string{controllers.ComponentSeckill, controllers.ComponentWorker, controllers.ComponentRollback} {
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: controllers.Name(fs, c), Namespace: e.ns, Labels: controllers.Labels(fs, c)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: controllers.SelectorLabels(fs, c)},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
				Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: tcpPorts(deps)}},
			},
		}
		if err := e.k8s.Create(e.ctx, np); err != nil {
			t.Fatal(err)
		}
	}
	before := versions(e.policies())

	reader := &failingSecrets{Reader: e.r.APIReader}
	e.r.APIReader = reader
	reader.fail.Store(true) // e.g. the endpoints Secret deleted, or the API server unreachable
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	if e.deployment(controllers.ComponentSeckill) == nil {
		t.Fatal("no seckill Deployment: the rest of the plan was not applied")
	}
	if after := versions(e.policies()); !maps.Equal(after, before) {
		t.Fatalf("NetworkPolicies changed while the endpoints could not be read: %v, were %v", after, before)
	}

	reader.fail.Store(false)
	e.clk.Step(time.Second)
	e.reconcile()
	for _, np := range e.policies() {
		if got := egressPorts(t, np); !slices.Equal(got, deps) {
			t.Errorf("%s: egress TCP ports %v once the endpoints read, want %v", np.Name, got, deps)
		}
	}
}

// failingSecrets fails reads of the endpoints Secret while fail is set, as
// an API server that is unreachable or a Secret deleted would.
type failingSecrets struct {
	client.Reader
	fail atomic.Bool
}

func (f *failingSecrets) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok && key.Name == controllers.DefaultEndpointsSecret && f.fail.Load() {
		return apierrors.NewServiceUnavailable("test: Secrets unreadable")
	}
	return f.Reader.Get(ctx, key, obj, opts...)
}

func tcpPorts(ports []int32) []networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	var out []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		port := intstr.FromInt32(p)
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
	}
	return out
}

// versions are the policies' resourceVersions by name.
func versions(nps []networkingv1.NetworkPolicy) map[string]string {
	out := map[string]string{}
	for _, np := range nps {
		out[np.Name] = np.ResourceVersion
	}
	return out
}

// ingressRule is one expected ingress rule: a port number, and from whom
// (nil: from anywhere).
type ingressRule struct {
	port string
	from *networkingv1.NetworkPolicyPeer
}

func checkPolicy(t *testing.T, fs *v1alpha1.FlashSale, comp string, np networkingv1.NetworkPolicy, ingress []ingressRule, egress []int32) {
	t.Helper()
	if !equality.Semantic.DeepEqual(np.Labels, controllers.Labels(fs, comp)) {
		t.Errorf("%s: labels %v, want %v", np.Name, np.Labels, controllers.Labels(fs, comp))
	}
	if !equality.Semantic.DeepEqual(np.Spec.PodSelector.MatchLabels, controllers.SelectorLabels(fs, comp)) {
		t.Errorf("%s: selects %v, want the %s pods", np.Name, np.Spec.PodSelector.MatchLabels, comp)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("%s: policy types %v, want Ingress and Egress", np.Name, np.Spec.PolicyTypes)
	}
	if len(np.OwnerReferences) != 1 || np.OwnerReferences[0].Name != fs.Name {
		t.Errorf("%s: owners %v, want the FlashSale", np.Name, np.OwnerReferences)
	}
	if len(np.Spec.Ingress) != len(ingress) {
		t.Fatalf("%s: %d ingress rules, want %d: %+v", np.Name, len(np.Spec.Ingress), len(ingress), np.Spec.Ingress)
	}
	for i, w := range ingress {
		r := np.Spec.Ingress[i]
		if len(r.Ports) != 1 || r.Ports[0].Port.Type != intstr.Int || r.Ports[0].Port.String() != w.port || *r.Ports[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("%s: ingress rule %d ports %+v, want TCP %s", np.Name, i, r.Ports, w.port)
		}
		switch {
		case w.from == nil && len(r.From) != 0:
			t.Errorf("%s: ingress on %s only from %+v, want from anywhere", np.Name, w.port, r.From)
		case w.from != nil && (len(r.From) != 1 || !equality.Semantic.DeepEqual(r.From[0], *w.from)):
			t.Errorf("%s: ingress on %s from %+v, want %+v", np.Name, w.port, r.From, *w.from)
		}
	}
	if got := egressPorts(t, np); !slices.Equal(got, egress) {
		t.Errorf("%s: egress TCP ports %v, want DNS and %v", np.Name, got, egress)
	}
}

// egressPorts checks that DNS (53 over UDP and TCP) is allowed and returns
// the other TCP ports the policy lets the pods reach, sorted; every egress
// port must be TCP but DNS's, and no rule may name destinations.
func egressPorts(t *testing.T, np networkingv1.NetworkPolicy) []int32 {
	t.Helper()
	var tcp []int32
	dns := map[corev1.Protocol]bool{}
	for _, r := range np.Spec.Egress {
		if len(r.To) != 0 || len(r.Ports) == 0 {
			t.Errorf("%s: egress rule %+v: want ports only", np.Name, r)
		}
		for _, p := range r.Ports {
			n := p.Port.IntVal
			switch {
			case n == 53:
				dns[*p.Protocol] = true
			case *p.Protocol == corev1.ProtocolTCP:
				tcp = append(tcp, n)
			default:
				t.Errorf("%s: egress on %s %d", np.Name, *p.Protocol, n)
			}
		}
	}
	if !dns[corev1.ProtocolUDP] || !dns[corev1.ProtocolTCP] {
		t.Errorf("%s: DNS not allowed over UDP and TCP: %v", np.Name, dns)
	}
	return sorted(tcp)
}

// dependencyPorts are the ports the test's endpoints Secret names: Redis,
// MySQL (from the DSN) and each kfake broker.
func (e *env) dependencyPorts(t *testing.T) []int32 {
	t.Helper()
	port := func(addr string) int32 {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		return int32(n)
	}
	cfg, err := mysql.ParseDSN(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	ports := []int32{port(e.rdb.Options().Addr), port(cfg.Addr)}
	for _, b := range e.brokers() {
		ports = append(ports, port(b))
	}
	return sorted(ports)
}

func (e *env) policies() []networkingv1.NetworkPolicy {
	e.t.Helper()
	var l networkingv1.NetworkPolicyList
	if err := e.k8s.List(e.ctx, &l, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	return l.Items
}

func names(nps []networkingv1.NetworkPolicy) []string {
	var out []string
	for _, np := range nps {
		out = append(out, np.Name)
	}
	return out
}

func sorted(p []int32) []int32 {
	slices.Sort(p)
	return slices.Compact(p)
}
