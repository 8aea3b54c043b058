// Package order is the order as it travels from the purchase script through
// the Redis Stream and Kafka to MySQL: one type, and its codecs for the
// stream entry and the Kafka message.
package order

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/purchase"
)

// Status of an order. Values match the seed's seckill_order.status column.
type Status int8

// Order statuses. An order only moves forward: queued (in Redis only) →
// created (durable in MySQL) → paid or cancelled.
const (
	Created   Status = 0
	Paid      Status = 1
	Cancelled Status = 2
	// Queued is never stored in MySQL: the order is admitted but not durable yet.
	Queued Status = -1
)

func (s Status) String() string {
	switch s {
	case Queued:
		return "queued"
	case Created:
		return "created"
	case Paid:
		return "paid"
	case Cancelled:
		return "cancelled"
	}
	return "unknown"
}

// ParseStatus is String's inverse.
func ParseStatus(s string) (Status, error) {
	switch s {
	case "queued":
		return Queued, nil
	case "created":
		return Created, nil
	case "paid":
		return Paid, nil
	case "cancelled":
		return Cancelled, nil
	}
	return 0, fmt.Errorf("unknown order status %q", s)
}

// Order is one admitted purchase.
type Order struct {
	OrderNo string `json:"orderNo"`
	Sale    string `json:"sale"` // "namespace/name"
	SKU     string `json:"sku"`
	User    string `json:"user"`
	// N is the user's n-th purchase of this SKU; (Sale, SKU, User, N) is unique.
	N      int64  `json:"n"`
	Amount string `json:"amount"`
	// AdmittedAt is when the purchase script admitted it (the pod's clock).
	AdmittedAt time.Time `json:"admittedAt"`
	// Deadline is when an unpaid order gets cancelled and its stock returned.
	Deadline time.Time `json:"deadline"`
}

// Validate checks that the order is internally consistent, so a corrupt
// message is recognised as poison instead of being retried forever.
func (o *Order) Validate() error {
	var errs []error
	if o.OrderNo == "" || o.Sale == "" || o.SKU == "" || o.User == "" {
		errs = append(errs, errors.New("orderNo, sale, sku and user are required"))
	}
	if o.N < 1 {
		errs = append(errs, fmt.Errorf("n must be >= 1, got %d", o.N))
	}
	if b, _ := keys.BucketOf(o.OrderNo); o.OrderNo != "" && o.OrderNo != purchase.OrderNo(o.Sale, o.SKU, o.User, o.N, b) {
		errs = append(errs, fmt.Errorf("orderNo %s does not match sale, sku, user and n", o.OrderNo))
	}
	if _, err := strconv.ParseFloat(o.Amount, 64); err != nil || o.Amount == "" {
		errs = append(errs, fmt.Errorf("amount %q is not a decimal", o.Amount))
	}
	if o.AdmittedAt.IsZero() || o.Deadline.IsZero() {
		errs = append(errs, errors.New("admittedAt and deadline are required"))
	}
	return errors.Join(errs...)
}

// FromStream decodes the fields the purchase script writes with XADD.
func FromStream(v map[string]any) (Order, error) {
	str := func(k string) string { s, _ := v[k].(string); return s }
	n, err1 := strconv.ParseInt(str("n"), 10, 64)
	at, err2 := strconv.ParseInt(str("at"), 10, 64)
	dl, err3 := strconv.ParseInt(str("deadline"), 10, 64)
	o := Order{
		OrderNo: str("order"), Sale: str("sale"), SKU: str("sku"), User: str("user"), N: n,
		Amount: str("amount"), AdmittedAt: time.UnixMilli(at).UTC(), Deadline: time.UnixMilli(dl).UTC(),
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return o, fmt.Errorf("stream entry %v: %w", v, err)
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("stream entry %s: %w", o.OrderNo, err)
	}
	return o, nil
}

// wire is the Kafka message value: the order with its instants as Unix
// milliseconds, the resolution the purchase script records them in. Parsing
// RFC 3339 strings was the largest single cost of the pipeline per order.
type wire struct {
	OrderNo    string `json:"orderNo"`
	Sale       string `json:"sale"`
	SKU        string `json:"sku"`
	User       string `json:"user"`
	N          int64  `json:"n"`
	Amount     string `json:"amount"`
	AdmittedAt int64  `json:"admittedAtMs"`
	Deadline   int64  `json:"deadlineMs"`
}

// Marshal encodes the order as a Kafka message value.
func (o *Order) Marshal() ([]byte, error) {
	return json.Marshal(wire{OrderNo: o.OrderNo, Sale: o.Sale, SKU: o.SKU, User: o.User, N: o.N, Amount: o.Amount,
		AdmittedAt: o.AdmittedAt.UnixMilli(), Deadline: o.Deadline.UnixMilli()})
}

// Unmarshal decodes and validates a Kafka message value.
func Unmarshal(b []byte) (Order, error) {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return Order{}, fmt.Errorf("decode order: %w", err)
	}
	o := Order{OrderNo: w.OrderNo, Sale: w.Sale, SKU: w.SKU, User: w.User, N: w.N, Amount: w.Amount}
	if w.AdmittedAt != 0 {
		o.AdmittedAt = time.UnixMilli(w.AdmittedAt).UTC()
	}
	if w.Deadline != 0 {
		o.Deadline = time.UnixMilli(w.Deadline).UTC()
	}
	if err := o.Validate(); err != nil {
		return o, fmt.Errorf("order %s: %w", o.OrderNo, err)
	}
	return o, nil
}
