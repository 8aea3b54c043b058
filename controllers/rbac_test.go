package controllers_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// access is one kind of request: the RBAC triple it is authorised by.
type access struct{ group, resource, verb string }

func (a access) String() string {
	if a.group == "" {
		return a.verb + " " + a.resource
	}
	return a.verb + " " + a.resource + "." + a.group
}

// apiLog records every request the manager sends, by the RBAC triple that
// authorises it, and those the API server refused.
type apiLog struct {
	mu        sync.Mutex
	used      map[access]int
	forbidden map[string]int
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (l *apiLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if a, ok := requestAccess(req); ok && err == nil {
			l.mu.Lock()
			l.used[a]++
			if a.verb == "patch" && resp.StatusCode == http.StatusCreated {
				// A server-side apply that created the object: the API
				// server authorised it as a create too.
				l.used[access{a.group, a.resource, "create"}]++
			}
			if resp.StatusCode == http.StatusForbidden {
				l.forbidden[a.String()+" ("+req.URL.Path+")"]++
			}
			l.mu.Unlock()
		}
		return resp, err
	})
}

// requestAccess maps a request to its RBAC triple, as the API server's
// RequestInfo does: /api/v1/... is the core group, /apis/GROUP/VERSION/...
// the others; the resource may carry a subresource (flashsales/status).
// Discovery and other non-resource requests are not resource requests.
func requestAccess(req *http.Request) (access, bool) {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	var group string
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group, rest = parts[1], parts[3:]
	default:
		return access{}, false
	}
	if len(rest) > 2 && rest[0] == "namespaces" {
		rest = rest[2:] // a namespaced resource
	}
	if len(rest) == 0 {
		return access{}, false
	}
	a := access{group: group, resource: rest[0]}
	named := len(rest) > 1
	if len(rest) > 2 {
		a.resource += "/" + rest[2]
	}
	switch req.Method {
	case http.MethodGet:
		a.verb = "list"
		if named {
			a.verb = "get"
		} else if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
			a.verb = "watch"
		}
	case http.MethodPost:
		a.verb = "create"
	case http.MethodPut:
		a.verb = "update"
	case http.MethodPatch:
		a.verb = "patch"
	case http.MethodDelete:
		a.verb = "delete"
		if !named {
			a.verb = "deletecollection"
		}
	default:
		return access{}, false
	}
	return a, true
}

// notExercisable are grants the envtest life of a sale cannot use, each
// with why the operator needs it all the same.
var notExercisable = map[access]string{
	// Owner references with blockOwnerDeletion (SetControllerReference sets
	// it) need update on the owner's finalizers where the
	// OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift,
	// many hardened clusters); envtest's kube-apiserver does not enable it.
	{"flashsale.dev", "flashsales/finalizers", "update"}: "OwnerReferencesPermissionEnforcement",
}

// unusedGrants lists the (group, resource, verb) the rules grant that were
// never used.
func unusedGrants(rules []rbacv1.PolicyRule, used map[access]int) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					a := access{g, res, v}
					if _, excused := notExercisable[a]; used[a] == 0 && !excused {
						out = append(out, a.String())
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func readRules(t *testing.T, file string, into client.Object) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "config", "rbac", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		t.Fatalf("config/rbac/%s: %v", file, err)
	}
}

// bindOperatorRBAC creates, for a ServiceAccount of e's namespace, the
// ClusterRole of config/rbac/role.yaml with a ClusterRoleBinding and the
// leader election Role of config/rbac/leader_election_role.yaml with a
// RoleBinding, and returns the manager's config impersonating it, every
// request recorded in log.
func bindOperatorRBAC(t *testing.T, e *env, log *apiLog) (*rest.Config, *rbacv1.ClusterRole, *rbacv1.Role) {
	t.Helper()
	const sa = "flashsale-operator"
	var cr rbacv1.ClusterRole
	var role rbacv1.Role
	readRules(t, "role.yaml", &cr)
	readRules(t, "leader_election_role.yaml", &role)
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: e.ns}}
	cr.ObjectMeta = metav1.ObjectMeta{Name: e.ns + "-manager"}
	role.ObjectMeta = metav1.ObjectMeta{Name: "leader-election", Namespace: e.ns}
	objs := []client.Object{
		&cr,
		&rbacv1.ClusterRoleBinding{ObjectMeta: cr.ObjectMeta, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}},
		&role,
		&rbacv1.RoleBinding{ObjectMeta: role.ObjectMeta, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}},
	}
	for _, o := range objs {
		if err := e.k8s.Create(e.ctx, o.DeepCopyObject().(client.Object)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, o := range objs[:2] { // cluster-scoped: they outlive the namespace
			_ = e.k8s.Delete(e.ctx, o)
		}
	})
	admin, _ := testutil.Kube(t, cli.Scheme())
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + e.ns + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + e.ns, "system:authenticated"},
	}
	// The API server's RBAC authorizer learns of new bindings from its own
	// informers: wait until the binding holds.
	probe, err := client.New(cfg, client.Options{Scheme: cli.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the ClusterRoleBinding to take effect", func() bool {
		return probe.List(e.ctx, &v1alpha1.FlashSaleList{}, client.InNamespace(e.ns)) == nil
	})
	cfg.WrapTransport = log.wrap
	return cfg, &cr, &role
}

