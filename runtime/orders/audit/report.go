package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// Failures lists why the audit fails (empty when it holds).
func (r *Report) Failures() []string {
	var out []string
	for _, sku := range r.SKUs {
		split := len(sku.Buckets) > 0
		for _, s := range sku.parts() {
			if s.Imbalance != 0 {
				out = append(out, fmt.Sprintf("the conservation law does not hold for %s (%+d units)", s.name(split), s.Imbalance))
			}
			if s.Stranded > 0 {
				out = append(out, fmt.Sprintf("%d valid orders of %s are only in a dead-letter store (stranded; `flashsale audit --repair` stores them once MySQL accepts them)", s.Stranded, s.name(split)))
			}
		}
	}
	for _, sku := range r.SKUs {
		if !sku.Split.Balanced() {
			out = append(out, fmt.Sprintf("the conservation law does not hold across the buckets of SKU %s: declared stock %d, counted %d",
				sku.SKU, sku.Split.Declared, sku.Split.Counted))
		}
	}
	if r.Lost > 0 {
		out = append(out, fmt.Sprintf("%d orders LOST", r.Lost))
	}
	n := 0
	for _, f := range r.Findings {
		if f.Kind == KindRedisInconsistent {
			n++
		}
	}
	if n > 0 {
		out = append(out, fmt.Sprintf("Redis is inconsistent with itself (%d findings)", n))
	}
	return out
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// maxListed bounds the findings of one kind the text report lists one by one.
const maxListed = 50

// WriteText writes the report for a human.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	if r.Before != nil {
		b.WriteString("== Before repair ==\n")
		r.Before.writeBody(&b)
		fmt.Fprintf(&b, "\n== Repairs (%d) ==\n", len(r.Repairs))
		if len(r.Repairs) == 0 {
			b.WriteString("  nothing to repair\n")
		}
		for _, rp := range r.Repairs {
			status := "done"
			if rp.Failed {
				status = "FAILED"
			}
			fmt.Fprintf(&b, "  %-6s %-18s SKU %-8s %-34s %s\n", status, rp.Action, rp.SKU, rp.OrderNo, rp.Detail)
		}
		b.WriteString("\n== After repair ==\n")
	}
	r.writeBody(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) writeBody(b *strings.Builder) {
	fmt.Fprintf(b, "Audit of sale %s at %s (mode %s", r.SaleKey, r.At.Format(time.RFC3339), r.Mode)
	if r.Mode == "kafka" {
		fmt.Fprintf(b, ", consumer-group lag %d", r.KafkaLag)
	}
	b.WriteString(")\n\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SKU\tDECLARED\tDEBT\tINITIAL\tREMAINING\tIN FLIGHT (stream/kafka/dlq)\tCREATED\tPAID\tRETURNING\tIMBALANCE\tLAW")
	split := false
	for _, s := range r.SKUs {
		writeLawRow(tw, s.SKU, &s)
		for _, p := range s.Buckets {
			split = true
			writeLawRow(tw, fmt.Sprintf("  bucket %d", p.Bucket), &p)
		}
	}
	_ = tw.Flush()
	b.WriteString("\n  law: initial = remaining + in flight + created + paid + returning, counting each order the Redis snapshot shows\n" +
		"       holding a unit once, where it is found (MySQL's status now, else stream, Kafka, dead letters); declared = initial − debt\n")
	if split {
		b.WriteString("       per bucket of a SKU split into buckets; the SKU's initial and accounted add the units moving between buckets\n")
	}
	for _, sku := range r.SKUs {
		for _, s := range sku.parts() {
			r.writeRedisLine(b, &s, len(sku.Buckets) > 0)
		}
		if sku.Transferring != 0 {
			fmt.Fprintf(b, "  SKU %s: %d units moving between buckets\n", sku.SKU, sku.Transferring)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(b, "  note: %s\n", n)
	}
	r.writeFindings(b)
}

// writeLawRow writes one row of the law's table: a SKU, or one of its buckets.
func writeLawRow(tw io.Writer, name string, s *SKUReport) {
	law := "holds"
	switch {
	case s.Imbalance != 0:
		law = "BROKEN"
	case s.Stranded > 0:
		law = "STRANDED"
	case !s.Split.Balanced():
		law = "BROKEN ACROSS BUCKETS"
	case !s.Conserved:
		law = "BROKEN IN A BUCKET"
	}
	fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d (%d/%d/%d)\t%d\t%d\t%d\t%+d\t%s\n", name, s.Declared, s.Debt, s.Initial, s.Remaining,
		s.InFlight.Total, s.InFlight.Stream, s.InFlight.Kafka, s.InFlight.DeadLetters,
		s.Durable.Created, s.Durable.Paid, s.Durable.Returning, s.Imbalance, law)
}

// writeRedisLine writes the raw figures of a SKU, or of one of its buckets.
func (r *Report) writeRedisLine(b *strings.Builder, s *SKUReport, split bool) {
	fmt.Fprintf(b, "  %s redis: units held %d, orders %v, stream %d (pending %d, undelivered %d), dead-letter stream %d, expiry set %d",
		s.name(split), s.Redis.UnitsHeld, s.Redis.Orders, s.Redis.StreamLength, s.Redis.StreamPending, s.Redis.StreamUndelivered, s.Redis.DeadLetters, s.Redis.Expiry)
	if r.Mode == "kafka" {
		fmt.Fprintf(b, "; kafka: behind the group %d, dead letters %d", s.KafkaPending, s.KafkaDeadLetters)
	}
	fmt.Fprintf(b, "; mysql rows: created %d, paid %d, cancelled %d (%d not marked returned)",
		s.MySQL.Created, s.MySQL.Paid, s.MySQL.Cancelled, s.MySQL.Returning)
	if s.AfterSnapshot > 0 {
		fmt.Fprintf(b, "; %d admitted after the snapshot (not counted)", s.AfterSnapshot)
	}
	b.WriteString("\n")
}

// writeFindings lists the findings, worst first, and the result.
func (r *Report) writeFindings(b *strings.Builder) {
	fmt.Fprintf(b, "\nFindings (%d)\n", len(r.Findings))
	if len(r.Findings) == 0 {
		b.WriteString("  none\n")
	}
	perKind := map[string]int{}
	for _, f := range r.Findings {
		perKind[f.Kind]++
		if perKind[f.Kind] > maxListed {
			continue
		}
		fix := ""
		if f.Repairable {
			fix = " [--repair fixes this]"
		}
		sku := f.SKU
		if f.Bucket > 0 {
			sku += keys.OrderSuffix(f.Bucket)
		}
		fmt.Fprintf(b, "  %-18s SKU %-8s %-34s %s%s\n", f.Kind, sku, f.OrderNo, f.Detail, fix)
	}
	for k, n := range perKind {
		if n > maxListed {
			fmt.Fprintf(b, "  ... and %d more %s (see --json)\n", n-maxListed, k)
		}
	}
	if fails := r.Failures(); len(fails) > 0 {
		fmt.Fprintf(b, "\nResult: FAILED: %s\n", strings.Join(fails, "; "))
	} else {
		fmt.Fprintf(b, "\nResult: OK: the conservation law holds for every SKU and no order is lost\n")
	}
}
