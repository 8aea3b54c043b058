package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// MaxCompact bounds Compact's length: a condition message is read in
// `kubectl describe`, not a report.
const MaxCompact = 4000

// Text renders the plan as aligned plain-text tables, warnings last, as
// `flashsale plan` prints it.
func (p *Plan) Text() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Plan of %s (Redis: %s", p.Sale, Plural(p.Topology.Primaries, "primary", "primaries"))
	if p.Topology.Source != "" {
		fmt.Fprintf(&b, ", from %s", p.Topology.Source)
	}
	b.WriteString(")\n")
	p.objectsText(&b)
	p.memoryText(&b)
	p.shardsText(&b)
	p.pipelineText(&b)
	fmt.Fprintf(&b, "\nWarm-up\n  lead %s, pods start in about %s (the lead should be at least %s)\n",
		shortDuration(p.Warmup.Lead), shortDuration(p.Warmup.PodStartup), shortDuration(2*p.Warmup.PodStartup))
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "\nNote: %s\n", n)
	}
	if p.Fits() {
		b.WriteString("\nFits: every figure is within its budget.\n")
		return b.String()
	}
	b.WriteString("\nWarnings\n")
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "  - %s\n", w)
	}
	return b.String()
}

// table writes rows as a tabwriter table indented by two spaces.
func table(b *bytes.Buffer, rows [][]string) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\n", strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

func (p *Plan) objectsText(b *bytes.Buffer) {
	if len(p.Objects) == 0 {
		return
	}
	b.WriteString("\nObjects the operator creates\n")
	rows := [][]string{{"KIND", "NAME", "REPLICAS", "IMAGE"}}
	for _, o := range p.Objects {
		r := "-"
		switch {
		case o.Replicas != nil && o.MaxReplicas != nil:
			r = fmt.Sprintf("%d-%d", *o.Replicas, *o.MaxReplicas)
		case o.Replicas != nil:
			r = strconv.Itoa(int(*o.Replicas))
		}
		rows = append(rows, []string{o.Kind, o.Name, r, orDash(o.Image)})
	}
	table(b, rows)
}

func (p *Plan) memoryText(b *bytes.Buffer) {
	m := p.Memory
	fmt.Fprintf(b, "\nRedis keys and memory at %s orders\n", group(m.Orders))
	rows := [][]string{{"SKU", "BUCKET", "KEYS", "ORDERS", "MEMORY"}}
	for _, k := range m.Buckets {
		rows = append(rows, []string{k.SKU, strconv.Itoa(k.Bucket), k.Prefix + "{" + suffixes(k) + "}",
			group(k.Orders), humanBytes(k.Bytes)})
	}
	table(b, rows)
	fmt.Fprintf(b, "  sale-wide: %s\n", strings.Join(m.SaleKeys, ", "))
	if m.Queued > 0 {
		fmt.Fprintf(b, "  waiting room: %s buyers queued, up to %s admissions outstanding\n", group(m.Queued), group(m.Admissions))
	}
	fmt.Fprintf(b, "  total: %s\n", humanBytes(m.Bytes))
}

// suffixes are a bucket's key names without their common prefix.
func suffixes(k Bucket) string {
	out := make([]string, len(k.Keys))
	for i, name := range k.Keys {
		out[i] = strings.TrimPrefix(name, k.Prefix)
	}
	return strings.Join(out, ",")
}

func (p *Plan) shardsText(b *bytes.Buffer) {
	sh := p.Shards
	fmt.Fprintf(b, "\nPurchases per second (peak %s, budget %s per shard)\n", group(sh.Peak), group(p.Figures.ShardBudget))
	if sh.CappedBy != "" {
		fmt.Fprintf(b, "  %s expected, capped by %s: %s reach Redis\n", group(sh.Demand), sh.CappedBy, group(sh.Peak))
	}
	rows := [][]string{{"SKU", "PEAK/S", "BUCKETS", "PER SHARD/S", "SUGGESTED BUCKETS"}}
	for _, s := range sh.SKUs {
		rows = append(rows, []string{s.ID, group(s.Peak), strconv.Itoa(s.Buckets), group(s.PerShard), strconv.Itoa(s.Suggested)})
	}
	if q := sh.Queue; q != nil {
		rows = append(rows, []string{"queue " + q.Slot, group(q.Joins) + " joins", "1 slot", group(q.Joins), "-"})
	}
	table(b, rows)
	rows = [][]string{{"SHARD", "LOAD/S", "BUDGET/S", "BUCKETS"}}
	for _, l := range sh.Load {
		load, on := group(l.Load), l.Buckets
		if l.Joins > 0 {
			load = fmt.Sprintf("%s + %s joins", group(l.Load), group(l.Joins))
			on = append(append([]string(nil), on...), "queue")
		}
		rows = append(rows, []string{strconv.Itoa(l.Shard), load, group(p.Figures.ShardBudget), orDash(joinList(on))})
	}
	b.WriteString("\n")
	table(b, rows)
}

