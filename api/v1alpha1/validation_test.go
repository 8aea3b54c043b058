package v1alpha1_test

// These tests check the FlashSale CRD (config/crd/bases, generated from the
// markers of flashsale_types.go) against a real kube-apiserver and etcd started
// by controller-runtime's envtest: the OpenAPI schema, the defaults and the CEL
// rules, including the transition rules that depend on status.phase.
//
// The same tables go through the data plane's offline check
// (runtime/sale/manifest), which must refuse, accept and default exactly as
// the API server does: that is the parity the --file commands promise.
//
// The binaries come from `make controlplane` (hack/controlplane.sh), which
// builds them from the Go module proxy and prints the directory to export as
// KUBEBUILDER_ASSETS; `make test` does both. Without them the tests fail: they
// never skip.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// testNamespace holds every object these tests create.
const testNamespace = "default"

var gvk = schema.GroupVersionKind{Group: "flashsale.dev", Version: "v1alpha1", Kind: "FlashSale"}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopKube()
	os.Exit(code)
}

// cluster returns a client of the shared test API server, starting it first if needed.
func cluster(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	_, c := testutil.Kube(t, scheme)
	return c
}

// validSale is a valid FlashSale as a client that is not Go (kubectl, Helm)
// would send it: only the fields set, no zero-valued structs.
func validSale(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"startTime": "2030-11-11T12:00:00Z",
			"endTime":   "2030-11-11T12:30:00Z",
			"skus": []any{
				map[string]any{"id": "1001", "stock": int64(100), "price": "99.00"},
				map[string]any{"id": "1002", "stock": int64(20), "price": "19.90", "perUserLimit": int64(3)},
			},
			"seckill": map[string]any{"replicas": int64(2), "maxReplicas": int64(8)},
			"worker":  map[string]any{"replicas": int64(2)},
			"kafka":   map[string]any{"partitions": int64(4)},
			"redis":   map[string]any{"mode": "cluster"},
		},
	}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(testNamespace)
	u.SetName(name)
	return u
}

// set sets the field at the dotted path (list elements by index, e.g.
// "spec.skus.0.stock") of u, or deletes it when value is del.
func set(t *testing.T, u *unstructured.Unstructured, path string, value any) {
	t.Helper()
	parts := strings.Split(path, ".")
	var cur any = u.Object
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				if value == del {
					delete(c, p)
				} else {
					c[p] = value
				}
				return
			}
			next, ok := c[p]
			if !ok {
				next = map[string]any{}
				c[p] = next
			}
			cur = next
		case []any:
			var idx int
			if _, err := fmt.Sscan(p, &idx); err != nil || idx < 0 || idx >= len(c) {
				t.Fatalf("set %s: bad index %q", path, p)
			}
			if last {
				c[idx] = value
				return
			}
			cur = c[idx]
		default:
			t.Fatalf("set %s: %q is not an object or a list", path, p)
		}
	}
}

// del, as a value for set, deletes the field.
var del = &struct{ deleted bool }{true}

