package switches_test

import (
	"context"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestSwitches: an unwritten control hash reads as all off; each setter flips
// only its own switch, both ways; Queue reads what Get reads, in a pipeline.
func TestSwitches(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	sale := "ns-" + testutil.UniqueName(t) + "/s"
	for _, p := range keys.Patterns(sale) {
		testutil.CleanupKeys(t, rdb, p)
	}
	get := func() switches.State {
		t.Helper()
		sw, err := switches.Get(ctx, rdb, sale)
		if err != nil {
			t.Fatal(err)
		}
		pipe := rdb.Pipeline()
		queued := switches.Queue(ctx, pipe, sale)
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if q := queued(); q != sw {
			t.Fatalf("Queue read %+v, Get read %+v", q, sw)
		}
		return sw
	}
	if sw := get(); sw != (switches.State{}) {
		t.Fatalf("unwritten switches = %+v, want all off", sw)
	}
	set := map[string]func(bool) error{
		"paused": func(on bool) error { return switches.SetPaused(ctx, rdb, sale, on) },
		"closed": func(on bool) error { return switches.SetClosed(ctx, rdb, sale, on) },
		"held":   func(on bool) error { return switches.SetHeld(ctx, rdb, sale, on) },
	}
	want := map[string]switches.State{
		"paused": {Paused: true},
		"closed": {Closed: true},
		"held":   {Held: true},
	}
	for name, flip := range set {
		if err := flip(true); err != nil {
			t.Fatal(err)
		}
		if sw := get(); sw != want[name] {
			t.Fatalf("after %s on: %+v, want %+v", name, sw, want[name])
		}
		if err := flip(false); err != nil {
			t.Fatal(err)
		}
		if sw := get(); sw != (switches.State{}) {
			t.Fatalf("after %s off: %+v, want all off", name, sw)
		}
	}
}
