package purchase_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// dirty reads how many writes the server made (INFO persistence): the
// writes it replicates and appends to its AOF.
func dirty(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "persistence").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "rdb_changes_since_last_save:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("no rdb_changes_since_last_save in INFO persistence:\n%s", info)
	return 0
}

// TestReplayWrites: a replay (the purchase script's REPLAY, and Replay for
// a refused retry) makes one write that changes nothing (the token's record
// rewritten with its value), so that a WAIT or WAITAOF on the
// connection it ran on covers the earlier order; a token that made no order
// writes nothing.
func TestReplayWrites(t *testing.T) {
	rdb := testutil.StartRedisServer(t).Client(t) // private: counts only this test's writes
	ctx := context.Background()
	saleKey := testutil.UniqueName(t) + "/s"
	s, err := purchase.New(rdb, saleKey, purchase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	k := keys.ForSKU(saleKey, "x")
	rdb.Set(ctx, k.Stock, 10, 0)
	now := time.Now()
	req := purchase.Request{SKU: "x", User: "u", Limit: 1, Amount: "1.00", Nonce: "n1",
		Now: now, Deadline: now.Add(time.Minute)}
	first, err := s.Purchase(ctx, req)
	if err != nil || first.Outcome != purchase.Admitted {
		t.Fatalf("purchase: %+v %v", first, err)
	}

	check := func(what string, r purchase.Result, err error) {
		t.Helper()
		if err != nil || r.Outcome != purchase.Replayed || r.OrderNo != first.OrderNo {
			t.Fatalf("%s: %+v %v, want replayed %s", what, r, err, first.OrderNo)
		}
		if got, _ := rdb.HGetAll(ctx, k.Tokens).Result(); len(got) != 1 || got["n1"] != first.OrderNo {
			t.Errorf("%s: tokens' records %v, want only n1: %s", what, got, first.OrderNo)
		}
	}
	before := dirty(t, rdb)
	r, err := s.Purchase(ctx, req)
	check("purchase retry", r, err)
	if got := dirty(t, rdb) - before; got != 1 {
		t.Errorf("the purchase script's replay made %d writes, want 1 (a WAIT would not cover the order)", got)
	}
	before = dirty(t, rdb)
	r, err = s.Replay(ctx, keys.ForSKU(saleKey, "x"), "n1")
	check("refused retry", r, err)
	if got := dirty(t, rdb) - before; got != 1 {
		t.Errorf("Replay made %d writes, want 1", got)
	}
	before = dirty(t, rdb)
	if r, err := s.Replay(ctx, keys.ForSKU(saleKey, "x"), "n2"); err != nil || r.Outcome != purchase.NoOrder {
		t.Errorf("Replay of a token that made no order: %+v %v", r, err)
	}
	if got := dirty(t, rdb) - before; got != 0 {
		t.Errorf("Replay of a token that made no order made %d writes, want 0", got)
	}
	if got := rdb.Get(ctx, k.Stock).Val(); got != "9" {
		t.Errorf("stock %s after one purchase and its replays, want 9", got)
	}
}