// uniqueName returns a name no other test uses.
func uniqueName(t *testing.T) string {
	t.Helper()
	r := strings.NewReplacer("/", "-", "_", "-", " ", "-", ".", "-")
	n := strings.ToLower(r.Replace(t.Name()))
	if len(n) > 42 {
		n = n[len(n)-42:]
	}
	return strings.Trim(fmt.Sprintf("%s-%d", n, time.Now().UnixNano()%1e6), "-")
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// invalidSale is one way to get a FlashSale wrong. The same table goes to the
// API server (envtest) and to the offline check of the data plane
// (manifest.Parse, what every --file command runs): both must refuse it, both
// naming field.
type invalidSale struct {
	name   string
	mutate func(t *testing.T, u *unstructured.Unstructured)
	// field is the field both refusals must name: the path of one of their
	// causes, or, for a rule on the whole object (metadata.name), the start
	// of the message of a cause without a path.
	field string
	want  []string // more of the message: what is wrong
}

func invalidSales() []invalidSale {
	return []invalidSale{
		{"end before start", setTo("spec.endTime", "2030-11-11T11:00:00Z"),
			"spec.endTime", []string{"spec.endTime must be after spec.startTime"}},
		{"end equal to start", setTo("spec.endTime", "2030-11-11T12:00:00Z"),
			"spec.endTime", []string{"spec.endTime must be after spec.startTime"}},
		{"no start time", setTo("spec.startTime", del), "spec.startTime", []string{"Required value"}},
		{"start time not a date-time", setTo("spec.startTime", "tomorrow at noon"), "spec.startTime", nil},
		{"duplicate SKU ids", setTo("spec.skus.1.id", "1001"),
			"spec.skus[1]", []string{"Duplicate value", "spec.skus: SKU ids must be unique"}},
		{"too many SKUs", setTo("spec.skus", manySKUs(201)), "spec.skus", []string{"must have at most 200 items"}},
		{"negative stock", setTo("spec.skus.0.stock", int64(-1)), "spec.skus[0].stock", []string{"greater than or equal to 0"}},
		{"perUserLimit 0", setTo("spec.skus.1.perUserLimit", int64(0)), "spec.skus[1].perUserLimit", []string{"greater than or equal to 1"}},
		{"price with three decimals", setTo("spec.skus.0.price", "99.999"), "spec.skus[0].price", nil},
		{"price not a number", setTo("spec.skus.0.price", "free"), "spec.skus[0].price", nil},
		{"negative price", setTo("spec.skus.0.price", "-1.00"), "spec.skus[0].price", nil},
		{"SKU id with a slash", setTo("spec.skus.0.id", "10/01"), "spec.skus[0].id", nil},
		{"empty SKU id", setTo("spec.skus.0.id", ""), "spec.skus[0].id", nil},
		{"SKU id too long", setTo("spec.skus.0.id", strings.Repeat("x", 65)), "spec.skus[0].id", []string{"Too long"}},
		{"SKU without price", setTo("spec.skus.0.price", del), "spec.skus[0].price", []string{"Required value"}},
		{"no SKUs", setTo("spec.skus", []any{}), "spec.skus", []string{"at least 1 items"}},
		{"SKUs missing", setTo("spec.skus", del), "spec.skus", []string{"Required value"}},
		{"worker replicas above kafka partitions", setTo("spec.worker.replicas", int64(5)),
			"spec.worker.replicas", []string{"spec.worker.replicas must not exceed spec.kafka.partitions"}},
		{"worker replicas above the default partition count",
			func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.kafka", map[string]any{})
				set(t, u, "spec.worker.replicas", int64(13))
			},
			"spec.worker.replicas", []string{"spec.worker.replicas must not exceed spec.kafka.partitions"}},
		{"maxReplicas below replicas",
			func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.seckill.replicas", int64(4))
				set(t, u, "spec.seckill.maxReplicas", int64(3))
			},
			"spec.seckill.maxReplicas", []string{"spec.seckill.maxReplicas must be 0 (no autoscaling) or at least spec.seckill.replicas"}},
		{"seckill replicas 0", setTo("spec.seckill.replicas", int64(0)), "spec.seckill.replicas", []string{"greater than or equal to 1"}},
		{"drainingReplicas 0", setTo("spec.seckill.drainingReplicas", int64(0)), "spec.seckill.drainingReplicas", []string{"greater than or equal to 1"}},
		{"target CPU above 100%", setTo("spec.seckill.targetCPUUtilization", int64(101)),
			"spec.seckill.targetCPUUtilization", []string{"less than or equal to 100"}},
		{"target CPU 0", setTo("spec.seckill.targetCPUUtilization", int64(0)),
			"spec.seckill.targetCPUUtilization", []string{"greater than or equal to 1"}},
		{"lagThreshold 0", setTo("spec.worker.lagThreshold", int64(0)), "spec.worker.lagThreshold", []string{"greater than or equal to 1"}},
		{"redis mode not in the enum", setTo("spec.redis.mode", "sentinel"), "spec.redis.mode", []string{"Unsupported value", `"sentinel"`}},
		{"kafka partitions 0", setTo("spec.kafka.partitions", int64(0)), "spec.kafka.partitions", []string{"greater than or equal to 1"}},
		{"negative rate limit", setTo("spec.rateLimit", map[string]any{"perUserPerSecond": int64(-2)}), "spec.rateLimit.perUserPerSecond", nil},
		{"risk verifier not an http URL", setTo("spec.risk", map[string]any{"verifierURL": "ftp://risk.example/check"}), "spec.risk.verifierURL", nil},
		{"teardown policy not in the enum", setTo("spec.teardown.redisKeys", "Archive"), "spec.teardown.redisKeys", []string{"Unsupported value"}},
		{"topic teardown policy lower-case", setTo("spec.teardown.topic", "delete"), "spec.teardown.topic", []string{"Unsupported value"}},
		{"imagePullPolicy not in the enum", setTo("spec.imagePullPolicy", "Sometimes"), "spec.imagePullPolicy", []string{"Unsupported value"}},
		{"strandedOrders not in the enum", setTo("spec.teardown.strandedOrders", "Delete"), "spec.teardown.strandedOrders", []string{"Unsupported value"}},
		{"durability replicas negative", setTo("spec.redis.durability", map[string]any{"replicas": int64(-1)}),
			"spec.redis.durability.replicas", []string{"greater than or equal to 0"}},
		{"durability timeout past the purchase's own", setTo("spec.redis.durability", map[string]any{"replicas": int64(1), "timeout": "5s"}),
			"spec.redis.durability.timeout", []string{"from 1ms to 2s"}},
		{"durability timeout under a millisecond", setTo("spec.redis.durability", map[string]any{"aof": true, "timeout": "500us"}),
			"spec.redis.durability.timeout", []string{"from 1ms to 2s"}},

		// Placement: the operator's own labels select the pods, its annotations roll them.
		{"seckill podLabels with an app.kubernetes.io key", setTo("spec.seckill.podLabels", map[string]any{"app.kubernetes.io/name": "shop"}),
			"spec.seckill.podLabels", []string{"podLabels must not set the operator's own keys"}},
		{"worker podLabels with a flashsale.dev key", setTo("spec.worker.podLabels", map[string]any{"team": "orders", "flashsale.dev/sale": "other"}),
			"spec.worker.podLabels", []string{"podLabels must not set the operator's own keys"}},
		{"rollback podAnnotations with a flashsale.dev key", setTo("spec.rollback.podAnnotations", map[string]any{"flashsale.dev/config-hash": "x"}),
			"spec.rollback.podAnnotations", []string{"podAnnotations must not set the operator's own keys"}},

		// Every duration of the spec: a Go duration, with a sign that makes sense.
		{"paymentTimeout not a duration", setTo("spec.paymentTimeout", "soon"),
			"spec.paymentTimeout", []string{"type conversion error", "spec.paymentTimeout must be a positive duration"}},
		{"paymentTimeout 0", setTo("spec.paymentTimeout", "0s"), "spec.paymentTimeout", []string{"spec.paymentTimeout must be a positive duration"}},
		{"paymentTimeout negative", setTo("spec.paymentTimeout", "-15m"), "spec.paymentTimeout", []string{"spec.paymentTimeout must be a positive duration"}},
		{"paymentTimeout a number", setTo("spec.paymentTimeout", int64(900)), "spec.paymentTimeout", []string{"must be of type string"}},
		{"warmupLead negative", setTo("spec.warmupLead", "-5m"), "spec.warmupLead", []string{"spec.warmupLead must be a duration such as 5m", "not negative"}},
		{"warmupLead not a duration", setTo("spec.warmupLead", "5 minutes"), "spec.warmupLead", []string{"type conversion error", "spec.warmupLead must be a duration"}},
		{"token ttl 0", setTo("spec.token", map[string]any{"ttl": "0s"}), "spec.token.ttl", []string{"spec.token.ttl must be a positive duration"}},
		{"token ttl not a duration", setTo("spec.token", map[string]any{"ttl": "10 seconds"}), "spec.token.ttl", []string{"type conversion error", "spec.token.ttl must be a positive duration"}},
		{"risk timeout negative", setTo("spec.risk", map[string]any{"verifierURL": "https://risk.example/check", "timeout": "-150ms"}),
			"spec.risk.timeout", []string{"spec.risk.timeout must be a positive duration"}},
		{"risk timeout not a duration", setTo("spec.risk", map[string]any{"verifierURL": "https://risk.example/check", "timeout": "fast"}),
			"spec.risk.timeout", []string{"type conversion error", "spec.risk.timeout must be a positive duration"}},

		// Client networks: a CIDR or a single address, as the seckill pods parse them.
		{"blockCIDRs not a CIDR", setTo("spec.access", map[string]any{"blockCIDRs": []any{"203.0.113.0/24", "bad-net"}}),
			"spec.access.blockCIDRs[1]", []string{"each entry must be a CIDR"}},
		{"allowCIDRs prefix too long", setTo("spec.access", map[string]any{"allowCIDRs": []any{"10.0.0.0/33"}}),
			"spec.access.allowCIDRs[0]", []string{"each entry must be a CIDR"}},
		{"trustedProxies with a host name", setTo("spec.access", map[string]any{"trustedProxies": []any{"gateway.local"}}),
			"spec.access.trustedProxies[0]", []string{"each entry must be a CIDR"}},

		{"queue overbook not a number", setTo("spec.queue", map[string]any{"admitPerSecond": int64(100), "overbook": "lots"}),
			"spec.queue.overbook", nil},
		{"queue overbook below 1", setTo("spec.queue", map[string]any{"admitPerSecond": int64(100), "overbook": "0.5"}),
			"spec.queue.overbook", []string{"spec.queue.overbook must be a decimal from 1 to 10"}},
		{"queue overbook above 10", setTo("spec.queue", map[string]any{"admitPerSecond": int64(100), "overbook": "11"}),
			"spec.queue.overbook", []string{"spec.queue.overbook must be a decimal from 1 to 10"}},
		{"queue without admitPerSecond", setTo("spec.queue", map[string]any{}),
			"spec.queue.admitPerSecond", []string{"Required value"}},
		{"queue admitPerSecond 0", setTo("spec.queue", map[string]any{"admitPerSecond": int64(0)}),
			"spec.queue.admitPerSecond", []string{"greater than or equal to 1"}},
		{"queue admissionTTL 0", setTo("spec.queue", map[string]any{"admitPerSecond": int64(100), "admissionTTL": "0s"}),
			"spec.queue.admissionTTL", []string{"spec.queue.admissionTTL must be a positive duration"}},
		{"queue prequeueLead beyond warmupLead", setTo("spec.queue", map[string]any{"admitPerSecond": int64(100), "prequeueLead": "10m"}),
			"spec.queue.prequeueLead", []string{"spec.queue.prequeueLead must not exceed spec.warmupLead"}},

		{"name too long for the derived object names", setName(strings.Repeat("s", 51)),
			"metadata.name", []string{"metadata.name must be at most 50 characters"}},
		{"name with a dot, which a Service cannot have", setName("singles.day"),
			"metadata.name", []string{"metadata.name must be a DNS-1123 label"}},
		{"name with upper case", setName("Singles-Day"), "metadata.name", []string{"a lowercase RFC 1123 subdomain"}},
	}
}

