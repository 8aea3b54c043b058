package manifest_test

// The rules themselves are tested where the CRD is: api/v1alpha1's
// validation_test.go sends one table of invalid sales to a real API server and
// to Parse and requires the same refusals. These tests cover what is Parse's
// own: reading the file, strictness, the namespace, the data plane's checks,
// the defaults and Validate for sales built in Go.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
)

func TestSamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../../../config/samples/flashsale_*.yaml") // not kustomization.yaml
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, f := range files {
		fs, err := manifest.Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if fs.SaleKey() == "" || len(fs.Spec.SKUs) == 0 {
			t.Errorf("%s: empty sale", f)
		}
	}
}

const header = `apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: s, namespace: shop}
spec:
  startTime: "2026-11-11T12:00:00Z"
  endTime: "2026-11-11T12:30:00Z"
`

func TestDefaults(t *testing.T) {
	fs, err := manifest.Parse([]byte(strings.Replace(header, ", namespace: shop", "", 1) + `  skus: [{id: a, stock: 1, price: "1"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if fs.Namespace != "default" || fs.Spec.SKUs[0].PerUserLimit != 1 || fs.TokenTTL() != 10*time.Second ||
		fs.PaymentTimeout() != 15*time.Minute || fs.Spec.WarmupLead.Duration != 5*time.Minute || fs.Spec.Redis.Mode != "standalone" ||
		fs.Spec.Seckill.Replicas != 2 || fs.Spec.Worker.LagThreshold != 1000 || fs.Spec.Teardown.Topic != v1alpha1.CleanupDelete {
		t.Fatalf("defaults not applied: %+v", fs.Spec)
	}
}

// TestSetDefaultsMatchesTheCRD keeps the Go defaults (SetDefaults, for sales
// built in Go) equal to the CRD's, which Parse applies: a sparse manifest
// defaulted from the CRD equals the same manifest decoded and SetDefaults'd.
// api/v1alpha1's TestSamplesAreAcceptedWithDefaults checks both against a
// real API server.
func TestSetDefaultsMatchesTheCRD(t *testing.T) {
	sparse := map[string]string{
		"minimal": `  skus: [{id: a, stock: 1, price: "1"}]`,
		"every defaulted struct present but empty": `  skus: [{id: a, stock: 1, price: "1"}]
  token: {}
  seckill: {}
  worker: {}
  redis: {}
  kafka: {}
  teardown: {}
  risk: {verifierURL: "https://risk.example/check"}`,
	}
	for name, spec := range sparse {
		t.Run(name, func(t *testing.T) {
			data := []byte(header + spec)
			fromCRD, err := manifest.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			var fromGo v1alpha1.FlashSale
			if err := yaml.UnmarshalStrict(data, &fromGo); err != nil {
				t.Fatal(err)
			}
			fromGo.SetDefaults()
			if !equality.Semantic.DeepEqual(fromCRD.Spec, fromGo.Spec) {
				a, _ := yaml.Marshal(fromCRD.Spec)
				b, _ := yaml.Marshal(fromGo.Spec)
				t.Fatalf("SetDefaults and the CRD disagree:\nCRD:\n%s\nSetDefaults:\n%s", a, b)
			}
		})
	}
}

// TestInvalidManifests: what Parse refuses before or besides the CRD's rules.
func TestInvalidManifests(t *testing.T) {
	sku := `  skus: [{id: a, stock: 1, price: "1"}]`
	cases := []struct{ name, yaml, want string }{
		{"unknown field", header + `  skus: [{id: a, stock: 1, price: "1", perUserLimt: 2}]`, `unknown field "spec.skus[0].perUserLimt"`},
		{"unknown metadata field", strings.Replace(header, "name: s,", "name: s, label: t,", 1) + sku, `unknown field "metadata.label"`},
		{"key given twice", header + sku + "\n  paused: true\n  paused: false", `"paused" already set`},
		{"wrong kind", strings.Replace(header, "kind: FlashSale", "kind: Sale", 1) + sku, "kind: Invalid value"},
		{"wrong version", strings.Replace(header, "v1alpha1", "v1", 1) + sku, "apiVersion: Invalid value"},
		{"no kind", strings.Replace(header, "kind: FlashSale\n", "", 1) + sku, "kind is missing"},
		{"generateName only", strings.Replace(header, "name: s,", "generateName: s-,", 1) + sku, "metadata.name: Required value: a sale run from a file needs a name"},
		{"no name", strings.Replace(header, "name: s,", "", 1) + sku, "metadata.name: Required value"},
		{"bad namespace", strings.Replace(header, "namespace: shop", "namespace: Shop_1", 1) + sku, "metadata.namespace"},
		{"replicas beyond int32", header + sku + "\n  seckill: {replicas: 3000000000}", "spec.seckill.replicas"},
		{"not yaml", "{{{", "decode"},
		{"empty", "", "decode FlashSale"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manifest.Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestRefusalIsTheAPIServers: a refusal is the 422 Invalid the API server
// answers, every problem at once, each naming its field.
func TestRefusalIsTheAPIServers(t *testing.T) {
	_, err := manifest.Parse([]byte(header + `  skus: [{id: a, stock: -1, price: "1", perUserLimit: 0}]
  paymentTimeout: soon`))
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want a 422 Invalid, got %v", err)
	}
	for _, w := range []string{"spec.skus[0].stock: Invalid value: -1", "spec.skus[0].perUserLimit: Invalid value: 0", "spec.paymentTimeout: Invalid value"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not mention %q:\n%v", w, err)
		}
	}
}

// TestStatusIsIgnored: a manifest saved with kubectl get -o yaml carries
// status and server metadata; like a create, Parse drops the status.
func TestStatusIsIgnored(t *testing.T) {
	fs, err := manifest.Parse([]byte(strings.Replace(header, "name: s,", "name: s, uid: 0e9c, resourceVersion: \"42\",", 1) +
		`  skus: [{id: a, stock: 1, price: "1"}]
status: {phase: Active, sold: 3}`))
	if err != nil {
		t.Fatal(err)
	}
	if fs.Status.Phase != "" || fs.Status.Sold != 0 {
		t.Fatalf("status kept: %+v", fs.Status)
	}
}

func TestValidate(t *testing.T) {
	valid := func() *v1alpha1.FlashSale {
		return &v1alpha1.FlashSale{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "sale"},
			Spec: v1alpha1.FlashSaleSpec{
				StartTime: metav1.NewTime(time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)),
				EndTime:   metav1.NewTime(time.Date(2026, 11, 11, 12, 30, 0, 0, time.UTC)),
				SKUs:      []v1alpha1.SKU{{ID: "1001", Stock: 5, Price: "1.00"}}, // perUserLimit 0: unset, defaulted
				Kafka:     &v1alpha1.Kafka{},
			},
		}
	}
	fs := valid()
	if err := manifest.Validate(fs); err != nil {
		t.Fatalf("a valid sale built in Go was refused: %v", err)
	}
	if !equality.Semantic.DeepEqual(fs, valid()) {
		t.Fatalf("Validate changed the sale: %+v", fs)
	}

	fs.Spec.Worker.Replicas = 13 // above the 12 partitions kafka: {} defaults to
	fs.Spec.PaymentTimeout = &metav1.Duration{Duration: -time.Minute}
	err := manifest.Validate(fs)
	for _, w := range []string{"spec.worker.replicas: Invalid value", "spec.paymentTimeout must be a positive duration"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v, want one mentioning %q", err, w)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := manifest.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("error %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
