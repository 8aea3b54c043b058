package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/notify"
)

// Notifier delivers the events of the sales' outboxes to their webhooks
// (runtime/notify's Dispatcher). Enqueue must return at once: a reconcile
// never waits on a webhook.
type Notifier interface {
	// Enqueue asks for one event to be delivered to one endpoint; a
	// delivery already known is not sent twice.
	Enqueue(notify.Delivery) error
	// Delivered names the endpoints that answered 2xx to the event.
	Delivered(sale, eventID string) []string
	// Failures lists the endpoints of the sale whose latest attempts failed.
	Failures(sale string) []notify.Failure
	// Drop forgets the sale's deliveries to the webhooks keep refuses (all
	// when keep is nil) and returns the ids of those not delivered.
	Drop(sale string, keep func(webhook string) bool) []string
}

// maxOutbox bounds status.notifications.outbox: a webhook down for the
// whole sale must not grow the FlashSale towards etcd's object size limit.
const maxOutbox = 50

// failingAfter is how many attempts in a row must fail before
// NotificationsDelivered turns False: one refused POST is a blip.
const failingAfter = 2

// reconcileNotifications puts the milestones this reconcile reached into
// the sale's outbox. A milestone is a change between the status the
// reconcile started from and the one it writes, and both the milestone and
// its outbox entry go into the same status patch: either both are stored or
// neither is, and the next reconcile sees the same change again (with the
// same event id). So an event is neither lost nor added twice, across
// operator restarts too.
func (r *FlashSaleReconciler) reconcileNotifications(s *scope, _ Decision) {
	st := &s.fs.Status
	if s.fs.Spec.Notifications == nil || len(s.fs.Spec.Notifications.Webhooks) == 0 {
		st.Notifications = nil
		clearCondition(s, v1alpha1.ConditionNotificationsDelivered)
		return
	}
	for _, ev := range milestones(s.before, s.fs, s.now) {
		r.addToOutbox(s, ev)
	}
}

// milestones are the events the change from before to fs's status shows,
// with ids made of the sale's UID and the milestone only.
func milestones(before *v1alpha1.FlashSaleStatus, fs *v1alpha1.FlashSale, now time.Time) []v1alpha1.OutboxEvent {
	if before == nil {
		before = &v1alpha1.FlashSaleStatus{}
	}
	st, uid := &fs.Status, string(fs.UID)
	var out []v1alpha1.OutboxEvent
	add := func(typ v1alpha1.NotificationEvent, id, subject string, data any) {
		b, _ := json.Marshal(data) // plain structs: cannot fail
		out = append(out, v1alpha1.OutboxEvent{ID: uid + "." + id, Type: typ, Subject: subject,
			Time: metav1.NewTime(now.Truncate(time.Second)), Data: string(b)})
	}
	if before.OpenedAt == nil && st.OpenedAt != nil {
		add(v1alpha1.EventLive, "live", "", saleData(fs, false))
	}
	for _, sku := range st.SKUs {
		// Stock and cancellations name the sell-out: a raise or a returned
		// unit that puts the SKU back on sale makes its next sell-out a new event.
		if sku.SoldOut && st.OpenedAt != nil && !soldOut(before, sku.ID) {
			add(v1alpha1.EventSoldOut, fmt.Sprintf("soldout.%s.%d.%d", sku.ID, sku.Stock, sku.Cancelled), sku.ID, skuData(sku))
		}
	}
	// Each pause and resume is a change of spec.paused: the generation tells them apart.
	switch {
	case before.Phase != v1alpha1.PhasePaused && st.Phase == v1alpha1.PhasePaused:
		add(v1alpha1.EventPaused, fmt.Sprintf("paused.%d", fs.Generation), "", saleData(fs, false))
	case before.Phase == v1alpha1.PhasePaused && st.Phase == v1alpha1.PhaseActive:
		add(v1alpha1.EventResumed, fmt.Sprintf("resumed.%d", fs.Generation), "", saleData(fs, false))
	}
	if before.Phase != v1alpha1.PhaseEnded && st.Phase == v1alpha1.PhaseEnded {
		add(v1alpha1.EventEnded, "ended", "", saleData(fs, true))
	}
	if c := notConserved(st); c != nil && notConserved(before) == nil {
		d := saleData(fs, false)
		d.Message = c.Message
		add(v1alpha1.EventNotConserved, fmt.Sprintf("notconserved.%d", auditedAt(st, c)), "", d)
	}
	if c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionOrdersStranded); c != nil && c.Status == metav1.ConditionTrue &&
		!apimeta.IsStatusConditionTrue(before.Conditions, v1alpha1.ConditionOrdersStranded) {
		d := saleData(fs, false)
		d.Message = c.Message
		add(v1alpha1.EventOrdersStranded, fmt.Sprintf("ordersstranded.%d", auditedAt(st, c)), "", d)
	}
	return out
}

