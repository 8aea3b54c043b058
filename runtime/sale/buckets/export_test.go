package buckets

import "github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"

// SetAfterGive replaces the hook between give and take until the test ends.
func SetAfterGive(t interface{ Cleanup(func()) }, f func(keys.SKU, string)) {
	old := afterGive
	afterGive = f
	t.Cleanup(func() { afterGive = old })
}
