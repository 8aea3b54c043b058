package kubectl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/controllers"
)

// maxEvents is how many of the sale's latest Events the screen shows.
const maxEvents = 8

// countdown says how long until the sale's next boundary. The instants are
// the operator's own (controllers.SaleWindow), so the screen cannot disagree
// with the phase it decides: warm-up at start − warmupLead, purchases close
// at the end (endTime, or status.closedAt if closed earlier, which also
// pulls a warm-up or start still ahead back to the close), unpaid orders
// roll back until end + paymentTimeout. spec.closed without closedAt is a
// close the operator has not acted on yet: until it does, it still counts
// from endTime.
func countdown(fs *v1alpha1.FlashSale, now time.Time) string {
	w := controllers.SaleWindow(fs)
	switch {
	case fs.Status.Phase == v1alpha1.PhaseEnded:
		return "ended"
	case fs.Status.Phase == v1alpha1.PhaseFailed:
		return "failed: see the conditions"
	case fs.Spec.Closed && fs.Status.ClosedAt == nil && now.Before(w.End):
		return "closing (waiting for the operator)"
	case now.Before(w.WarmFrom):
		return fmt.Sprintf("warm-up in %s, starts in %s", until(now, w.WarmFrom), until(now, w.Start))
	case now.Before(w.Start):
		return "starts in " + until(now, w.Start)
	case now.Before(w.End):
		return "ends in " + until(now, w.End)
	case now.Before(w.SettleFrom):
		return "settles in " + until(now, w.SettleFrom) + " (payment window)"
	default:
		return "settling (waiting for the queue to drain)"
	}
}

// until is t − now to the second, as 3m12s.
func until(now, t time.Time) string {
	return t.Sub(now).Truncate(time.Second).String()
}

// age is how long ago t was, as kubectl prints ages.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// renderStatus writes one screen of the sale: header, SKU table, queue,
// conditions and the latest Events (newest last).
func renderStatus(w io.Writer, fs *v1alpha1.FlashSale, events []eventsv1.Event, now time.Time) error {
	var b strings.Builder
	st := &fs.Status
	phase := string(st.Phase)
	if phase == "" {
		phase = "(not reconciled yet)"
	}
	fmt.Fprintf(&b, "FlashSale %s/%s   phase %s   %s\n", fs.Namespace, fs.Name, phase, countdown(fs, now))
	fmt.Fprintf(&b, "start %s   end %s   paused %t   closed %t\n\n",
		fs.Spec.StartTime.UTC().Format(time.RFC3339), fs.Spec.EndTime.UTC().Format(time.RFC3339), fs.Spec.Paused, fs.Spec.Closed)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SKU\tSTOCK\tREMAINING\tSOLD\tPAID\tCANCELLED\tSOLD OUT\tDEBT")
	for _, s := range skuRows(fs) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\n", s.ID, s.Stock, s.Remaining, s.Sold, s.Paid, s.Cancelled, yesNo(s.SoldOut), s.Debt)
	}
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t%d\t\t\n", st.Stock, st.Remaining, st.Sold, st.Paid, st.Cancelled)
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nqueue lag %d (orders admitted, not yet in MySQL)", st.QueueLag)
	if q := st.Queue; q != nil {
		fmt.Fprintf(&b, "   waiting room: joined %d, waiting %d, admitted %d, outstanding %d", q.Joined, q.Waiting, q.Admitted, q.Outstanding)
	}
	b.WriteString("\n\nCONDITIONS\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tSTATUS\tREASON\tAGE\tMESSAGE")
	for _, c := range st.Conditions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, age(now, c.LastTransitionTime.Time), oneLine(c.Message, 100))
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nEVENTS (last %d)\n", maxEvents)
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGE\tTYPE\tREASON\tMESSAGE")
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", age(now, eventTime(&e)), e.Type, e.Reason, oneLine(e.Note, 100))
	}
	_ = tw.Flush()
	_, err := io.WriteString(w, b.String())
	return err
}

// skuRows are status.skus in spec order, with the spec's SKUs the operator
// has not counted yet shown at their declared stock.
func skuRows(fs *v1alpha1.FlashSale) []v1alpha1.SKUStatus {
	byID := map[string]v1alpha1.SKUStatus{}
	for _, s := range fs.Status.SKUs {
		byID[s.ID] = s
	}
	rows := make([]v1alpha1.SKUStatus, 0, len(fs.Spec.SKUs))
	for _, sku := range fs.Spec.SKUs {
		s, ok := byID[sku.ID]
		if !ok {
			s = v1alpha1.SKUStatus{ID: sku.ID, Stock: sku.Stock, Remaining: sku.Stock}
		}
		rows = append(rows, s)
	}
	return rows
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine keeps a message on one line of the screen, cut at n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
