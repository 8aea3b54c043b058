package warm_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestWarmFiguresCountATransferStartedWhileReading: a unit leaves a
// bucket's counters for the units in flight right after warm read the
// counters (a return forwarded to bucket 0, its process dead before
// completing it). The declared stock warm reports still counts it once: it
// reads the units in flight before and after the counters and again until
// they agree. (Read once, after the counters, it counted the unit twice.)
func TestWarmFiguresCountATransferStartedWhileReading(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	fs := splitSale(t, rdb, 2, 2)
	warmOK(t, rdb, fs)
	b := newBuyer(t, rdb, fs)
	b.buy(0, 1)
	o := b.buy(1, 1)[0]
	fs.Spec.SKUs[0].Stock = 1 // 2 held: bucket 0 owes 1, the buckets stay held
	if got := warmOK(t, rdb, fs); !got.Held || got.Debt != 1 {
		t.Fatalf("lower to 1 with 2 held: %+v, want 1 owed and the buckets held", got)
	}
	watched := redis.NewClient(rdb.Options())
	t.Cleanup(func() { watched.Close() })
	dying := redis.NewClient(rdb.Options())
	t.Cleanup(func() { dying.Close() })
	dying.AddHook(&dieAfterScript{})
	k0 := keys.ForSKU(fs.SaleKey(), "a")
	watched.AddHook(&afterCounters{initial: k0.Initial, then: func() {
		if r, err := orderstate.ReleaseUnit(ctx, dying, o, 2); err != nil || r != orderstate.Forwarded {
			t.Errorf("return forwarded by a dying process: %v, %v", r, err)
		}
	}})
	got := warmOK(t, watched, fs)
	if got.InFlight != 1 || got.Declared() != 1 {
		t.Fatalf("warm with a unit given while it read: %+v (declared %d), want 1 in flight and 1 declared", got, got.Declared())
	}
}

// afterCounters runs then once, right after the first pipeline that reads
// bucket 0's initial counter (warm's read of the figures).
type afterCounters struct {
	initial string
	then    func()
	done    atomic.Bool
}

func (h *afterCounters) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterCounters) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *afterCounters) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if args := c.Args(); c.Name() == "get" && len(args) == 2 && args[1] == h.initial && !h.done.Swap(true) {
				h.then()
			}
		}
		return err
	}
}

// dieAfterScript fails every command after the first script ran: a process
// that died right after the release script.
type dieAfterScript struct{ dead atomic.Bool }

func (d *dieAfterScript) DialHook(next redis.DialHook) redis.DialHook { return next }

func (d *dieAfterScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if d.dead.Load() {
			return errors.New("the process died")
		}
		err := next(ctx, cmd)
		if err == nil && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			d.dead.Store(true)
		}
		return err
	}
}

func (d *dieAfterScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