// setTo returns a mutation that sets the field at path (see set) to value.
func setTo(path string, value any) func(*testing.T, *unstructured.Unstructured) {
	return func(t *testing.T, u *unstructured.Unstructured) { set(t, u, path, value) }
}

// setName returns a mutation that renames the sale.
func setName(name string) func(*testing.T, *unstructured.Unstructured) {
	return func(_ *testing.T, u *unstructured.Unstructured) { u.SetName(name) }
}

// manySKUs returns n valid SKUs with distinct ids.
func manySKUs(n int) []any {
	skus := make([]any, n)
	for i := range skus {
		skus[i] = map[string]any{"id": fmt.Sprint(5000 + i), "stock": int64(1), "price": "1.00"}
	}
	return skus
}

// offline runs u through the data plane's check: manifest.Parse of u as YAML.
func offline(t *testing.T, u *unstructured.Unstructured) (*v1alpha1.FlashSale, error) {
	t.Helper()
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	return manifest.Parse(data)
}

// wantInvalid checks that err is a 422 Invalid (the API server's, or the
// offline check's, which builds the same error) that mentions every one of wants.
func wantInvalid(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the object was accepted; want it refused with %q", wants)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want a 422 Invalid error mentioning %q, got: %v", wants, err)
	}
	t.Logf("refused: %v", err)
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not mention %q:\n%v", w, err)
		}
	}
}