// auditedAt names a finding of the audit in an event id: the time of the
// audit that made it, stored with the figures the event carries, never the
// clock of the reconcile that notices it (c's lastTransitionTime is only
// the fallback of a status without an audit).
func auditedAt(st *v1alpha1.FlashSaleStatus, c *metav1.Condition) int64 {
	if st.Audit != nil && !st.Audit.Time.IsZero() {
		return st.Audit.Time.Unix()
	}
	return c.LastTransitionTime.Unix()
}

func soldOut(st *v1alpha1.FlashSaleStatus, sku string) bool {
	for _, s := range st.SKUs {
		if s.ID == sku {
			return s.SoldOut
		}
	}
	return false
}

func notConserved(st *v1alpha1.FlashSaleStatus) *metav1.Condition {
	c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionStockConsistent)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonNotConserved {
		return nil
	}
	return c
}

// eventSKU is a SKU's figures in an event's data.
type eventSKU struct {
	ID        string `json:"id"`
	Stock     int64  `json:"stock"`
	Remaining int64  `json:"remaining"`
	Sold      int64  `json:"sold"`
	Paid      int64  `json:"paid"`
	Cancelled int64  `json:"cancelled"`
}

// eventSale is the data of every event but SoldOut: the sale's figures as
// the status shows them; Ended adds each SKU's and the final audit.
type eventSale struct {
	Phase     v1alpha1.Phase        `json:"phase"`
	StartTime metav1.Time           `json:"startTime"`
	EndTime   metav1.Time           `json:"endTime"`
	Stock     int64                 `json:"stock"`
	Remaining int64                 `json:"remaining"`
	Sold      int64                 `json:"sold"`
	Paid      int64                 `json:"paid"`
	Cancelled int64                 `json:"cancelled"`
	SKUs      []eventSKU            `json:"skus,omitempty"`
	Audit     *v1alpha1.AuditStatus `json:"audit,omitempty"`
	Message   string                `json:"message,omitempty"`
}

func skuData(s v1alpha1.SKUStatus) eventSKU {
	return eventSKU{ID: s.ID, Stock: s.Stock, Remaining: s.Remaining, Sold: s.Sold, Paid: s.Paid, Cancelled: s.Cancelled}
}

func saleData(fs *v1alpha1.FlashSale, final bool) eventSale {
	st := &fs.Status
	d := eventSale{Phase: st.Phase, StartTime: fs.Spec.StartTime, EndTime: fs.Spec.EndTime,
		Stock: st.Stock, Remaining: st.Remaining, Sold: st.Sold, Paid: st.Paid, Cancelled: st.Cancelled, Audit: st.Audit}
	if final {
		for _, sku := range st.SKUs {
			d.SKUs = append(d.SKUs, skuData(sku))
		}
	}
	return d
}

// addToOutbox appends ev for the webhooks that want it, once, and drops
// the oldest events beyond maxOutbox.
func (r *FlashSaleReconciler) addToOutbox(s *scope, ev v1alpha1.OutboxEvent) {
	for _, w := range s.fs.Spec.Notifications.Webhooks {
		if wants(w, ev.Type) {
			ev.Pending = append(ev.Pending, w.Name)
		}
	}
	if len(ev.Pending) == 0 {
		return
	}
	st := &s.fs.Status
	if st.Notifications == nil {
		st.Notifications = &v1alpha1.NotificationsStatus{}
	}
	n := st.Notifications
	if slices.ContainsFunc(n.Outbox, func(o v1alpha1.OutboxEvent) bool { return o.ID == ev.ID }) {
		return
	}
	n.Outbox = append(n.Outbox, ev)
	for len(n.Outbox) > maxOutbox {
		old := n.Outbox[0]
		n.Outbox = n.Outbox[1:]
		n.Dropped++
		r.event(s.fs, corev1.EventTypeWarning, v1alpha1.ReasonDeliveryFailing, "Notify",
			"Outbox full (%d events): dropped event %s (%s) undelivered to %s", maxOutbox, old.ID, old.Type, strings.Join(old.Pending, ", "))
	}
}

func wants(w v1alpha1.Webhook, typ v1alpha1.NotificationEvent) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, typ)
}