// raiseEveryStock raises the stock of each of the sale's SKUs in one update,
// mid-sale, and waits for the operator to have warmed it. The warm-up tells
// each raise in an Event of the same reason on the same object: the second
// is recorded as a series of the first, a patch of the Event.
func raiseEveryStock(t *testing.T, e *env, name string) {
	t.Helper()
	var fs v1alpha1.FlashSale
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := e.k8s.Get(e.ctx, types.NamespacedName{Namespace: e.ns, Name: name}, &fs); err != nil {
			return err
		}
		for i := range fs.Spec.SKUs {
			fs.Spec.SKUs[i].Stock += 10
		}
		return e.k8s.Update(e.ctx, &fs)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitSale(t, e, name, "the raised stock warmed", func(got *v1alpha1.FlashSale, err error) bool {
		return err == nil && got.Status.ObservedGeneration >= fs.Generation
	})
}

// listWithoutStreaming makes the informers of the managers started from now
// on LIST and then WATCH, as they do against an API server that does not
// stream lists (client-go's WatchListClient falls back so): the list verb
// is then exercised. Streaming lists need watch alone.
func listWithoutStreaming(t *testing.T) {
	prev := clientfeatures.FeatureGates()
	clientfeatures.ReplaceFeatureGates(gatesWithout{Gates: prev, off: clientfeatures.WatchListClient})
	t.Cleanup(func() { clientfeatures.ReplaceFeatureGates(prev) })
}

type gatesWithout struct {
	clientfeatures.Gates
	off clientfeatures.Feature
}

func (g gatesWithout) Enabled(f clientfeatures.Feature) bool { return f != g.off && g.Gates.Enabled(f) }

// TestRBACIsMinimal runs sales through their whole life with the manager
// authenticated as a ServiceAccount bound to nothing but the ClusterRole of
// config/rbac/role.yaml (the chart ships a copy) and the leader election
// Role: one sale is created, warmed, goes live, ends, is torn down and then
// deleted; another is deleted while live (the finalizer's cleanup). No
// request may be refused, and every verb the roles grant must have been
// used: a grant nothing uses is a grant too many.
func TestRBACIsMinimal(t *testing.T) {
	e := newEnv(t, envOpts{})
	listWithoutStreaming(t)
	log := &apiLog{used: map[access]int{}, forbidden: map[string]int{}}
	cfg, cr, role := bindOperatorRBAC(t, e, log)
	// Also when the sale got stuck on the way: what was refused is why.
	t.Cleanup(func() {
		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.forbidden) > 0 {
			t.Errorf("requests refused to the operator's ServiceAccount: %v", log.forbidden)
		}
	})
	const doomed = "doomed"
	e.sale(nil)
	e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Name = doomed
		// SKUs of its own: the same SKUs in the same window would be an
		// overlap, and the later sale would wait (Conflict).
		fs.Spec.SKUs[0].ID, fs.Spec.SKUs[1].ID = "2001", "2002"
	})
	func() {
		// Stopped before the roles are checked: a leader releases its
		// lease (an update) on the way out.
		stop := runScopedOperatorStoppable(t, e, scopedOpts{cfg: cfg, leaderElection: true})
		defer stop()
		waitPhase(t, e, saleName, v1alpha1.PhasePending)
		saleToActive(t, e, 6, saleName, doomed)
		raiseEveryStock(t, e, saleName)
		deleteSale(t, e, doomed)

		e.clk.SetTime(e.t0.Add(20 * time.Minute))
		waitPhase(t, e, saleName, v1alpha1.PhaseDraining)
		playKubelet(t, e, 3)
		e.clk.SetTime(e.t0.Add(21*time.Minute + time.Second))
		waitPhase(t, e, saleName, v1alpha1.PhaseEnded)
		deleteSale(t, e, saleName)
	}()

	log.mu.Lock()
	defer log.mu.Unlock()
	var used []string
	for a, n := range log.used {
		used = append(used, fmt.Sprintf("%s ×%d", a, n))
	}
	sort.Strings(used)
	t.Logf("requests of the operator, by what authorises them:\n  %s", strings.Join(used, "\n  "))
	if u := unusedGrants(cr.Rules, log.used); len(u) > 0 {
		t.Errorf("config/rbac/role.yaml grants what a sale's whole life never used (drop the +kubebuilder:rbac markers, make manifests):\n  %s", strings.Join(u, "\n  "))
	}
	if u := unusedGrants(role.Rules, log.used); len(u) > 0 {
		t.Errorf("config/rbac/leader_election_role.yaml grants what leader election never used:\n  %s", strings.Join(u, "\n  "))
	}
}
