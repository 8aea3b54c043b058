package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Failures lists why the audit fails (empty when it holds).
func (r *Report) Failures() []string {
	var out []string
	for _, s := range r.SKUs {
		if s.Imbalance != 0 {
			out = append(out, fmt.Sprintf("the conservation law does not hold for SKU %s (%+d units)", s.SKU, s.Imbalance))
		}
		if s.Stranded > 0 {
			out = append(out, fmt.Sprintf("%d valid orders of SKU %s are only in a dead-letter store (stranded; `flashsale audit --repair` stores them once MySQL accepts them)", s.Stranded, s.SKU))
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
	for _, s := range r.SKUs {
		law := "holds"
		switch {
		case s.Imbalance != 0:
			law = "BROKEN"
		case s.Stranded > 0:
			law = "STRANDED"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d (%d/%d/%d)\t%d\t%d\t%d\t%+d\t%s\n", s.SKU, s.Declared, s.Debt, s.Initial, s.Remaining,
			s.InFlight.Total, s.InFlight.Stream, s.InFlight.Kafka, s.InFlight.DeadLetters,
			s.Durable.Created, s.Durable.Paid, s.Durable.Returning, s.Imbalance, law)
	}
	_ = tw.Flush()
	b.WriteString("\n  law: initial = remaining + in flight + created + paid + returning, counting each order the Redis snapshot shows\n" +
		"       holding a unit once, where it is found (MySQL's status now, else stream, Kafka, dead letters); declared = initial − debt\n")
	for _, s := range r.SKUs {
		fmt.Fprintf(b, "  SKU %s redis: units held %d, orders %v, stream %d (pending %d, undelivered %d), dead-letter stream %d, expiry set %d",
			s.SKU, s.Redis.UnitsHeld, s.Redis.Orders, s.Redis.StreamLength, s.Redis.StreamPending, s.Redis.StreamUndelivered, s.Redis.DeadLetters, s.Redis.Expiry)
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
	for _, n := range r.Notes {
		fmt.Fprintf(b, "  note: %s\n", n)
	}

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
		fmt.Fprintf(b, "  %-18s SKU %-8s %-34s %s%s\n", f.Kind, f.SKU, f.OrderNo, f.Detail, fix)
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