// deliverNotifications runs after the summary, before the status patch:
// it takes the events every endpoint confirmed out of the outbox, hands
// the others to the Notifier (with each webhook's secret, read now), and
// sets NotificationsDelivered. While the outbox holds events the sale is
// looked at again within configRetry, also once it has ended, so a fixed
// Secret or a recovered endpoint is noticed.
func (r *FlashSaleReconciler) deliverNotifications(ctx context.Context, s *scope, res ctrl.Result) ctrl.Result {
	spec, n := s.fs.Spec.Notifications, s.fs.Status.Notifications
	if s.stale {
		return res
	}
	sale := s.fs.Namespace + "/" + s.fs.Name
	if spec == nil || len(spec.Webhooks) == 0 {
		// Taken out of the spec (maybe to silence a failing webhook):
		// nothing is sent any more, nothing waits, nothing fails.
		r.Metrics.outbox.DeleteLabelValues(s.fs.Namespace, s.fs.Name)
		if r.Notifier != nil {
			r.Notifier.Drop(sale, nil)
		}
		return res
	}
	if r.Notifier != nil {
		// A webhook that left the spec is not retried (nor counted failing).
		r.Notifier.Drop(sale, func(name string) bool { return webhook(s.fs, name) != nil })
		if n != nil {
			r.confirmDelivered(s, sale)
		}
	}
	pending := 0
	if n != nil {
		pending = len(n.Outbox)
	}
	r.Metrics.notificationsPending(s.fs, pending)
	if r.Notifier == nil {
		return res // nothing is sent: the outbox only fills
	}
	var problems []string
	if pending > 0 {
		problems = r.enqueueOutbox(ctx, s, sale)
		if res.RequeueAfter == 0 || res.RequeueAfter > configRetry {
			res.RequeueAfter = configRetry
		}
	}
	r.setDeliveredCondition(s, sale, problems)
	return res
}

// confirmDelivered removes from each event the endpoints that answered
// 2xx (or left the spec, or no longer want its type), and the events no
// endpoint waits for.
func (r *FlashSaleReconciler) confirmDelivered(s *scope, sale string) {
	n := s.fs.Status.Notifications
	kept := n.Outbox[:0]
	for _, ev := range n.Outbox {
		done := r.Notifier.Delivered(sale, ev.ID)
		ev.Pending = slices.DeleteFunc(ev.Pending, func(name string) bool {
			w := webhook(s.fs, name)
			return w == nil || !wants(*w, ev.Type) || slices.Contains(done, name)
		})
		if len(ev.Pending) == 0 {
			n.Delivered++
			continue
		}
		kept = append(kept, ev)
	}
	n.Outbox = kept
}

func webhook(fs *v1alpha1.FlashSale, name string) *v1alpha1.Webhook {
	for i := range fs.Spec.Notifications.Webhooks {
		if w := &fs.Spec.Notifications.Webhooks[i]; w.Name == name {
			return w
		}
	}
	return nil
}

// enqueueOutbox hands every pending (event, endpoint) to the Notifier and
// returns what kept an endpoint from being sent to (its Secret).
func (r *FlashSaleReconciler) enqueueOutbox(ctx context.Context, s *scope, sale string) []string {
	secrets := map[string][]byte{}
	var problems []string
	for _, ev := range s.fs.Status.Notifications.Outbox {
		for _, name := range ev.Pending {
			w := webhook(s.fs, name)
			secret, read := secrets[name]
			if !read {
				var err error
				if secret, err = r.webhookSecret(ctx, s.fs, w); err != nil {
					problems = append(problems, err.Error())
				}
				secrets[name] = secret
			}
			if secret == nil {
				continue // stays in the outbox until the Secret is there
			}
			err := r.Notifier.Enqueue(notify.Delivery{Sale: sale, Target: notify.Target{Name: name, URL: w.URL, Secret: secret},
				Event: notify.Event{ID: ev.ID, Name: string(ev.Type), Source: notify.Source(s.fs.Namespace, s.fs.Name),
					Subject: ev.Subject, Time: ev.Time.Time, Data: []byte(ev.Data)}})
			if err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Event not enqueued", "event", ev.ID, "webhook", name)
			}
		}
	}
	return problems
}