// wantRefused checks that err is a 422 Invalid naming tc.field and saying tc.want.
func wantRefused(t *testing.T, err error, tc invalidSale) {
	t.Helper()
	wantInvalid(t, err, tc.want...)
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		t.Fatalf("not an API status error with details: %v", err)
	}
	for _, c := range status.Status().Details.Causes {
		if c.Field == tc.field || (c.Field == "" || c.Field == "<nil>") && strings.HasPrefix(c.Message, "Invalid value: "+tc.field) {
			return
		}
	}
	t.Errorf("no cause names %s:\n%v", tc.field, err)
}

// causes lists the "field: type: message" of each cause of a 422 Invalid, sorted.
func causes(t *testing.T, err error) []string {
	t.Helper()
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		t.Fatalf("not an API status error with details: %v", err)
	}
	var out []string
	for _, c := range status.Status().Details.Causes {
		out = append(out, fmt.Sprintf("%s: %s: %s", c.Field, c.Type, c.Message))
	}
	sort.Strings(out)
	return out
}

// TestInvalidFlashSalesAreRefused is the parity test: every invalid sale of
// the table is refused by the API server and by the offline check, with the
// same causes (field, reason and message) from both.
func TestInvalidFlashSalesAreRefused(t *testing.T) {
	c := cluster(t)
	for _, tc := range invalidSales() {
		t.Run(tc.name, func(t *testing.T) {
			u := validSale(uniqueName(t))
			tc.mutate(t, u)
			_, offlineErr := offline(t, u)
			err := c.Create(ctx(t), u)
			if err == nil {
				_ = c.Delete(context.Background(), u)
			}
			wantRefused(t, err, tc)
			wantRefused(t, offlineErr, tc)
			if t.Failed() {
				return
			}
			server, local := causes(t, err), causes(t, offlineErr)
			if !slices.Equal(server, local) {
				t.Errorf("the offline check and the API server disagree:\nAPI server:\n  %s\noffline:\n  %s",
					strings.Join(server, "\n  "), strings.Join(local, "\n  "))
			}
		})
	}
}

