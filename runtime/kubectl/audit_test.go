package kubectl_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestAudit: the plugin finds the sale's Redis and MySQL through the
// endpoints Secret in envtest, as the operator does, audits a sale warmed by
// the real warm code and prints the conservation table with "conserved",
// exit 0; once a stock counter is tampered with, it says not conserved and
// exits non-zero, in text and in --json.
func TestAudit(t *testing.T) {
	w := newWorld(t)
	rdb := testutil.Redis(t)
	_, dsn := testutil.OrderDB(t)
	fs := w.sale("spring-sale", time.Now().Add(-time.Minute))
	for _, p := range keys.Patterns(fs.SaleKey()) {
		testutil.CleanupKeys(t, rdb, p)
	}
	if _, err := warm.Warm(w.ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	wantContains(t, "audit without the endpoints Secret", w.fails("audit", "spring-sale"),
		"spec.redis.addressSecretRef: Secret "+w.ns+"/flashsale-endpoints not found")

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controllers.DefaultEndpointsSecret, Namespace: w.ns},
		StringData: map[string]string{controllers.KeyRedisAddress: rdb.Options().Addr, controllers.KeyMySQLDSN: dsn}}
	if err := w.c.Create(w.ctx, secret); err != nil {
		t.Fatal(err)
	}
	out := w.ok("audit", "spring-sale")
	wantContains(t, "audit", out, "Audit of sale "+fs.SaleKey(), "REMAINING", "LAW", "Result: OK", "verdict: conserved")
	for _, row := range []string{"phone", "case"} {
		if !strings.Contains(out, row) {
			t.Fatalf("no row for SKU %s:\n%s", row, out)
		}
	}

	// 5 phone units vanish from the counter: nobody holds them.
	if err := rdb.DecrBy(w.ctx, keys.ForSKU(fs.SaleKey(), "phone").Stock, 5).Err(); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := w.run("audit", "spring-sale")
	if code == 0 || !strings.Contains(stdout, "verdict: NOT CONSERVED") || !strings.Contains(stderr, "not conserved") {
		t.Fatalf("audit after tampering: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, _, code = w.run("audit", "spring-sale", "--json")
	var rep struct {
		OK   bool `json:"ok"`
		SKUs []struct {
			SKU       string `json:"sku"`
			Remaining int64  `json:"remaining"`
		} `json:"skus"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code == 0 || rep.OK {
		t.Fatalf("audit --json after tampering: exit %d ok %t err %v\n%s", code, rep.OK, err, stdout)
	}
}