func (p *Plan) pipelineText(b *bytes.Buffer) {
	pl := p.Pipeline
	b.WriteString("\nOrder pipeline\n")
	if pl.Kafka {
		fmt.Fprintf(b, "  workers %d, Kafka partitions %d\n", pl.Workers, pl.Partitions)
	} else {
		fmt.Fprintf(b, "  workers %d, no Kafka: orders go from the Redis Streams straight to MySQL\n", pl.Workers)
	}
	fmt.Fprintf(b, "  MySQL: %s orders/s at the peak; all %s orders stored in %s at %s orders/s; %s\n",
		group(pl.OrdersPerSecond), group(pl.Orders), roughDuration(pl.StoreAll), group(pl.Rate), waitText(pl.LastWait))
}

// Compact is the plan in a few lines for the Planned condition: the
// warnings first, then the figures, under MaxCompact bytes.
func (p *Plan) Compact() string {
	var parts []string
	parts = append(parts, p.Warnings...)
	parts = append(parts, p.Notes...)
	busiest := int64(0)
	if len(p.Shards.Load) > 0 {
		busiest = p.Shards.Load[0].Load
	}
	var workloads []string
	for _, o := range p.Objects {
		if o.Kind == "Deployment" && o.Replicas != nil {
			workloads = append(workloads, fmt.Sprintf("%s %d", o.Name, *o.Replicas))
		}
	}
	if len(workloads) > 0 {
		parts = append(parts, "pods: "+strings.Join(workloads, ", "))
	}
	parts = append(parts,
		fmt.Sprintf("Redis: %s at %s orders", humanBytes(p.Memory.Bytes), group(p.Memory.Orders)),
		fmt.Sprintf("busiest of %s: %s purchases/s, budget %s", Plural(p.Topology.Primaries, "primary", "primaries"),
			group(busiest), group(p.Figures.ShardBudget)),
		fmt.Sprintf("MySQL: %s orders/s at the peak, all stored in %s at %s orders/s, %s",
			group(p.Pipeline.OrdersPerSecond), roughDuration(p.Pipeline.StoreAll), group(p.Pipeline.Rate), waitText(p.Pipeline.LastWait)),
		fmt.Sprintf("warm-up lead %s, pod start-up %s", shortDuration(p.Warmup.Lead), shortDuration(p.Warmup.PodStartup)))
	s := strings.Join(parts, "; ")
	if len(s) > MaxCompact {
		s = s[:MaxCompact-len(" …")] + " …"
	}
	return s
}

// JSON is the plan as `flashsale plan -o json` prints it.
func (p *Plan) JSON() ([]byte, error) {
	return json.MarshalIndent(p, "", "  ")
}

// group writes n with thousands separators: 80000 → "80,000".
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// Plural is n with its noun: "1 primary", "3 primaries".
func Plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func bucketsOf(bs []string) string { return Plural(len(bs), "bucket", "buckets") }

func joinList(s []string) string { return strings.Join(s, ", ") }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes is n in B, KiB, MiB or GiB, one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n), -1
	for v >= unit && i < 2 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMG"[i])
}

// shortDuration drops time.Duration's zero units: 5m0s → 5m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// roughDuration is shortDuration with under a second as "<1s": storing a
// few orders rounds to 0s, which would read as "instant".
func roughDuration(d time.Duration) string {
	if d < time.Second {
		return "<1s"
	}
	return shortDuration(d)
}

// waitText is the last order's wait for MySQL, "no backlog" when none.
func waitText(d time.Duration) string {
	if d <= 0 {
		return "no backlog"
	}
	return "the last waits " + roughDuration(d)
}

// The durations read as Go durations in JSON ("1m", "2.5s"), not as
// nanoseconds: the shallower field of the same name wins.

// MarshalJSON writes PodStartup as a duration string.
func (f Figures) MarshalJSON() ([]byte, error) {
	type plain Figures
	return json.Marshal(struct {
		plain
		PodStartup string `json:"podStartup"`
	}{plain(f), shortDuration(f.PodStartup)})
}

// MarshalJSON writes StoreAll and LastWait as duration strings.
func (p Pipeline) MarshalJSON() ([]byte, error) {
	type plain Pipeline
	return json.Marshal(struct {
		plain
		StoreAll string `json:"storeAll"`
		LastWait string `json:"lastWait"`
	}{plain(p), shortDuration(p.StoreAll), shortDuration(p.LastWait)})
}

// MarshalJSON writes Lead and PodStartup as duration strings.
func (w Warmup) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Lead       string `json:"lead"`
		PodStartup string `json:"podStartup"`
	}{shortDuration(w.Lead), shortDuration(w.PodStartup)})
}