// TestInvalidFlashSalesAreRefusedOffline runs the same table through the
// offline check alone, so that it also runs without a control plane.
func TestInvalidFlashSalesAreRefusedOffline(t *testing.T) {
	for _, tc := range invalidSales() {
		t.Run(tc.name, func(t *testing.T) {
			u := validSale("offline")
			tc.mutate(t, u)
			_, err := offline(t, u)
			wantRefused(t, err, tc)
		})
	}
}

// validVariants are valid sales near the edges of the rules: both checks
// must accept them, or a rule refuses more than it says.
func validVariants() map[string]func(*testing.T, *unstructured.Unstructured) {
	return map[string]func(*testing.T, *unstructured.Unstructured){
		"the fixture":         func(*testing.T, *unstructured.Unstructured) {},
		"warmupLead 0":        setTo("spec.warmupLead", "0s"),
		"compound durations":  setTo("spec.paymentTimeout", "1h30m"),
		"sub-second timeouts": setTo("spec.risk", map[string]any{"verifierURL": "https://risk.example/check", "timeout": "250ms"}),
		"token ttl":           setTo("spec.token", map[string]any{"ttl": "1m"}),
		"200 SKUs":            setTo("spec.skus", manySKUs(200)),
		"networks": setTo("spec.access", map[string]any{
			"allowCIDRs":     []any{"192.0.2.1", "2001:db8::/32"},
			"blockCIDRs":     []any{"203.0.113.0/24", "2001:db8::1"},
			"trustedProxies": []any{"10.0.0.0/8", "fd00::/8"},
		}),
		"name of 50 characters": setName(strings.Repeat("s", 50)),
		"placement on every workload": func(t *testing.T, u *unstructured.Unstructured) {
			placement := map[string]any{
				"nodeSelector":      map[string]any{"node-role.example.com/sale": "api"},
				"tolerations":       []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "sale", "effect": "NoSchedule"}},
				"priorityClassName": "sale-critical",
				"affinity": map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
					"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "kubernetes.io/arch", "operator": "In", "values": []any{"amd64"}}}}},
				}}},
				"topologySpreadConstraints": []any{map[string]any{"maxSkew": int64(1), "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}},
				// Keys of others' prefixes are the user's to set.
				"podLabels":      map[string]any{"team": "shop", "example.com/tier": "sale"},
				"podAnnotations": map[string]any{"example.com/owner": "sre", "prometheus.io/scrape": "true"},
			}
			for _, w := range []string{"seckill", "worker", "rollback"} {
				for k, v := range placement {
					set(t, u, "spec."+w+"."+k, v)
				}
			}
		},
		"a waiting room": setTo("spec.queue", map[string]any{
			"admitPerSecond": int64(5000), "overbook": "1.25", "prequeueLead": "5m", "admissionTTL": "90s",
		}),
	}
}

// TestValidSalesAreAccepted also guards the fixture the refusal table mutates:
// if it were invalid, every refusal above would prove nothing.
func TestValidSalesAreAccepted(t *testing.T) {
	c := cluster(t)
	for name, mutate := range validVariants() {
		t.Run(name, func(t *testing.T) {
			u := validSale(uniqueName(t))
			mutate(t, u)
			if _, err := offline(t, u); err != nil {
				t.Errorf("the offline check refused it: %v", err)
			}
			if err := c.Create(ctx(t), u); err != nil {
				t.Fatalf("the API server refused it: %v", err)
			}
			t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
		})
	}
}