// webhookSecret reads a webhook's HMAC key through APIReader, as the
// sale's other Secrets are read (surrounding whitespace trimmed).
func (r *FlashSaleReconciler) webhookSecret(ctx context.Context, fs *v1alpha1.FlashSale, w *v1alpha1.Webhook) ([]byte, error) {
	field := fmt.Sprintf("spec.notifications.webhooks[%s].secretRef", w.Name)
	var sec corev1.Secret
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: fs.Namespace, Name: w.SecretRef.Name}, &sec)
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%s: Secret %s/%s not found", field, fs.Namespace, w.SecretRef.Name)
	case err != nil:
		return nil, fmt.Errorf("%s: read Secret %s/%s: %w", field, fs.Namespace, w.SecretRef.Name, err)
	}
	v := strings.TrimSpace(string(sec.Data[w.SecretRef.Key]))
	if v == "" {
		return nil, fmt.Errorf("%s: Secret %s/%s has no key %q (or it is empty)", field, fs.Namespace, w.SecretRef.Name, w.SecretRef.Key)
	}
	return []byte(v), nil
}

// setDeliveredCondition: False while a webhook's Secret is missing or an
// endpoint with events to receive has failed failingAfter attempts in a
// row; True otherwise.
func (r *FlashSaleReconciler) setDeliveredCondition(s *scope, sale string, problems []string) {
	n := s.fs.Status.Notifications
	if n == nil {
		n = &v1alpha1.NotificationsStatus{}
	}
	if len(problems) > 0 {
		r.setCondition(s, v1alpha1.ConditionNotificationsDelivered, metav1.ConditionFalse, v1alpha1.ReasonSecretMissing, strings.Join(problems, "; "))
		return
	}
	var failing []string
	for _, f := range r.Notifier.Failures(sale) {
		waiting := slices.ContainsFunc(n.Outbox, func(ev v1alpha1.OutboxEvent) bool { return slices.Contains(ev.Pending, f.Webhook) })
		if waiting && f.Attempts >= failingAfter {
			failing = append(failing, fmt.Sprintf("webhook %s: %d attempts failed since %s, last error: %s",
				f.Webhook, f.Attempts, f.Since.UTC().Format(time.RFC3339), f.LastError))
		}
	}
	if len(failing) > 0 {
		r.setCondition(s, v1alpha1.ConditionNotificationsDelivered, metav1.ConditionFalse, v1alpha1.ReasonDeliveryFailing,
			fmt.Sprintf("%s (%d events waiting)", strings.Join(failing, "; "), len(n.Outbox)))
		return
	}
	r.setCondition(s, v1alpha1.ConditionNotificationsDelivered, metav1.ConditionTrue, v1alpha1.ReasonDelivered,
		fmt.Sprintf("%d events delivered, %d on their way", n.Delivered, len(n.Outbox)))
}

// NotificationAttempted counts one delivery attempt and has the sale
// reconciled at once, so its outbox and condition follow the delivery
// without waiting for a refresh. It is the Dispatcher's OnAttempt.
func (r *FlashSaleReconciler) NotificationAttempted(a notify.Attempt) {
	ns, name, _ := strings.Cut(a.Sale, "/")
	if r.Metrics != nil {
		r.Metrics.notificationAttempt(ns, name, a.Webhook, a.Err == nil)
	}
	if r.deliveries == nil {
		return // no controller (tests calling Reconcile themselves)
	}
	select {
	case r.deliveries <- event.GenericEvent{Object: &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}:
	default:
		// Full: a reconcile of the sale is due anyway (the controller's
		// queue takes the channel's events as fast as they come), and one
		// with events in its outbox is looked at every configRetry.
	}
}

// deliveryNews is the channel NotificationAttempted nudges the controller
// through; SetupWithManagerAs watches it.
func (r *FlashSaleReconciler) deliveryNews() <-chan event.GenericEvent {
	r.deliveries = make(chan event.GenericEvent, 1024)
	return r.deliveries
}

// dropNotifications is the deleted sale's farewell to its outbox: a
// deleted sale sends no Ended event, and the events still waiting are
// dropped, named in a Warning Event, and no longer sent.
func (r *FlashSaleReconciler) dropNotifications(fs *v1alpha1.FlashSale) {
	sale := fs.Namespace + "/" + fs.Name
	var ids []string
	if n := fs.Status.Notifications; n != nil {
		for _, ev := range n.Outbox {
			if r.Notifier != nil && !slices.ContainsFunc(ev.Pending, func(w string) bool {
				return !slices.Contains(r.Notifier.Delivered(sale, ev.ID), w)
			}) {
				continue // delivered since the status was written
			}
			ids = append(ids, ev.ID)
		}
	}
	if r.Notifier != nil {
		// Deliveries enqueued but not in the status read are dropped too.
		for _, id := range r.Notifier.Drop(sale, nil) {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) > 0 {
		r.event(fs, corev1.EventTypeWarning, v1alpha1.ReasonDeliveryFailing, "Delete",
			"Sale deleted: %d undelivered events dropped: %s", len(ids), strings.Join(ids, ", "))
	}
}
