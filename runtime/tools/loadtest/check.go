package loadtest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// Check names, as reported.
const (
	CheckOversell     = "no oversell"
	CheckPerUser      = "per-user limit"
	CheckRepeats      = "repeat clicks"
	CheckBots         = "bots refused"
	CheckRateLimit    = "hammering bots see 429"
	CheckLostOrder    = "no lost order"
	CheckEnded        = "FlashSale ended"
	CheckStatusMySQL  = "status matches MySQL"
	CheckAuditConserv = "audit conserved"
)

// maxListed bounds the examples a failed check names.
const maxListed = 5

// Verify (re)computes the report's checks from what the run was told, MySQL
// (o.Orders) and the FlashSale (o.Kube), with o's SKUs, stock and limits. It
// can run again on the same report with other options, e.g. a smaller stock.
func Verify(ctx context.Context, rep *Report, o Options) {
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = 30 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 30 * time.Minute
	}
	rep.Checks = rep.Checks[:0]
	l := rep.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	saleKey := o.SaleKey()
	skus := map[string]SKU{}
	for _, s := range o.SKUs {
		skus[s.ID] = s
	}

	// The FlashSale first: once it has Ended, every unpaid order must be cancelled.
	var fs *v1alpha1.FlashSale
	var kubeErr error
	if o.Kube != nil {
		start := time.Now()
		if o.WaitEnded {
			fs, kubeErr = waitEnded(ctx, o.Kube, o.Namespace, o.Name, o.WaitTimeout, 2*time.Second, o.Progress)
		} else {
			fs, kubeErr = GetFlashSale(ctx, o.Kube, o.Namespace, o.Name)
		}
		if fs != nil {
			rep.Kube = viewOf(fs)
			rep.Kube.WaitedSeconds = time.Since(start).Seconds()
			if rep.Queue != nil {
				rep.Queue.setStatus(fs.Status.Queue)
			}
		}
	}
	ended := fs != nil && fs.Status.Phase == v1alpha1.PhaseEnded

	// MySQL: this run's orders (once they have all arrived, or the settle
	// timeout passed) and the whole sale's counts.
	var (
		stored    map[string]order.Status
		saleCount map[string]*orderdb.Counts
		dbErr     error
	)
	if o.Orders != nil {
		stored, dbErr = settle(ctx, o.Orders, saleKey, l, o.SettleTimeout)
		if dbErr == nil {
			saleCount, dbErr = o.Orders.CountBySKU(ctx, saleKey)
		}
	}
	cancelled := func(rec *orderRec) bool {
		if st, ok := stored[rec.no]; ok {
			return st == order.Cancelled
		}
		return rec.cancelled()
	}
	if o.Orders != nil && dbErr == nil {
		fillMySQL(rep, l, stored, saleCount)
	}

	rep.add(checkOversell(rep, l, skus, saleCount, cancelled))
	rep.add(checkPerUser(l, skus, cancelled))
	rep.add(checkRepeats(l))
	rep.add(checkBots(l))
	rep.add(checkHammer(l, &o))
	rep.addQueueChecks(l, &o, saleCount)
	switch {
	case o.Orders == nil:
		rep.add(Check{CheckLostOrder, Skip, "no MySQL DSN (--mysql-dsn or FLASHSALE_MYSQL_DSN): admitted orders not looked up in MySQL"})
	case dbErr != nil:
		rep.add(Check{CheckLostOrder, Fail, "reading MySQL: " + dbErr.Error()})
	default:
		rep.add(checkStored(l, stored, ended, o.SettleTimeout))
	}
	rep.addKube(&o, fs, kubeErr, ended, saleCount, dbErr)
	rep.OK = len(rep.Failed()) == 0
}

func (r *Report) add(c Check) { r.Checks = append(r.Checks, c) }

