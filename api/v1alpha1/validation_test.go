package v1alpha1_test

// These tests check the FlashSale CRD (config/crd/bases, generated from the
// markers of flashsale_types.go) against a real kube-apiserver and etcd started
// by controller-runtime's envtest: the OpenAPI schema, the defaults and the CEL
// rules, including the transition rules that depend on status.phase.
//
// The binaries come from `make controlplane` (hack/controlplane.sh), which
// builds them from the Go module proxy and prints the directory to export as
// KUBEBUILDER_ASSETS; `make test` does both. Without them the tests fail: they
// never skip.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
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
	r := strings.NewReplacer("/", "-", "_", "-", " ", "-")
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

// wantInvalid checks that err is the API server's 422 Invalid and mentions
// every one of wants.
func wantInvalid(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted the object; want it refused with %q", wants)
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

func TestInvalidFlashSalesAreRefused(t *testing.T) {
	c := cluster(t)
	cases := []struct {
		name   string
		mutate func(t *testing.T, u *unstructured.Unstructured)
		want   []string // substrings of the API server's message
	}{
		{
			name: "end before start",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.endTime", "2030-11-11T11:00:00Z")
			},
			want: []string{"spec.endTime: Invalid value", "spec.endTime must be after spec.startTime"},
		},
		{
			name: "end equal to start",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.endTime", "2030-11-11T12:00:00Z")
			},
			want: []string{"spec.endTime: Invalid value", "spec.endTime must be after spec.startTime"},
		},
		{
			name:   "no start time",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.startTime", del) },
			want:   []string{"spec.startTime", "Required value"},
		},
		{
			name: "start time not a date-time",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.startTime", "tomorrow at noon")
			},
			want: []string{"spec.startTime"},
		},
		{
			name: "duplicate SKU ids",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.skus.1.id", "1001")
			},
			want: []string{"spec.skus[1]: Duplicate value", "spec.skus: SKU ids must be unique"},
		},
		{
			name:   "negative stock",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.stock", int64(-1)) },
			want:   []string{"spec.skus[0].stock", "greater than or equal to 0"},
		},
		{
			name:   "perUserLimit 0",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.1.perUserLimit", int64(0)) },
			want:   []string{"spec.skus[1].perUserLimit", "greater than or equal to 1"},
		},
		{
			name:   "price with three decimals",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.price", "99.999") },
			want:   []string{"spec.skus[0].price"},
		},
		{
			name:   "price not a number",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.price", "free") },
			want:   []string{"spec.skus[0].price"},
		},
		{
			name:   "negative price",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.price", "-1.00") },
			want:   []string{"spec.skus[0].price"},
		},
		{
			name:   "SKU id with a slash",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.id", "10/01") },
			want:   []string{"spec.skus[0].id"},
		},
		{
			name:   "empty SKU id",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.id", "") },
			want:   []string{"spec.skus[0].id"},
		},
		{
			name:   "SKU without price",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus.0.price", del) },
			want:   []string{"spec.skus[0].price", "Required value"},
		},
		{
			name:   "no SKUs",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus", []any{}) },
			want:   []string{"spec.skus", "at least 1 items"},
		},
		{
			name:   "SKUs missing",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.skus", del) },
			want:   []string{"spec.skus", "Required value"},
		},
		{
			name: "worker replicas above kafka partitions",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.worker.replicas", int64(5))
			},
			want: []string{"spec.worker.replicas: Invalid value", "spec.worker.replicas must not exceed spec.kafka.partitions"},
		},
		{
			name: "worker replicas above the default partition count",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.kafka", map[string]any{})
				set(t, u, "spec.worker.replicas", int64(13))
			},
			want: []string{"spec.worker.replicas: Invalid value", "spec.worker.replicas must not exceed spec.kafka.partitions"},
		},
		{
			name: "maxReplicas below replicas",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.seckill.replicas", int64(4))
				set(t, u, "spec.seckill.maxReplicas", int64(3))
			},
			want: []string{"spec.seckill.maxReplicas: Invalid value", "spec.seckill.maxReplicas must be 0 (no autoscaling) or at least spec.seckill.replicas"},
		},
		{
			name:   "seckill replicas 0",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.seckill.replicas", int64(0)) },
			want:   []string{"spec.seckill.replicas"},
		},
		{
			name:   "redis mode not in the enum",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.redis.mode", "sentinel") },
			want:   []string{"spec.redis.mode", "Unsupported value", `"sentinel"`},
		},
		{
			name:   "kafka partitions 0",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.kafka.partitions", int64(0)) },
			want:   []string{"spec.kafka.partitions"},
		},
		{
			name: "negative rate limit",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.rateLimit", map[string]any{"perUserPerSecond": int64(-2)})
			},
			want: []string{"spec.rateLimit.perUserPerSecond"},
		},
		{
			name: "risk verifier not an http URL",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.risk", map[string]any{"verifierURL": "ftp://risk.example/check"})
			},
			want: []string{"spec.risk.verifierURL"},
		},
		{
			name:   "name too long for the derived object names",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { u.SetName(strings.Repeat("s", 51)) },
			want:   []string{"metadata.name must be at most 50 characters"},
		},
		{
			name:   "teardown policy not in the enum",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.teardown.redisKeys", "Archive") },
			want:   []string{"spec.teardown.redisKeys", "Unsupported value"},
		},
		{
			name:   "topic teardown policy lower-case",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.teardown.topic", "delete") },
			want:   []string{"spec.teardown.topic", "Unsupported value"},
		},
		{
			name:   "drainingReplicas 0",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.seckill.drainingReplicas", int64(0)) },
			want:   []string{"spec.seckill.drainingReplicas", "greater than or equal to 1"},
		},
		{
			name:   "lagThreshold 0",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.worker.lagThreshold", int64(0)) },
			want:   []string{"spec.worker.lagThreshold", "greater than or equal to 1"},
		},
		{
			name:   "imagePullPolicy not in the enum",
			mutate: func(t *testing.T, u *unstructured.Unstructured) { set(t, u, "spec.imagePullPolicy", "Sometimes") },
			want:   []string{"spec.imagePullPolicy", "Unsupported value"},
		},
		{
			name: "target CPU above 100%",
			mutate: func(t *testing.T, u *unstructured.Unstructured) {
				set(t, u, "spec.seckill.targetCPUUtilization", int64(150))
			},
			want: []string{"spec.seckill.targetCPUUtilization", "less than or equal to 100"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := validSale(uniqueName(t))
			tc.mutate(t, u)
			err := c.Create(ctx(t), u)
			if err == nil {
				_ = c.Delete(context.Background(), u)
			}
			wantInvalid(t, err, tc.want...)
		})
	}
}

// TestValidSalesAreAccepted also guards the fixture the refusal table mutates:
// if it were invalid, every refusal above would prove nothing.
func TestValidSalesAreAccepted(t *testing.T) {
	c := cluster(t)
	u := validSale(uniqueName(t))
	if err := c.Create(ctx(t), u); err != nil {
		t.Fatalf("the valid fixture was refused: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
}

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
			if err := c.Create(ctx(t), u); err != nil {
				t.Fatalf("the API server refused %s: %v", file, err)
			}
			t.Cleanup(func() { _ = c.Delete(context.Background(), u) })

			var got v1alpha1.FlashSale
			if err := c.Get(ctx(t), client.ObjectKeyFromObject(u), &got); err != nil {
				t.Fatal(err)
			}
			var sent v1alpha1.FlashSale
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &sent); err != nil {
				t.Fatal(err)
			}
			checkDefaults(t, &sent, &got)
		})
	}
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

	// The phase itself is validated on the status subresource.
	t.Run("unknown phase", func(t *testing.T) {
		fs := create(t, "")
		fs.Status.Phase = "Running"
		wantInvalid(t, c.Status().Update(ctx(t), fs), "status.phase", "Unsupported value")
	})
}
