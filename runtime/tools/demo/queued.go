package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/audit"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/teardown"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/warm"
	"github.com/flashsale-dev/flashsale-operator/runtime/tools/loadtest"
)

// queuedStartIn is how long after it is created the queued sale starts:
// its buyers join the waiting room before that, and get a random place at
// the start.
const queuedStartIn = 3 * time.Second

// queuedPaymentTimeout is the queued sale's shortest payment deadline.
const queuedPaymentTimeout = 15 * time.Second

// newQueuedSale is the demo's sale with a waiting room: fewer units than
// buyers, admitted at 500 a second, never more outstanding than the
// remaining stock x 1.5.
func newQueuedSale(o Options) *v1alpha1.FlashSale {
	fs := newSale(o)
	fs.Name = "queued-" + strings.TrimPrefix(fs.Name, "demo-")
	fs.Spec.StartTime = metav1.NewTime(time.Now().Add(queuedStartIn))
	fs.Spec.SKUs = []v1alpha1.SKU{
		{ID: "phone", Stock: o.PhoneStock, Price: "3999.00", PerUserLimit: 1},
		{ID: "case", Stock: o.CaseStock, Price: "19.90", PerUserLimit: 3},
	}
	fs.Spec.Queue = &v1alpha1.Queue{PrequeueLead: &metav1.Duration{Duration: time.Minute}, AdmitPerSecond: 500, Overbook: "1.5"}
	// Long enough that no unpaid order comes back while the buyers wait:
	// units returned after the sell-out reopen admission, and the next
	// places may belong to buyers who already left (their admissions hold
	// the budget until admissionTTL), which this demo is not about.
	fs.Spec.PaymentTimeout = &metav1.Duration{Duration: max(o.PaymentTimeout, queuedPaymentTimeout)}
	fs.SetDefaults()
	return fs
}

// runQueued runs the queued sale: its data plane in-process, o.QueueBuyers
// buyers (with rejoiners, probes and bots) through `flashsale loadtest`'s
// flow (join before the start, wait, token with the ticket, purchase, poll,
// pay), the loadtest's checks, and the audit once the unpaid orders are
// cancelled.
func runQueued(ctx context.Context, rdb redis.UniversalClient, o Options, out io.Writer) (*loadtest.Report, *audit.Report, error) {
	sale := newQueuedSale(o)
	fmt.Fprintf(out, "\n==> Sale %s with a waiting room: %d phones, %d cases; buyers join now, it starts in %s;"+
		" %d admitted a second, never more outstanding than the remaining stock x %g\n",
		sale.SaleKey(), o.PhoneStock, o.CaseStock, queuedStartIn, sale.Spec.Queue.AdmitPerSecond, sale.Overbook())
	if !o.Keep {
		defer func() { _, _ = teardown.DeleteKeys(context.WithoutCancel(ctx), rdb, sale.SaleKey()) }()
	}
	db, dbName, err := createDatabase(ctx, o.MySQLDSN, sale.Name)
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	if !o.Keep {
		defer dropDatabase(context.WithoutCancel(ctx), db, dbName)
	}
	if _, err := orderdb.Migrate(ctx, db); err != nil {
		return nil, nil, err
	}
	store := orderdb.New(db)
	if _, err := warm.Warm(ctx, rdb, sale); err != nil {
		return nil, nil, err
	}
	dp, err := startDataPlane(ctx, rdb, db, store, sale)
	if err != nil {
		return nil, nil, err
	}
	defer dp.stop()
	rep, err := loadtest.Run(ctx, loadtest.Options{
		BaseURL: strings.TrimSuffix(dp.base, "/api/v1/sales/"+sale.Namespace+"/"+sale.Name), Namespace: sale.Namespace, Name: sale.Name,
		SKUs: loadtest.SKUsOf(sale), Sale: sale, Users: o.QueueBuyers, SpikeWindow: time.Second, Concurrency: o.Concurrency,
		RepeatShare: 0.2, RepeatDelay: 200 * time.Millisecond, BotShare: 0.05, RejoinShare: 0.2, ProbeShare: 0.05,
		ThinkTime: 500 * time.Millisecond, QueueTimeout: 20 * time.Second, PayShare: o.PayShare, PaymentSecret: string(dp.paySecret),
		ForwardedFor: true, Orders: store, PollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := rep.WriteText(out); err != nil {
		return rep, nil, err
	}
	fmt.Fprintf(out, "==> Waiting for the unpaid orders of %s to be cancelled, then the audit ...\n", sale.SaleKey())
	if err := waitSettled(ctx, store, sale.SaleKey(), int(rep.Orders.Admitted), sale.Spec.PaymentTimeout.Duration+20*time.Second); err != nil {
		fmt.Fprintf(out, "    %v\n", err)
	}
	if _, err := dp.rb.RunOnce(ctx); err != nil {
		return rep, nil, err
	}
	aud, err := audit.New(audit.Config{Sale: sale, Redis: rdb, Orders: store, Logger: quietLogger()})
	if err != nil {
		return rep, nil, err
	}
	ar, err := aud.Run(ctx)
	if err != nil {
		return rep, nil, err
	}
	var b strings.Builder
	_ = ar.WriteText(&b)
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintln(out, "    "+line)
	}
	return rep, ar, nil
}