// TestSamplesAreAcceptedWithDefaults checks the samples against the API
// server, and that the offline check and SetDefaults default them exactly as
// the API server does.
func TestSamplesAreAcceptedWithDefaults(t *testing.T) {
	c := cluster(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "flashsale_*.yaml")) // not kustomization.yaml
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in config/samples (err %v)", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// The manifest as kubectl would send it: only the fields it sets.
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &u.Object); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if u.GroupVersionKind() != gvk {
				t.Fatalf("%s is a %v, want %v", file, u.GroupVersionKind(), gvk)
			}
			u.SetNamespace(testNamespace)
			u.SetName(uniqueName(t))
			var sent v1alpha1.FlashSale // before Create, which writes the server's answer into u
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &sent); err != nil {
				t.Fatal(err)
			}
			local, err := offline(t, u)
			if err != nil {
				t.Fatalf("the offline check refused %s: %v", file, err)
			}
			if err := c.Create(ctx(t), u); err != nil {
				t.Fatalf("the API server refused %s: %v", file, err)
			}
			t.Cleanup(func() { _ = c.Delete(context.Background(), u) })

			var got v1alpha1.FlashSale
			if err := c.Get(ctx(t), client.ObjectKeyFromObject(u), &got); err != nil {
				t.Fatal(err)
			}
			checkDefaults(t, &sent, &got)
			sameSpec(t, "the offline check", &local.Spec, &got.Spec)
			sent.SetDefaults()
			sameSpec(t, "SetDefaults", &sent.Spec, &got.Spec)
		})
	}
}

// sameSpec fails unless who defaulted the spec exactly as the API server did.
func sameSpec(t *testing.T, who string, spec, server *v1alpha1.FlashSaleSpec) {
	t.Helper()
	if equality.Semantic.DeepEqual(spec, server) {
		return
	}
	a, _ := yaml.Marshal(spec)
	b, _ := yaml.Marshal(server)
	t.Errorf("%s defaulted the spec otherwise than the API server:\n%s:\n%s\nAPI server:\n%s", who, who, a, b)
}

// checkDefaults checks that every field the manifest left out came back with
// its CRD default, and every field it set came back unchanged.
func checkDefaults(t *testing.T, sent, got *v1alpha1.FlashSale) {
	t.Helper()
	s, g := &sent.Spec, &got.Spec
	if len(g.SKUs) != len(s.SKUs) {
		t.Fatalf("got %d SKUs, sent %d", len(g.SKUs), len(s.SKUs))
	}
	for i := range g.SKUs {
		want := s.SKUs[i].PerUserLimit
		if want == 0 {
			want = 1
		}
		if g.SKUs[i].PerUserLimit != want {
			t.Errorf("spec.skus[%d].perUserLimit = %d, want %d", i, g.SKUs[i].PerUserLimit, want)
		}
	}
	durations := []struct {
		field     string
		sent, got *metav1.Duration
		def       time.Duration
	}{
		{"spec.warmupLead", s.WarmupLead, g.WarmupLead, v1alpha1.DefaultWarmupLead},
		{"spec.paymentTimeout", s.PaymentTimeout, g.PaymentTimeout, v1alpha1.DefaultPaymentTimeout},
	}
	for _, d := range durations {
		want := d.def
		if d.sent != nil {
			want = d.sent.Duration
		}
		if d.got == nil || d.got.Duration != want {
			t.Errorf("%s = %v, want %v", d.field, d.got, want)
		}
	}
	ints := []struct {
		field     string
		sent, got int32
		def       int32
	}{
		{"spec.seckill.replicas", s.Seckill.Replicas, g.Seckill.Replicas, 2},
		{"spec.worker.replicas", s.Worker.Replicas, g.Worker.Replicas, 1},
	}
	if s.Kafka != nil {
		ints = append(ints, struct {
			field     string
			sent, got int32
			def       int32
		}{"spec.kafka.partitions", s.Kafka.Partitions, g.Kafka.Partitions, v1alpha1.DefaultPartitions})
	}
	for _, f := range ints {
		want := f.def
		if f.sent != 0 {
			want = f.sent
		}
		if f.got != want {
			t.Errorf("%s = %d, want %d", f.field, f.got, want)
		}
	}
	wantMode := s.Redis.Mode
	if wantMode == "" {
		wantMode = v1alpha1.RedisStandalone
	}
	if g.Redis.Mode != wantMode {
		t.Errorf("spec.redis.mode = %q, want %q", g.Redis.Mode, wantMode)
	}
	if s.Token != nil {
		want := v1alpha1.DefaultTokenTTL
		if s.Token.TTL != nil {
			want = s.Token.TTL.Duration
		}
		if g.Token == nil || g.Token.TTL == nil || g.Token.TTL.Duration != want {
			t.Errorf("spec.token.ttl = %v, want %v", g.Token, want)
		}
	}
	if !g.StartTime.Equal(&s.StartTime) || !g.EndTime.Equal(&s.EndTime) {
		t.Errorf("times changed: sent %v..%v, got %v..%v", s.StartTime, s.EndTime, g.StartTime, g.EndTime)
	}
}

