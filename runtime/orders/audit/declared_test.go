package audit_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/internal/ordertest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/buckets"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestSplitSKUTransferAppliedTwiceOrLost: a transfer between two buckets
// applied twice (its take applied, its give undone, as a failover that lost
// the giver's write leaves them) or lost (given, its take undone) leaves
// every bucket balanced; only the law across the buckets, against the
// declared stock bucket 0 records, sees the units the SKU gained or lost.
// A normal split sale with a transfer completed and one in flight is
// conserved.
func TestSplitSKUTransferAppliedTwiceOrLost(t *testing.T) {
	t.Run("redis", func(t *testing.T) { transferAppliedTwiceScenario(t, testutil.Redis(t)) })
	t.Run("cluster", func(t *testing.T) { transferAppliedTwiceScenario(t, testutil.RedisCluster(t).Client(t)) })
}

func transferAppliedTwiceScenario(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	s := newSplitSale(t, rdb)
	saleKey := s.fs.SaleKey()
	s.buy("a", ordertest.Buyers("ua", 30, 3)[:9]...) // 3 per bucket, left in their streams
	if moved, err := buckets.Move(ctx, rdb, saleKey, "a", 3, 1, 2, 4); err != nil || moved != 4 {
		t.Fatalf("move: %d, %v", moved, err)
	}
	ks := keys.Buckets(saleKey, "a", 3)
	// A transfer of 2 units from bucket 0 to 1 given, not yet taken in.
	shift(t, rdb, ks[0], -2)
	if err := rdb.HSet(ctx, ks[0].Outbox, "in-flight", "2 1").Err(); err != nil {
		t.Fatal(err)
	}
	a, err := audit.New(audit.Config{Sale: s.fs, Redis: rdb, Orders: s.store, StuckAfter: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run := func() *audit.Report {
		t.Helper()
		rep, err := a.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := run()
	if sa := rep.SKUs[0]; !rep.OK || !sa.Conserved || sa.Transferring != 2 || sa.Split == nil || !sa.Split.Steady ||
		sa.Split.Declared != 30 || sa.Split.Counted != 30 {
		t.Fatalf("a normal split sale with a transfer in flight:\n%s", text(rep))
	}

	// The completed transfer's give undone on bucket 1: its 4 units are in
	// bucket 2 and back in bucket 1.
	shift(t, rdb, ks[1], 4)
	wantAcrossBroken(t, run(), 30, 34)
	shift(t, rdb, ks[1], -4)
	if rep := run(); !rep.OK {
		t.Fatalf("with the counters put back:\n%s", text(rep))
	}
	// Its take undone on bucket 2: the 4 units are nowhere.
	shift(t, rdb, ks[2], -4)
	wantAcrossBroken(t, run(), 30, 26)
}

// shift adds units to a bucket's stock and initial together, as a write
// lost (or applied twice) by a failover leaves them: the bucket stays
// balanced.
func shift(t *testing.T, rdb redis.UniversalClient, k keys.SKU, units int64) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.IncrBy(ctx, k.Stock, units).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.IncrBy(ctx, k.Initial, units).Err(); err != nil {
		t.Fatal(err)
	}
}

// wantAcrossBroken fails unless rep finds SKU a's buckets each balanced
// and the SKU not conserved: declared stock declared, counted counted.
func wantAcrossBroken(t *testing.T, rep *audit.Report, declared, counted int64) {
	t.Helper()
	sa := rep.SKUs[0]
	for _, b := range sa.Buckets {
		if !b.Conserved || b.Imbalance != 0 {
			t.Fatalf("bucket %d not balanced, the scenario is wrong:\n%s", b.Bucket, text(rep))
		}
	}
	found := false
	for _, f := range rep.Findings {
		found = found || (f.Kind == audit.KindImbalance && f.SKU == "a" &&
			strings.Contains(f.Detail, "declared stock 30") && strings.Contains(f.Detail, fmt.Sprintf("≠ %d", counted)))
	}
	if rep.OK || rep.Conserved || sa.Conserved || sa.Split == nil || sa.Split.Declared != declared || sa.Split.Counted != counted ||
		!found || !strings.Contains(strings.Join(rep.Failures(), ";"), "across the buckets of SKU a") ||
		!strings.Contains(text(rep), "BROKEN ACROSS BUCKETS") {
		t.Fatalf("declared %d, counted %d across the buckets, not reported:\n%s", declared, counted, text(rep))
	}
}
