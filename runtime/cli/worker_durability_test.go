package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestWorkerWaitReplicasFlag: a negative --wait-replicas stops the worker
// at start-up with what is wrong.
func TestWorkerWaitReplicasFlag(t *testing.T) {
	path, _ := writeSale(t)
	_, dsn := testutil.OrderDB(t)
	out, err := run(context.Background(), "worker", "--file", path, "--mysql-dsn", dsn, "--metrics-addr", "", "--wait-replicas", "-1")
	if err == nil || !strings.Contains(err.Error()+out, "--wait-replicas must be 0 or more") {
		t.Errorf("err %v out %q, want a refusal of --wait-replicas -1", err, out)
	}
}
