package warm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestWarmInitsTheQueue: warming a sale with spec.queue opens its waiting
// room (joins are refused NOT_WARMED before); warming it again keeps every
// place and admission; a sale without spec.queue gets no queue.
func TestWarmInitsTheQueue(t *testing.T) {
	ctx := context.Background()
	rdb := testutil.Redis(t)
	fs := sale(t, rdb, 10)
	fs.Spec.Queue = &v1alpha1.Queue{AdmitPerSecond: 100}
	fs.SetDefaults()
	cfg, ok := queue.ConfigOf(fs)
	if !ok || cfg.Overbook != 1.5 || cfg.AdmissionTTL != 2*time.Minute || cfg.AdmitPerSecond != 100 || !cfg.Start.Equal(fs.Spec.StartTime.Time) {
		t.Fatalf("ConfigOf: %+v %v", cfg, ok)
	}
	q := queue.New(rdb, fs.SaleKey(), cfg)
	if _, err := q.Join(ctx, "early", cfg.Start.Add(-time.Minute)); !errors.Is(err, queue.ErrNotWarmed) {
		t.Fatalf("join before warm-up: %v, want ErrNotWarmed", err)
	}
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b", "c"} {
		if _, err := q.Join(ctx, u, cfg.Start.Add(-time.Minute)); err != nil {
			t.Fatalf("join after warm-up: %v", err)
		}
	}
	if _, err := q.Admit(ctx, cfg.Start.Add(20*time.Millisecond), 10); err != nil { // 2 admitted at 100/s
		t.Fatal(err)
	}
	if _, err := warm.Warm(ctx, rdb, fs); err != nil {
		t.Fatal(err)
	}
	f, ok, err := queue.Read(ctx, rdb, fs.SaleKey())
	if want := (queue.Figures{Joined: 3, Waiting: 1, Admitted: 2, Outstanding: 2}); err != nil || !ok || f != want {
		t.Fatalf("after warming again: %+v %v %v, want %+v", f, ok, err, want)
	}

	plain := sale(t, rdb, 10)
	if _, err := warm.Warm(ctx, rdb, plain); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := queue.Read(ctx, rdb, plain.SaleKey()); err != nil || ok {
		t.Fatalf("a sale without spec.queue has a queue (%v, %v)", ok, err)
	}
}