// settle waits until MySQL holds every order of the run, or timeout, and
// returns the stored status of each of them that is there.
func settle(ctx context.Context, store *orderdb.Store, saleKey string, l *ledger, timeout time.Duration) (map[string]order.Status, error) {
	bySKU := map[string][]string{}
	for no, o := range l.orders {
		bySKU[o.sku] = append(bySKU[o.sku], no)
	}
	found := make(map[string]order.Status, len(l.orders))
	deadline := time.Now().Add(timeout)
	for {
		for sku, nos := range bySKU {
			all, err := store.OrderNos(ctx, saleKey, sku)
			if err != nil {
				return nil, err
			}
			rest := nos[:0]
			for _, no := range nos {
				if st, ok := all[no]; ok {
					found[no] = st
				} else {
					rest = append(rest, no)
				}
			}
			if len(rest) == 0 {
				delete(bySKU, sku)
			} else {
				bySKU[sku] = rest
			}
		}
		if len(bySKU) == 0 || time.Now().After(deadline) {
			return found, nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func fillMySQL(rep *Report, l *ledger, stored map[string]order.Status, saleCount map[string]*orderdb.Counts) {
	idx := map[string]*SKUReport{}
	for i := range rep.SKUs {
		s := &rep.SKUs[i]
		s.MySQL = &MySQLCounts{}
		if c := saleCount[s.ID]; c != nil {
			s.SaleMySQL = &MySQLCounts{Created: c.Created, Paid: c.Paid, Cancelled: c.Cancelled}
		} else {
			s.SaleMySQL = &MySQLCounts{}
		}
		idx[s.ID] = s
	}
	var expired, awaiting, missing int64
	for no, o := range l.orders {
		s := idx[o.sku]
		if s == nil {
			continue
		}
		st, ok := stored[no]
		switch {
		case !ok:
			s.MySQL.Missing++
			missing++
		case st == order.Paid:
			s.MySQL.Paid++
		case st == order.Cancelled:
			s.MySQL.Cancelled++
			expired++
		default:
			s.MySQL.Created++
			awaiting++
		}
	}
	rep.Orders.Expired, rep.Orders.AwaitingPay, rep.Orders.MissingMySQL = &expired, &awaiting, &missing
}

// checkOversell: no SKU admitted more orders than its stock plus the units
// cancellations gave back, paid orders never exceed the stock, and in
// MySQL the whole sale holds (created + paid) at most the stock.
func checkOversell(rep *Report, l *ledger, skus map[string]SKU, saleCount map[string]*orderdb.Counts, cancelled func(*orderRec) bool) Check {
	type tally struct{ admitted, paid, cancelled int64 }
	per := map[string]*tally{}
	for _, o := range l.orders {
		t := per[o.sku]
		if t == nil {
			t = &tally{}
			per[o.sku] = t
		}
		t.admitted++
		if o.paid {
			t.paid++
		}
		if cancelled(o) {
			t.cancelled++
		}
	}
	var bad, good []string
	checked := 0
	for _, s := range rep.SKUs {
		sku, ok := skus[s.ID]
		if !ok || sku.Stock < 0 {
			continue
		}
		checked++
		t := per[s.ID]
		if t == nil {
			t = &tally{}
		}
		returned := t.cancelled
		var held int64 = -1
		if c := saleCount[s.ID]; c != nil {
			returned = c.Cancelled
			held = c.Created + c.Paid
		} else if saleCount != nil {
			held = 0
		}
		switch {
		case t.admitted > sku.Stock+returned:
			bad = append(bad, fmt.Sprintf("SKU %s: %d orders admitted, stock %d (+%d returned by cancellations)", s.ID, t.admitted, sku.Stock, returned))
		case t.paid > sku.Stock:
			bad = append(bad, fmt.Sprintf("SKU %s: %d orders paid, stock %d", s.ID, t.paid, sku.Stock))
		case held > sku.Stock:
			bad = append(bad, fmt.Sprintf("SKU %s: MySQL holds %d created+paid orders of the sale, stock %d", s.ID, held, sku.Stock))
		default:
			g := fmt.Sprintf("%s %d of %d", s.ID, t.admitted, sku.Stock)
			if returned > 0 {
				g += fmt.Sprintf(" (+%d returned)", returned)
			}
			good = append(good, g)
		}
	}
	switch {
	case checked == 0:
		return Check{CheckOversell, Skip, "stock unknown: give --file, --fs or --skus ID:STOCK"}
	case len(bad) > 0:
		return Check{CheckOversell, Fail, strings.Join(bad, "; ")}
	}
	return Check{CheckOversell, Pass, "admitted ≤ stock: " + listed(good)}
}

// checkPerUser: nobody holds more units of a SKU than its per-user limit
// (orders cancelled for non-payment free their unit, and the buyer may buy again).
func checkPerUser(l *ledger, skus map[string]SKU, cancelled func(*orderRec) bool) Check {
	var bad []string
	buyers, most := 0, 0
	for k, nos := range l.byBuyer {
		sku, ok := skus[k.sku]
		if !ok || sku.PerUserLimit <= 0 {
			continue
		}
		buyers++
		held := 0
		for _, no := range nos {
			if !cancelled(l.orders[no]) {
				held++
			}
		}
		most = max(most, held)
		if held > int(sku.PerUserLimit) {
			sort.Strings(nos)
			bad = append(bad, fmt.Sprintf("%s holds %d of SKU %s (limit %d): %s", k.user, held, k.sku, sku.PerUserLimit, strings.Join(nos, " ")))
		}
	}
	switch {
	case buyers == 0 && len(l.byBuyer) > 0:
		return Check{CheckPerUser, Skip, "per-user limits unknown: give --file, --fs or --skus ID:STOCK:LIMIT"}
	case buyers == 0:
		return Check{CheckPerUser, Skip, "no order admitted"}
	case len(bad) > 0:
		sort.Strings(bad)
		return Check{CheckPerUser, Fail, fmt.Sprintf("%d buyers over their limit: %s", len(bad), listed(bad))}
	}
	return Check{CheckPerUser, Pass, fmt.Sprintf("%d buyers with orders, at most %d unit(s) held by one", buyers, most)}
}

// checkRepeats: a purchase retried with the same token brings back the same order.
func checkRepeats(l *ledger) Check {
	if l.repeats == 0 {
		return Check{CheckRepeats, Skip, "no repeat clickers"}
	}
	if len(l.retryNew) > 0 {
		return Check{CheckRepeats, Fail, fmt.Sprintf("%d retries with the same token got a second order: %s", len(l.retryNew), listed(l.retryNew))}
	}
	return Check{CheckRepeats, Pass, fmt.Sprintf("%d clickers; same token: %s; fresh token: %s", l.repeats, mapText(l.retryOutcomes), mapText(l.againOutcomes))}
}

// checkBots: no bot is ever admitted.
func checkBots(l *ledger) Check {
	var sessions int64
	var bad []string
	codes := map[string]int64{}
	for k := botForged; k < numKinds; k++ {
		b := &l.bots[k]
		sessions += b.sessions
		for _, no := range b.admitted {
			bad = append(bad, k.String()+" bot got order "+no)
		}
		if k == botHammer {
			continue
		}
		for oc, n := range b.outcomes {
			codes[oc] += n
		}
	}
	switch {
	case sessions == 0:
		return Check{CheckBots, Skip, "no bots"}
	case len(bad) > 0:
		return Check{CheckBots, Fail, fmt.Sprintf("%d bot purchases admitted: %s", len(bad), listed(bad))}
	}
	return Check{CheckBots, Pass, fmt.Sprintf("%d bot sessions, none admitted; token bots got %s", sessions, mapText(codes))}
}

// checkHammer: a bot far over the per-user rate is answered 429.
func checkHammer(l *ledger, o *Options) Check {
	b := &l.bots[botHammer]
	switch {
	case b.sessions == 0:
		return Check{CheckRateLimit, Skip, "no hammering bots"}
	case o.Sale == nil:
		return Check{CheckRateLimit, Skip, fmt.Sprintf("the sale's rate limits are unknown (no --file, no FlashSale); %d of %d hammering bots saw 429", b.throttled, b.sessions)}
	case o.Sale.Spec.RateLimit.PerUserPerSecond <= 0:
		return Check{CheckRateLimit, Skip, fmt.Sprintf("the sale has no perUserPerSecond; %d of %d hammering bots saw 429", b.throttled, b.sessions)}
	case b.unthrottled > 0:
		return Check{CheckRateLimit, Fail, fmt.Sprintf("%d of %d hammering bots sent %d requests back to back and were served every one, never answered 429 (perUserPerSecond %d)",
			b.unthrottled, b.sessions, o.HammerRequests, o.Sale.Spec.RateLimit.PerUserPerSecond)}
	case b.throttled == 0:
		return Check{CheckRateLimit, Skip, fmt.Sprintf("none of %d hammering bots reached the rate limiter (refused earlier: paused, sold out, ended)", b.sessions)}
	}
	detail := fmt.Sprintf("%d of %d hammering bots answered 429 (%d requests each, perUserPerSecond %d)",
		b.throttled, b.sessions, o.HammerRequests, o.Sale.Spec.RateLimit.PerUserPerSecond)
	if b.inconclusive > 0 {
		detail += fmt.Sprintf("; %d refused before the limiter (paused, sold out, ended)", b.inconclusive)
	}
	return Check{CheckRateLimit, Pass, detail}
}

// checkStored: every order answered 202 is in MySQL, paid if and only if
// this run paid it; once the sale has Ended, the unpaid ones are cancelled.
func checkStored(l *ledger, stored map[string]order.Status, ended bool, settle time.Duration) Check {
	var missing, wrong []string
	var paid, cancelled, created int64
	for no, o := range l.orders {
		st, ok := stored[no]
		switch {
		case !ok:
			missing = append(missing, no)
		case o.paid && st != order.Paid:
			wrong = append(wrong, fmt.Sprintf("%s: paid (pay answered 200) but %s in MySQL", no, st))
		case !o.paid && st == order.Paid:
			wrong = append(wrong, fmt.Sprintf("%s: paid in MySQL but this run never paid it", no))
		case !o.paid && ended && st == order.Created:
			wrong = append(wrong, fmt.Sprintf("%s: still awaiting payment after the sale Ended", no))
		}
		switch st {
		case order.Paid:
			paid++
		case order.Cancelled:
			cancelled++
		case order.Created:
			created++
		}
	}
	if len(missing)+len(wrong) > 0 {
		var parts []string
		if len(missing) > 0 {
			sort.Strings(missing)
			parts = append(parts, fmt.Sprintf("%d of %d admitted orders not in MySQL after %s: %s", len(missing), len(l.orders), settle, listed(missing)))
		}
		if len(wrong) > 0 {
			sort.Strings(wrong)
			parts = append(parts, fmt.Sprintf("%d with the wrong status: %s", len(wrong), listed(wrong)))
		}
		return Check{CheckLostOrder, Fail, strings.Join(parts, "; ")}
	}
	return Check{CheckLostOrder, Pass, fmt.Sprintf("all %d admitted orders in MySQL: %d paid (as paid), %d cancelled, %d awaiting payment",
		len(l.orders), paid, cancelled, created)}
}

// addKube adds the FlashSale's checks: ended (when waited for), its final
// per-SKU paid/cancelled counts against MySQL, and the audit's verdict.
func (r *Report) addKube(o *Options, fs *v1alpha1.FlashSale, kubeErr error, ended bool, saleCount map[string]*orderdb.Counts, dbErr error) {
	if o.Kube == nil {
		note := o.KubeNote
		if note == "" {
			note = "no --fs namespace/name"
		}
		r.add(Check{CheckStatusMySQL, Skip, note})
		r.add(Check{CheckAuditConserv, Skip, note})
		return
	}
	if fs == nil {
		r.add(Check{CheckStatusMySQL, Fail, fmt.Sprint(kubeErr)})
		return
	}
	phase := fs.Status.Phase
	if o.WaitEnded {
		if ended {
			r.add(Check{CheckEnded, Pass, fmt.Sprintf("phase Ended after %.0fs", r.Kube.WaitedSeconds)})
		} else {
			detail := fmt.Sprintf("phase %s after waiting %s", phase, o.WaitTimeout)
			if kubeErr != nil {
				detail += ": " + kubeErr.Error()
			}
			r.add(Check{CheckEnded, Fail, detail})
		}
	}
	switch {
	case !ended:
		r.add(Check{CheckStatusMySQL, Skip, fmt.Sprintf("phase %s, not Ended: the status is not final yet (use --wait-ended)", phase)})
	case o.Orders != nil && dbErr != nil:
		r.add(Check{CheckStatusMySQL, Fail, "reading MySQL: " + dbErr.Error()})
	case o.Orders != nil:
		r.add(checkStatusMySQL(fs, saleCount))
	default:
		r.add(checkStatusPaid(fs, r.ledger))
	}
	r.add(checkAudit(fs))
}

// checkStatusMySQL: the Ended FlashSale's paid and cancelled counts per SKU
// are MySQL's.
func checkStatusMySQL(fs *v1alpha1.FlashSale, saleCount map[string]*orderdb.Counts) Check {
	var bad, good []string
	for _, s := range fs.Status.SKUs {
		c := saleCount[s.ID]
		if c == nil {
			c = &orderdb.Counts{}
		}
		if s.Paid != c.Paid || s.Cancelled != c.Cancelled {
			bad = append(bad, fmt.Sprintf("SKU %s: status paid %d cancelled %d, MySQL paid %d cancelled %d", s.ID, s.Paid, s.Cancelled, c.Paid, c.Cancelled))
		} else {
			good = append(good, fmt.Sprintf("%s %d/%d", s.ID, s.Paid, s.Cancelled))
		}
	}
	if len(bad) > 0 {
		return Check{CheckStatusMySQL, Fail, strings.Join(bad, "; ")}
	}
	return Check{CheckStatusMySQL, Pass, "paid/cancelled per SKU: " + listed(good)}
}

// checkStatusPaid, without MySQL: the Ended FlashSale's status counts at
// least the orders this run paid.
func checkStatusPaid(fs *v1alpha1.FlashSale, l *ledger) Check {
	paid := map[string]int64{}
	for _, rec := range l.orders {
		if rec.paid {
			paid[rec.sku]++
		}
	}
	var bad []string
	for _, s := range fs.Status.SKUs {
		if s.Paid < paid[s.ID] {
			bad = append(bad, fmt.Sprintf("SKU %s: status paid %d, this run paid %d", s.ID, s.Paid, paid[s.ID]))
		}
	}
	if len(bad) > 0 {
		return Check{CheckStatusMySQL, Fail, strings.Join(bad, "; ")}
	}
	return Check{CheckStatusMySQL, Pass, "no MySQL DSN: compared with this run's paid orders only (status paid ≥ paid by this run for every SKU)"}
}

// checkAudit: the audit in the FlashSale's status found the sale conserved.
func checkAudit(fs *v1alpha1.FlashSale) Check {
	phase := fs.Status.Phase
	switch a := fs.Status.Audit; {
	case a == nil:
		return Check{CheckAuditConserv, Skip, fmt.Sprintf("phase %s: no audit in the status yet", phase)}
	case !a.Conserved:
		return Check{CheckAuditConserv, Fail, fmt.Sprintf("audit at %s: initial %d, accounted %d, lost %d: %s",
			a.Time.UTC().Format(time.RFC3339), a.Initial, a.Accounted, a.Lost, a.Message)}
	default:
		return Check{CheckAuditConserv, Pass, fmt.Sprintf("audit at %s (phase %s): initial %d = accounted %d, lost %d",
			a.Time.UTC().Format(time.RFC3339), phase, a.Initial, a.Accounted, a.Lost)}
	}
}

func listed(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, ", ")
	}
	return strings.Join(slices.Clone(items[:maxListed]), ", ") + fmt.Sprintf(" and %d more", len(items)-maxListed)
}
