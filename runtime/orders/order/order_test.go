package order_test

import (
	"strings"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
)

func valid() order.Order {
	at := time.UnixMilli(1_800_000_000_123).UTC()
	return order.Order{OrderNo: purchase.OrderNo("shop/s", "1001", "alice", 2, 0), Sale: "shop/s", SKU: "1001", User: "alice",
		N: 2, Amount: "3999.00", AdmittedAt: at, Deadline: at.Add(15 * time.Minute)}
}

func TestMarshalRoundTrip(t *testing.T) {
	o := valid()
	b, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := order.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != o {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, o)
	}
}

func TestFromStream(t *testing.T) {
	o := valid()
	got, err := order.FromStream(map[string]any{"order": o.OrderNo, "sale": "shop/s", "sku": "1001", "user": "alice",
		"n": "2", "amount": "3999.00", "at": "1800000000123", "deadline": "1800000900123"})
	if err != nil || got != o {
		t.Fatalf("FromStream: %+v %v", got, err)
	}
}

// TestPoisonIsRecognised: corrupt orders fail validation with the reason,
// so the pipeline dead-letters them instead of retrying forever.
func TestPoisonIsRecognised(t *testing.T) {
	cases := map[string]string{
		"garbage":          "\x00\x01",
		"wrong order no":   `{"orderNo":"1001-000000000000000000000000","sale":"shop/s","sku":"1001","user":"alice","n":2,"amount":"1","admittedAtMs":1,"deadlineMs":2}`,
		"bad amount":       strings.Replace(mustJSON(t), `"3999.00"`, `"lots"`, 1),
		"missing deadline": strings.Replace(mustJSON(t), `"deadlineMs"`, `"x"`, 1),
	}
	for name, in := range cases {
		if _, err := order.Unmarshal([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustJSON(t *testing.T) string {
	o := valid()
	b, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
