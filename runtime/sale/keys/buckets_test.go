package keys_test

import (
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// TestBucketsSpreadOverTheSlotRing: bucket b of n sits b/n of the way round
// the slot ring from bucket 0, so equal contiguous slot ranges (what
// redis-cli --cluster create gives n primaries) hold one bucket each.
func TestBucketsSpreadOverTheSlotRing(t *testing.T) {
	for _, n := range []int{2, 3, 4, 7} {
		for _, sku := range skus {
			bs := keys.Buckets("shop/sale", sku, n)
			s0 := keys.Slot(bs[0].Stock)
			ranges := map[int]int{}
			for b, k := range bs {
				if k.Bucket != b || k.ID != sku || k.Sale != "shop/sale" {
					t.Fatalf("bucket %d of %s names itself %d of %s/%s", b, sku, k.Bucket, k.Sale, k.ID)
				}
				if got, want := keys.Slot(k.Stock), (s0+b*16384/n)%16384; got != want {
					t.Errorf("n=%d SKU %s bucket %d: slot %d, want %d", n, sku, b, got, want)
				}
				for _, key := range k.All() {
					if keys.Slot(key) != keys.Slot(k.Stock) {
						t.Errorf("bucket %d of %s: key %s is not in its bucket's slot", b, sku, key)
					}
				}
				ranges[keys.Slot(k.Stock)*n/16384]++
			}
			if len(ranges) != n {
				t.Errorf("n=%d SKU %s: buckets fall in %d of %d equal slot ranges: %v", n, sku, len(ranges), n, ranges)
			}
		}
	}
	if keys.ForBucket("shop/sale", "1001", 0, 3) != keys.ForSKU("shop/sale", "1001") {
		t.Error("bucket 0 of a split SKU must have the keys of the SKU unsplit")
	}
}

// TestHomeIsStable: every pod sends a user to the same bucket, and users
// spread over all buckets.
func TestHomeIsStable(t *testing.T) {
	seen := map[int]int{}
	for i := range 3000 {
		u := "user-" + string(rune('a'+i%26)) + string(rune('0'+i%10)) + string(rune(i))
		b := keys.Home(u, 3)
		if b != keys.Home(u, 3) || b < 0 || b >= 3 {
			t.Fatalf("Home(%q, 3) = %d, then %d", u, b, keys.Home(u, 3))
		}
		seen[b]++
	}
	for b := range 3 {
		if seen[b] < 800 {
			t.Errorf("bucket %d is home to %d of 3000 users: %v", b, seen[b], seen)
		}
	}
	if keys.Home("anyone", 1) != 0 || keys.Home("anyone", 0) != 0 {
		t.Error("a SKU not split has one bucket, 0")
	}
}

// TestOrderBucketMark: the bucket mark round-trips and is never read into
// an order number without one.
func TestOrderBucketMark(t *testing.T) {
	for _, c := range []struct {
		no   string
		b    int
		base string
	}{
		{"1001-0123456789abcdef01234567", 0, "1001-0123456789abcdef01234567"},
		{"1001-0123456789abcdef01234567~2", 2, "1001-0123456789abcdef01234567"},
		{"1001-0123456789abcdef01234567~31", 31, "1001-0123456789abcdef01234567"},
		{"x~0", 0, "x~0"}, {"x~-1", 0, "x~-1"}, {"x~02", 0, "x~02"}, {"x~", 0, "x~"}, {"x~a", 0, "x~a"},
	} {
		if b, base := keys.BucketOf(c.no); b != c.b || base != c.base {
			t.Errorf("BucketOf(%q) = %d, %q; want %d, %q", c.no, b, base, c.b, c.base)
		}
	}
	for b := range 5 {
		no := "a.b-0123456789abcdef01234567" + keys.OrderSuffix(b)
		if got, _ := keys.BucketOf(no); got != b {
			t.Errorf("bucket %d: %q reads as bucket %d", b, no, got)
		}
		if keys.ForOrder("s/x", "a.b", no, 5) != keys.ForBucket("s/x", "a.b", b, 5) {
			t.Errorf("ForOrder(%q) is not bucket %d", no, b)
		}
	}
}
