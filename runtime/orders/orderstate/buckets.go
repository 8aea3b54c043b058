package orderstate

import (
	"fmt"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Buckets is how many buckets each SKU of a sale is split into
// (spec.skus[].buckets). An order number says which bucket holds the
// order's records (keys.BucketOf), but a bucket's hash tag also depends on
// the count (keys.ForBucket), so every component that goes from an order to
// its keys, or visits every bucket of a SKU, carries one of these, built
// from the sale's manifest. A SKU it does not name, and every SKU of a nil
// Buckets, has one bucket: the keys of keys.ForSKU.
type Buckets map[string]int

// BucketsOf reads the bucket counts of fs's SKUs.
func BucketsOf(fs *v1alpha1.FlashSale) Buckets {
	b := make(Buckets, len(fs.Spec.SKUs))
	for _, s := range fs.Spec.SKUs {
		b[s.ID] = s.BucketCount()
	}
	return b
}

// Of is the number of buckets of SKU sku (at least 1).
func (b Buckets) Of(sku string) int { return max(b[sku], 1) }

// Keys are the keys of every bucket of SKU sku of sale saleKey, bucket 0
// first.
func (b Buckets) Keys(saleKey, sku string) []keys.SKU { return keys.Buckets(saleKey, sku, b.Of(sku)) }

// All are the keys of every bucket of every SKU of skuIDs, SKU by SKU.
func (b Buckets) All(saleKey string, skuIDs []string) []keys.SKU {
	var out []keys.SKU
	for _, sku := range skuIDs {
		out = append(out, b.Keys(saleKey, sku)...)
	}
	return out
}

// Order are the keys of the bucket that holds order o's records.
func (b Buckets) Order(o *order.Order) keys.SKU {
	return keys.ForOrder(o.Sale, o.SKU, o.OrderNo, b.Of(o.SKU))
}

// Check says whether order o's number names a bucket its SKU has. An order
// that names another was never admitted: no purchase runs in a bucket the
// SKU lacks. The stores check it first, and the package's writers refuse
// such an order (see keysOf).
func (b Buckets) Check(o *order.Order) error {
	if ob, _ := keys.BucketOf(o.OrderNo); ob >= b.Of(o.SKU) {
		return fmt.Errorf("order %s is of bucket %d, but SKU %s has %d bucket(s)", o.OrderNo, ob, o.SKU, b.Of(o.SKU))
	}
	return nil
}

// keysOf are the keys of the bucket that holds order o's records, its SKU
// split into n buckets. An order number marked with a bucket the SKU does
// not have is an error: keys.ForOrder would give bucket 0's keys, where the
// order is not, and a release there would find nothing to return and let
// the caller record the unit as back (a caller that forgot the bucket
// counts would lose every unit of a split SKU that way).
func keysOf(o *order.Order, n int) (keys.SKU, error) {
	bk := Buckets{o.SKU: n}
	if err := bk.Check(o); err != nil {
		return keys.SKU{}, fmt.Errorf("%w: the sale's bucket counts are missing or wrong", err)
	}
	return bk.Order(o), nil
}
