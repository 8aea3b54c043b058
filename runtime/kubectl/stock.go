package kubectl

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// conflictBackoff spaces the retries of a stock change that lost a race:
// with jitter, so a handful of SREs (or scripts) adding stock at the same
// moment all get through rather than retrying in lockstep.
var conflictBackoff = wait.Backoff{Steps: 20, Duration: 10 * time.Millisecond, Factor: 1.5, Jitter: 1, Cap: 2 * time.Second}

// stockChange computes a SKU's new stock from its current one.
type stockChange struct {
	verb string // add-stock or set-stock, for the answer
	n    int64
	next func(cur int64) int64
}

func newAddStockCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "add-stock NAME SKU N",
		Short: "Add N units (N > 0) to a SKU's stock (spec.skus[SKU].stock += N)",
		Long: `Raise spec.skus[SKU].stock by N. The operator adds the difference to the
stock on sale in Redis. The patch carries the resourceVersion it read, so two
people adding stock at once both count: the later one retries on the new value.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseUnits(args[2], 1)
			if err != nil {
				return err
			}
			return o.changeStock(cmd, args[0], args[1], stockChange{verb: "add-stock", n: n, next: func(cur int64) int64 {
				if cur > math.MaxInt64-n {
					return math.MaxInt64
				}
				return cur + n
			}})
		},
	}
}

func newSetStockCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "set-stock NAME SKU N",
		Short: "Set a SKU's stock to N (N >= 0); lowering it is allowed (see the caution it prints)",
		Long: `Set spec.skus[SKU].stock to N. Raising adds the difference to the stock on
sale. Lowering takes the unsold units back at once; units buyers already hold
are owed as the SKU's debt (status.skus[].debt), paid off as unpaid orders are
cancelled (docs/runbook.md, "Adding or lowering stock").`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseUnits(args[2], 0)
			if err != nil {
				return err
			}
			return o.changeStock(cmd, args[0], args[1], stockChange{verb: "set-stock", n: n, next: func(int64) int64 { return n }})
		},
	}
}

// parseUnits reads N, which must be an integer of at least least.
func parseUnits(s string, least int64) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < least {
		return 0, fmt.Errorf("the count N must be an integer >= %d, not %q", least, s)
	}
	return n, nil
}

func (o *options) changeStock(cmd *cobra.Command, name, sku string, ch stockChange) error {
	c, ns, err := o.client()
	if err != nil {
		return err
	}
	var fs *v1alpha1.FlashSale
	var before, after int64
	// A conflict means someone else changed the sale since it was read:
	// read it again and apply the change to the new value.
	err = retry.RetryOnConflict(conflictBackoff, func() error {
		fs, before, after, err = patchStock(cmd.Context(), c, ns, name, sku, ch)
		return err
	})
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if before == after {
		_, err = fmt.Fprintf(out, "%s %s %d: spec.skus[%s].stock is already %d: no change\n", ch.verb, sku, ch.n, sku, before)
		return err
	}
	fmt.Fprintf(out, "%s %s %d: spec.skus[%s].stock %d → %d (%s)\n", ch.verb, sku, ch.n, sku, before, after, ref(fs))
	if after < before {
		fmt.Fprintf(out, "caution: stock lowered by %d. The operator takes back unsold units at once; units buyers hold\n"+
			"  stay theirs and are owed as debt (status.skus[].debt), paid off as unpaid orders are cancelled.\n"+
			"  Watch it with: kubectl flashsale status %s\n", before-after, fs.Name)
	}
	return nil
}

// patchStock reads the sale, applies ch to the SKU and patches the spec
// with an optimistic lock. It returns the stock before and after.
func patchStock(ctx context.Context, c client.Client, ns, name, sku string, ch stockChange) (*v1alpha1.FlashSale, int64, int64, error) {
	fs, err := getSale(ctx, c, ns, name)
	if err != nil {
		return nil, 0, 0, err
	}
	if fs.Spec.Closed {
		return nil, 0, 0, fmt.Errorf("%s is closed (spec.closed: true): its purchases are over, stock changes nothing", ref(fs))
	}
	i := skuIndex(fs, sku)
	if i < 0 {
		return nil, 0, 0, fmt.Errorf("%s has no SKU %q; its SKUs: %s", ref(fs), sku, strings.Join(fs.SKUIDs(), ", "))
	}
	orig := fs.DeepCopy()
	before := fs.Spec.SKUs[i].Stock
	after := ch.next(before)
	if after == before {
		return fs, before, after, nil
	}
	fs.Spec.SKUs[i].Stock = after
	if err := c.Patch(ctx, fs, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, 0, 0, fmt.Errorf("patch %s spec.skus[%s].stock: %w", ref(fs), sku, err)
	}
	return fs, before, after, nil
}

func skuIndex(fs *v1alpha1.FlashSale, id string) int {
	for i, s := range fs.Spec.SKUs {
		if s.ID == id {
			return i
		}
	}
	return -1
}
