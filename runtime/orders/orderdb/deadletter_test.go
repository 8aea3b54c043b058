package orderdb_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// Archiving is idempotent by (sale, source, source id, payload), keeps the
// payload byte for byte (garbage included), and a different message at a
// reused source id (a sale re-created under the same name) is a row of its
// own.
func TestArchiveDeadLetters(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	garbage := []byte{0xff, 0x00, 'n', 'o', 't', ' ', 'j', 's', 'o', 'n', 0xfe}
	dls := []orderdb.DeadLetter{
		{Sale: "shop/sale", Source: orderdb.SourceKafkaDLQ, SourceID: "0@7", Payload: garbage, Reason: "not an order"},
		{Sale: "shop/sale", SKU: "1001", Source: orderdb.SourceDLQStream, SourceID: "1-1", OrderNo: "X1", Valid: true,
			Payload: []byte(`{"f:order":"X1"}`), Reason: "abandoned"},
		{Sale: "shop/other", Source: orderdb.SourceKafkaDLQ, SourceID: "0@7", Payload: nil, Reason: "empty"},
	}
	if n, err := s.ArchiveDeadLetters(ctx, dls); err != nil || n != 3 {
		t.Fatalf("first archive: %d new rows, err %v; want 3", n, err)
	}
	if n, err := s.ArchiveDeadLetters(ctx, dls); err != nil || n != 0 {
		t.Fatalf("archive again: %d new rows, err %v; want 0", n, err)
	}
	reused := orderdb.DeadLetter{Sale: "shop/sale", Source: orderdb.SourceKafkaDLQ, SourceID: "0@7", Payload: []byte("other bytes")}
	if n, err := s.ArchiveDeadLetters(ctx, []orderdb.DeadLetter{reused}); err != nil || n != 1 {
		t.Fatalf("a different message at a reused offset: %d new rows, err %v; want 1", n, err)
	}
	c, err := s.CountDeadLetters(ctx, "shop/sale")
	if err != nil || c != (orderdb.DeadLetterCounts{Poison: 2, Orders: 1}) {
		t.Fatalf("counts %+v %v; want 2 poison, 1 order", c, err)
	}
	got, err := s.ListDeadLetters(ctx, "shop/sale", 10)
	if err != nil || len(got) != 3 {
		t.Fatalf("list: %d rows %v", len(got), err)
	}
	if !bytes.Equal(got[0].Payload, garbage) || got[0].OrderNo != "" || got[0].Valid || got[0].ArchivedAt.IsZero() {
		t.Fatalf("garbage row read back as %+v", got[0])
	}
	if got[1].OrderNo != "X1" || !got[1].Valid || got[1].SKU != "1001" {
		t.Fatalf("order row read back as %+v", got[1])
	}
	other, err := s.ListDeadLetters(ctx, "shop/other", 10)
	if err != nil || len(other) != 1 || len(other[0].Payload) != 0 {
		t.Fatalf("empty payload row: %+v %v", other, err)
	}
}