// TestChangesOnceStarted checks the transition rules: once the sale has
// started, a SKU cannot be removed, the start cannot move and the end cannot
// move earlier; before it has started all three are allowed.
func TestChangesOnceStarted(t *testing.T) {
	c := cluster(t)
	changes := []struct {
		name   string
		change func(fs *v1alpha1.FlashSale)
		field  string // the field path of the error once started
		want   string // the message once started
	}{
		{
			name:   "remove a SKU",
			change: func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs = fs.Spec.SKUs[:1] },
			field:  "spec.skus",
			want:   "spec.skus: a SKU cannot be removed once the sale has started",
		},
		{
			name: "move the start later",
			change: func(fs *v1alpha1.FlashSale) {
				fs.Spec.StartTime = metav1.NewTime(fs.Spec.StartTime.Add(time.Minute))
			},
			field: "spec.startTime",
			want:  "spec.startTime cannot change once the sale has started",
		},
		{
			name: "move the start earlier",
			change: func(fs *v1alpha1.FlashSale) {
				fs.Spec.StartTime = metav1.NewTime(fs.Spec.StartTime.Add(-time.Minute))
			},
			field: "spec.startTime",
			want:  "spec.startTime cannot change once the sale has started",
		},
		{
			name: "move the end earlier",
			change: func(fs *v1alpha1.FlashSale) {
				fs.Spec.EndTime = metav1.NewTime(fs.Spec.EndTime.Add(-time.Minute))
			},
			field: "spec.endTime",
			want:  "spec.endTime cannot move earlier once the sale has started",
		},
	}
	// Allowed in every phase: these must never be refused.
	allowed := []struct {
		name   string
		change func(fs *v1alpha1.FlashSale)
	}{
		{"move the end later", func(fs *v1alpha1.FlashSale) {
			fs.Spec.EndTime = metav1.NewTime(fs.Spec.EndTime.Add(time.Hour))
		}},
		{"add a SKU", func(fs *v1alpha1.FlashSale) {
			fs.Spec.SKUs = append(fs.Spec.SKUs, v1alpha1.SKU{ID: "2001", Stock: 5, Price: "1.00", PerUserLimit: 1})
		}},
		{"raise the stock", func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[0].Stock += 50 }},
		{"pause", func(fs *v1alpha1.FlashSale) { fs.Spec.Paused = true }},
	}

	// create makes a sale and moves it to phase through the status subresource.
	create := func(t *testing.T, phase v1alpha1.Phase) *v1alpha1.FlashSale {
		t.Helper()
		u := validSale(uniqueName(t))
		if err := c.Create(ctx(t), u); err != nil {
			t.Fatalf("create: %v", err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
		var fs v1alpha1.FlashSale
		if err := c.Get(ctx(t), client.ObjectKeyFromObject(u), &fs); err != nil {
			t.Fatal(err)
		}
		if phase != "" {
			fs.Status.Phase = phase
			if err := c.Status().Update(ctx(t), &fs); err != nil {
				t.Fatalf("setting status.phase=%s: %v", phase, err)
			}
			if fs.Status.Phase != phase {
				t.Fatalf("status.phase = %q after the status update, want %q", fs.Status.Phase, phase)
			}
		}
		return &fs
	}

	phases := []struct {
		phase   v1alpha1.Phase
		started bool
	}{
		{"", false}, // just created: the operator has not set a phase yet
		{v1alpha1.PhasePending, false},
		{v1alpha1.PhaseWarming, false},
		{v1alpha1.PhaseActive, true},
		{v1alpha1.PhasePaused, true},
		{v1alpha1.PhaseDraining, true},
	}
	for _, p := range phases {
		name := string(p.phase)
		if name == "" {
			name = "NoPhase"
		}
		t.Run(name, func(t *testing.T) {
			for _, ch := range changes {
				t.Run(ch.name, func(t *testing.T) {
					fs := create(t, p.phase)
					ch.change(fs)
					err := c.Update(ctx(t), fs)
					if !p.started {
						if err != nil {
							t.Fatalf("refused before the sale started (phase %q): %v", p.phase, err)
						}
						return
					}
					wantInvalid(t, err, ch.field+": Invalid value", ch.want)
				})
			}
			for _, ch := range allowed {
				t.Run(ch.name, func(t *testing.T) {
					fs := create(t, p.phase)
					ch.change(fs)
					if err := c.Update(ctx(t), fs); err != nil {
						t.Fatalf("refused in phase %q: %v", p.phase, err)
					}
				})
			}
		})
	}

	// A sale Failed by a configuration error before it ever opened may lose
	// a SKU (how a SKU added back with another bucket count is fixed); one
	// that opened may not.
	for _, opened := range []bool{false, true} {
		t.Run(fmt.Sprintf("failed-opened-%v", opened), func(t *testing.T) {
			fs := create(t, v1alpha1.PhaseFailed)
			if opened {
				now := metav1.Now()
				fs.Status.OpenedAt = &now
				if err := c.Status().Update(ctx(t), fs); err != nil {
					t.Fatal(err)
				}
			}
			fs.Spec.SKUs = fs.Spec.SKUs[:1]
			err := c.Update(ctx(t), fs)
			if !opened {
				if err != nil {
					t.Fatalf("refused on a Failed sale that never opened: %v", err)
				}
				return
			}
			wantInvalid(t, err, "spec.skus: Invalid value", "a SKU cannot be removed once the sale has started")
		})
	}

	// The phase itself is validated on the status subresource.
	t.Run("unknown phase", func(t *testing.T) {
		fs := create(t, "")
		fs.Status.Phase = "Running"
		wantInvalid(t, c.Status().Update(ctx(t), fs), "status.phase", "Unsupported value")
	})
}

// TestClosedCannotBeUnset: spec.closed ends a sale early and buyers were
// told it ended, so the API server refuses every way of taking it back: a Go
// client's update (which omits a false bool), a merge patch setting false,
// and one deleting the field. Closing is accepted in any phase, and so is
// any other change of a closed sale.
func TestClosedCannotBeUnset(t *testing.T) {
	c := cluster(t)
	const msg = "spec.closed cannot be set back to false: buyers were told the sale ended"
	closed := func(t *testing.T, phase v1alpha1.Phase) *v1alpha1.FlashSale {
		t.Helper()
		u := validSale(uniqueName(t))
		if err := c.Create(ctx(t), u); err != nil {
			t.Fatalf("create: %v", err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
		var fs v1alpha1.FlashSale
		if err := c.Get(ctx(t), client.ObjectKeyFromObject(u), &fs); err != nil {
			t.Fatal(err)
		}
		fs.Status.Phase = phase
		if err := c.Status().Update(ctx(t), &fs); err != nil {
			t.Fatal(err)
		}
		fs.Spec.Closed = true
		if err := c.Update(ctx(t), &fs); err != nil {
			t.Fatalf("closing a sale in phase %s refused: %v", phase, err)
		}
		if !fs.Spec.Closed {
			t.Fatal("spec.closed not stored")
		}
		return &fs
	}
	for _, phase := range []v1alpha1.Phase{v1alpha1.PhasePending, v1alpha1.PhaseActive} {
		t.Run(string(phase), func(t *testing.T) {
			t.Run("update to false", func(t *testing.T) {
				fs := closed(t, phase)
				fs.Spec.Closed = false
				wantInvalid(t, c.Update(ctx(t), fs), "spec.closed", msg)
			})
			for name, patch := range map[string]string{
				"merge patch false":  `{"spec":{"closed":false}}`,
				"merge patch delete": `{"spec":{"closed":null}}`,
			} {
				t.Run(name, func(t *testing.T) {
					fs := closed(t, phase)
					wantInvalid(t, c.Patch(ctx(t), fs, client.RawPatch(types.MergePatchType, []byte(patch))), "spec.closed", msg)
				})
			}
			t.Run("other changes of a closed sale", func(t *testing.T) {
				fs := closed(t, phase)
				fs.Spec.EndTime = metav1.NewTime(fs.Spec.EndTime.Add(time.Hour))
				fs.Spec.Paused = true
				if err := c.Update(ctx(t), fs); err != nil {
					t.Fatalf("refused: %v", err)
				}
			})
		})
	}
}
