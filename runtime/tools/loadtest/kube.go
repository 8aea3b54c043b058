package loadtest

import (
	"context"
	"fmt"
	"io"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// FlashSaleView is the part of a FlashSale's status the checks read.
type FlashSaleView struct {
	Phase v1alpha1.Phase        `json:"phase"`
	SKUs  []v1alpha1.SKUStatus  `json:"skus,omitempty"`
	Audit *v1alpha1.AuditStatus `json:"audit,omitempty"`
	Queue *v1alpha1.QueueStatus `json:"queue,omitempty"`
	// WaitedSeconds is how long the checks waited for phase Ended.
	WaitedSeconds float64 `json:"waitedSeconds,omitempty"`
}

// GetFlashSale reads one FlashSale.
func GetFlashSale(ctx context.Context, c client.Reader, namespace, name string) (*v1alpha1.FlashSale, error) {
	var fs v1alpha1.FlashSale
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &fs); err != nil {
		return nil, fmt.Errorf("read FlashSale %s/%s: %w", namespace, name, err)
	}
	return &fs, nil
}

// waitEnded polls the FlashSale until its phase is Ended or timeout passes;
// it returns the last FlashSale read. A failed read is retried until the
// timeout (the API server may be busy while the operator tears down).
func waitEnded(ctx context.Context, c client.Reader, namespace, name string, timeout, every time.Duration, progress io.Writer) (*v1alpha1.FlashSale, error) {
	deadline := time.Now().Add(timeout)
	var last v1alpha1.Phase
	for {
		fs, err := GetFlashSale(ctx, c, namespace, name)
		if err == nil && fs.Status.Phase == v1alpha1.PhaseEnded {
			return fs, nil
		}
		if err == nil && fs.Status.Phase != last && progress != nil {
			last = fs.Status.Phase
			fmt.Fprintf(progress, "waiting for FlashSale %s/%s to end: phase %s, queue lag %d (up to %s)\n",
				namespace, name, last, fs.Status.QueueLag, time.Until(deadline).Round(time.Second))
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return fs, nil
		}
		if sleep(ctx, every) != nil {
			if err == nil {
				return fs, ctx.Err()
			}
			return nil, ctx.Err()
		}
	}
}

func viewOf(fs *v1alpha1.FlashSale) *FlashSaleView {
	return &FlashSaleView{Phase: fs.Status.Phase, SKUs: fs.Status.SKUs, Audit: fs.Status.Audit, Queue: fs.Status.Queue}
}
