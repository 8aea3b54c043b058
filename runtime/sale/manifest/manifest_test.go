package manifest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
)

func TestSamplesLoad(t *testing.T) {
	files, err := filepath.Glob("../../config/samples/flashsale_*.yaml") // not kustomization.yaml
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

func TestDefaults(t *testing.T) {
	fs, err := manifest.Parse([]byte(`
apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: s}
spec:
  startTime: "2026-11-11T12:00:00Z"
  endTime: "2026-11-11T12:30:00Z"
  skus: [{id: a, stock: 1, price: "1"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if fs.Namespace != "default" || fs.Spec.SKUs[0].PerUserLimit != 1 || fs.TokenTTL() != 10*time.Second ||
		fs.PaymentTimeout() != 15*time.Minute || fs.Spec.WarmupLead.Duration != 5*time.Minute || fs.Spec.Redis.Mode != "standalone" {
		t.Fatalf("defaults not applied: %+v", fs.Spec)
	}
}

// TestInvalidManifests: each mistake is refused with a message naming the field.
func TestInvalidManifests(t *testing.T) {
	base := `apiVersion: flashsale.dev/v1alpha1
kind: FlashSale
metadata: {name: s, namespace: shop}
spec:
  startTime: "2026-11-11T12:00:00Z"
  endTime: "2026-11-11T12:30:00Z"
`
	cases := []struct{ name, yaml, want string }{
		{"end before start", strings.Replace(base, "12:30", "11:30", 1) + `  skus: [{id: a, stock: 1, price: "1"}]`, "spec.endTime"},
		{"duplicate sku", base + `  skus: [{id: a, stock: 1, price: "1"}, {id: a, stock: 2, price: "1"}]`, "spec.skus[1].id: duplicate"},
		{"negative stock", base + `  skus: [{id: a, stock: -1, price: "1"}]`, "spec.skus[0].stock"},
		{"bad price", base + `  skus: [{id: a, stock: 1, price: "1.234"}]`, "spec.skus[0].price"},
		{"limit below 1", base + `  skus: [{id: a, stock: 1, price: "1", perUserLimit: -2}]`, "spec.skus[0].perUserLimit"},
		{"bad sku id", base + `  skus: [{id: "a/b", stock: 1, price: "1"}]`, "spec.skus[0].id"},
		{"no skus", base + `  skus: []`, "spec.skus"},
		{"unknown field", base + `  skus: [{id: a, stock: 1, price: "1", perUserLimt: 2}]`, "perUserLimt"},
		{"wrong kind", strings.Replace(base, "kind: FlashSale", "kind: Sale", 1) + `  skus: [{id: a, stock: 1, price: "1"}]`, "kind"},
		{"bad name", strings.Replace(base, "name: s,", "name: S_1,", 1) + `  skus: [{id: a, stock: 1, price: "1"}]`, "metadata.name"},
		{"workers over partitions", base + `  skus: [{id: a, stock: 1, price: "1"}]
  worker: {replicas: 5}
  kafka: {partitions: 4}`, "spec.worker.replicas"},
		{"negative rate", base + `  skus: [{id: a, stock: 1, price: "1"}]
  rateLimit: {perUserPerSecond: -1}`, "spec.rateLimit"},
		{"risk url", base + `  skus: [{id: a, stock: 1, price: "1"}]
  risk: {verifierURL: "ftp://x"}`, "spec.risk.verifierURL"},
		{"not yaml", "{{{", "decode"},
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
