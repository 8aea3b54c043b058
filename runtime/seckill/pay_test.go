package seckill_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

const paySecret = "s3cret-payment-key"

func newOrderStore(t *testing.T) *orderdb.Store {
	t.Helper()
	db, _ := testutil.OrderDB(t)
	return orderdb.New(db)
}

// admitted reads the orders the purchase script queued on the SKU's stream.
func admitted(t *testing.T, rdb redis.UniversalClient, fs *v1alpha1.FlashSale, sku string) map[string]order.Order {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), keys.ForSKU(fs.SaleKey(), sku).Stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]order.Order{}
	for _, m := range msgs {
		o, err := order.FromStream(m.Values)
		if err != nil {
			t.Fatal(err)
		}
		out[o.OrderNo] = o
	}
	return out
}

// TestPayEndpoint drives every answer of the pay endpoint through real HTTP
// requests against real Redis and MariaDB.
func TestPayEndpoint(t *testing.T) {
	rdb := testutil.Redis(t)
	ctx := context.Background()
	store := newOrderStore(t)
	fs := newSale(t, rdb, v1alpha1.SKU{ID: "1001", Stock: 10, Price: "3999.00", PerUserLimit: 1})
	s := startServer(t, rdb, fs, serverOpts{orders: store, paySecret: []byte(paySecret)})

	// Five admitted orders; four become durable (as the worker would do),
	// with the deadlines each case needs. The fifth stays queued in Redis.
	users := []string{"live", "late", "gone", "queued", "repeat"}
	nos := map[string]string{}
	for _, u := range users {
		r := s.buy(u, "1001")
		if r.Status != http.StatusAccepted {
			t.Fatalf("buy %s: %d %s", u, r.Status, r.Error)
		}
		nos[u] = r.OrderNo
	}
	orders := admitted(t, rdb, fs, "1001")
	now := time.Now()
	var durable []order.Order
	for _, u := range []string{"live", "late", "gone", "repeat"} {
		o := orders[nos[u]]
		switch u {
		case "late", "gone":
			o.Deadline = now.Add(-time.Second).UTC().Truncate(time.Millisecond)
		}
		durable = append(durable, o)
	}
	if _, err := store.InsertBatch(ctx, durable); err != nil {
		t.Fatal(err)
	}
	if err := orderstate.MarkCreated(ctx, rdb, nil, durable); err != nil {
		t.Fatal(err)
	}
	// "gone" was cancelled by the rollback, its unit returned.
	if won, err := store.Cancel(ctx, nos["gone"], now); err != nil || !won {
		t.Fatalf("cancel: %v %v", won, err)
	}
	gone := orders[nos["gone"]]
	if back, err := orderstate.Release(ctx, rdb, &gone, 1); err != nil || !back {
		t.Fatalf("release: %v %v", back, err)
	}
	if err := store.MarkReturned(ctx, nos["gone"]); err != nil {
		t.Fatal(err)
	}

	auth := []string{"Authorization", "Bearer " + paySecret}
	pay := func(no string, headers ...string) reply {
		t.Helper()
		return s.call(http.MethodPost, "/orders/"+no+"/pay", `{"paymentId":"p-1"}`, headers...)
	}
	rowStatus := func(no string) order.Status {
		t.Helper()
		r, err := store.Get(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	// refused checks the answer and that neither Redis nor MySQL moved.
	refused := func(name, no string, status int, code string, headers ...string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			before := snapshot(t, rdb, fs)
			var beforeRow orderdb.Row
			if no != "" {
				beforeRow, _ = store.Get(ctx, no)
			}
			r := pay(no, headers...)
			if r.Status != status || r.Error != code || r.Message == "" {
				t.Fatalf("got %d %s (%s), want %d %s", r.Status, r.Error, r.Message, status, code)
			}
			if after := snapshot(t, rdb, fs); after != before {
				t.Fatalf("redis changed:\nbefore %s\nafter  %s", before, after)
			}
			if no != "" {
				afterRow, _ := store.Get(ctx, no)
				if afterRow.Status != beforeRow.Status || (afterRow.PaidAt == nil) != (beforeRow.PaidAt == nil) {
					t.Fatalf("mysql row changed: %+v -> %+v", beforeRow, afterRow)
				}
			}
		})
	}

	refused("no credentials", nos["live"], 401, "UNAUTHORIZED")
	refused("wrong secret", nos["live"], 401, "UNAUTHORIZED", "Authorization", "Bearer nope")
	refused("basic auth", nos["live"], 401, "UNAUTHORIZED", "Authorization", "Basic "+paySecret)
	refused("deadline passed", nos["late"], 409, "EXPIRED", auth...)
	refused("cancelled", nos["gone"], 409, "CANCELLED", auth...)
	refused("not durable yet", nos["queued"], 425, "PENDING", auth...)
	refused("unknown order", "1001-0123456789abcdef01234567", 404, "NOT_FOUND", auth...)
	refused("unknown sku", "9999-0123456789abcdef01234567", 404, "NOT_FOUND", auth...)
	refused("garbage order number", "nonsense", 404, "NOT_FOUND", auth...)

	t.Run("paid, then a repeat", func(t *testing.T) {
		stockBefore := stock(t, rdb, fs, "1001")
		r := pay(nos["live"], auth...)
		if r.Status != 200 || r.State != "paid" || r.OrderNo != nos["live"] || r.SKU != "1001" {
			t.Fatalf("pay: %d %+v", r.Status, r)
		}
		if st := rowStatus(nos["live"]); st != order.Paid {
			t.Fatalf("mysql status %s", st)
		}
		k := keys.ForSKU(fs.SaleKey(), "1001")
		if _, err := rdb.ZScore(ctx, k.Expiry, nos["live"]).Result(); err != redis.Nil {
			t.Fatalf("paid order still in the expiry set: %v", err)
		}
		if got := s.call(http.MethodGet, "/orders/"+nos["live"], "", "X-User-ID", "live"); got.State != "paid" {
			t.Fatalf("result polling shows %q", got.State)
		}
		before := snapshot(t, rdb, fs)
		r = pay(nos["live"], auth...)
		if r.Status != 200 || r.State != "paid" {
			t.Fatalf("repeat: %d %+v", r.Status, r)
		}
		if after := snapshot(t, rdb, fs); after != before {
			t.Fatal("a repeat payment changed Redis")
		}
		if stock(t, rdb, fs, "1001") != stockBefore {
			t.Fatal("payment moved stock")
		}
	})

	t.Run("lowercase bearer and surrounding space", func(t *testing.T) {
		r := pay(nos["repeat"], "Authorization", "bearer  "+paySecret+" ")
		if r.Status != 200 || r.State != "paid" {
			t.Fatalf("pay: %d %s", r.Status, r.Error)
		}
	})

	t.Run("result polling shows cancelled", func(t *testing.T) {
		if got := s.call(http.MethodGet, "/orders/"+nos["gone"], "", "X-User-ID", "gone"); got.State != "cancelled" {
			t.Fatalf("result polling shows %q", got.State)
		}
	})

	t.Run("secret rotation", func(t *testing.T) {
		s.SetPaymentSecret([]byte("rotated"))
		defer s.SetPaymentSecret([]byte(paySecret))
		if r := pay(nos["live"], auth...); r.Status != 401 {
			t.Fatalf("old secret accepted: %d", r.Status)
		}
		if r := pay(nos["live"], "Authorization", "Bearer rotated"); r.Status != 200 {
			t.Fatalf("new secret refused: %d %s", r.Status, r.Error)
		}
		s.SetPaymentSecret(nil)
		if r := pay(nos["live"], "Authorization", "Bearer rotated"); r.Status != 503 || r.Error != "NOT_CONFIGURED" {
			t.Fatalf("without a secret: %d %s", r.Status, r.Error)
		}
	})

	t.Run("wrong method", func(t *testing.T) {
		if r := s.call(http.MethodGet, "/orders/"+nos["live"]+"/pay", "", auth...); r.Status != 405 {
			t.Fatalf("GET pay: %d", r.Status)
		}
	})
}
