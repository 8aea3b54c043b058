package controllers

// Two sales that sell the same SKU id against the same Redis in overlapping
// windows would sell the same physical stock twice (the keys of each carry
// its own name, so nothing in Redis would stop them). The later one is
// refused: its Conflict condition names the other, and nothing of it is
// warmed until the overlap is gone.
//
// Which one is "the later": a sale already warmed or live is never stopped
// by this check (buyers may hold its orders); between two sales not warmed
// yet, the one created later (creationTimestamp, then namespace/name) waits.
// The answer does not depend on which of the two is reconciled first, so
// the two never both warm.
//
// Only sales of the same namespace are compared. A SKU id is an id of a
// shop's catalogue, and a namespace is a shop or a team: "1001" of another
// namespace on a shared Redis is another tenant's stock, and refusing its
// sale would hold a legitimate sale back unseen by the team that owns it.
// (It also keeps the check to the sales of one namespace.)
//
// Same Redis means a shared address (host:port) among the ones the sales'
// Secrets name: for a Redis Cluster any shared seed node. A standalone
// address names no database index (the operator always uses DB 0), so there
// is no "same server, other database" to tell apart.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// overlap is one other sale this sale may not run beside.
type overlap struct {
	other      *v1alpha1.FlashSale
	skus       []string
	from, till time.Time
	redis      []string
}

// message names the other sale first ("sale ns/name ..."): the watch finds
// the sales to look at again by that prefix (conflictPrefix).
func (o overlap) message() string {
	return fmt.Sprintf("%ssells SKU %s against the same Redis (%s) in an overlapping window from %s to %s; this sale is not warmed until the overlap is gone",
		conflictPrefix(o.other.SaleKey()), strings.Join(o.skus, ", "), strings.Join(o.redis, ","),
		o.from.UTC().Format(time.RFC3339), o.till.UTC().Format(time.RFC3339))
}

func conflictPrefix(saleKey string) string { return "sale " + saleKey + " " }

// reconcileConflict reports whether another sale sells the same stock and
// holds this one back: then nothing of this sale is warmed. The check runs
// until the sale warms; a warmed or live sale keeps the condition it had.
func (r *FlashSaleReconciler) reconcileConflict(ctx context.Context, s *scope) bool {
	if warmedOrLive(s.fs) || !s.now.Before(s.window.end) {
		return false
	}
	o, err := r.findOverlap(ctx, s)
	if err != nil {
		s.stopAt(err)
		return true // unknown: better late than selling the stock twice
	}
	if o == nil {
		r.setCondition(s, v1alpha1.ConditionConflict, metav1.ConditionFalse, v1alpha1.ReasonNoOverlap,
			"no other sale sells these SKUs against the same Redis in an overlapping window")
		return false
	}
	msg := o.message()
	prev := apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionConflict)
	if prev != nil && prev.Status == metav1.ConditionTrue && prev.Message != msg {
		// Still refused, for another sale or window: setCondition tells
		// only a change of status or reason.
		r.event(s.fs, corev1.EventTypeWarning, v1alpha1.ReasonOverlappingSale, v1alpha1.ConditionConflict, "%s", msg)
	}
	r.setCondition(s, v1alpha1.ConditionConflict, metav1.ConditionTrue, v1alpha1.ReasonOverlappingSale, msg)
	s.conflict = msg
	return true
}

// findOverlap returns the first other sale (by namespace/name) that holds
// this one back, or nil. Sales are read from the cache; the Secrets only of
// the few that share a SKU and overlap in time, the cheap filter first.
func (r *FlashSaleReconciler) findOverlap(ctx context.Context, s *scope) (*overlap, error) {
	var list v1alpha1.FlashSaleList
	if err := r.List(ctx, &list, client.InNamespace(s.fs.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list sales for the overlap check: %w", err)
	}
	others := make([]*v1alpha1.FlashSale, 0, len(list.Items))
	for i := range list.Items {
		others = append(others, &list.Items[i])
	}
	slices.SortFunc(others, func(a, b *v1alpha1.FlashSale) int { return strings.Compare(a.SaleKey(), b.SaleKey()) })
	var mine []string
	for _, o := range others {
		if o.UID == s.fs.UID || !competes(o, s.now) || !(warmedOrLive(o) || earlier(o, s.fs)) {
			continue
		}
		ov := timeOverlap(s.window, windowOf(o), s.sale, o)
		if ov == nil {
			continue
		}
		if mine == nil {
			var err error
			if mine, err = r.redisAddrs(ctx, s.fs); err != nil {
				return nil, err
			}
		}
		theirs, err := r.redisAddrs(ctx, o)
		var cfgErr *ConfigError
		if errors.As(err, &cfgErr) {
			continue // no Redis of its own: it sells nothing
		}
		if err != nil {
			return nil, err
		}
		if ov.redis = shared(mine, theirs); len(ov.redis) > 0 {
			return ov, nil
		}
	}
	return nil, nil
}

// timeOverlap is the overlap of the two sales' windows (warm-up to
// effective end) when they also share a SKU id, or nil.
func timeOverlap(w, ow window, sale, other *v1alpha1.FlashSale) *overlap {
	from, till := maxTime(w.warmFrom, ow.warmFrom), minTime(w.end, ow.end)
	if !from.Before(till) {
		return nil
	}
	var skus []string
	for _, a := range sale.Spec.SKUs {
		if slices.ContainsFunc(other.Spec.SKUs, func(b v1alpha1.SKU) bool { return b.ID == a.ID }) {
			skus = append(skus, a.ID)
		}
	}
	if len(skus) == 0 {
		return nil
	}
	return &overlap{other: other, skus: skus, from: from, till: till}
}

// competes: the other sale still sells, or will. An Ended sale, one Failed
// before it ever opened, one being deleted and one past its effective end
// hold no stock a buyer can still take.
func competes(o *v1alpha1.FlashSale, now time.Time) bool {
	switch {
	case !o.DeletionTimestamp.IsZero(),
		o.Status.Phase == v1alpha1.PhaseEnded,
		apimeta.IsStatusConditionTrue(o.Status.Conditions, v1alpha1.ConditionTornDown),
		o.Status.Phase == v1alpha1.PhaseFailed && o.Status.OpenedAt == nil:
		return false
	}
	return now.Before(windowOf(o).end)
}

func warmedOrLive(fs *v1alpha1.FlashSale) bool {
	return fs.Status.OpenedAt != nil || apimeta.IsStatusConditionTrue(fs.Status.Conditions, v1alpha1.ConditionWarmed)
}

// earlier: a was created before b (namespace/name breaks a tie).
func earlier(a, b *v1alpha1.FlashSale) bool {
	at, bt := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !at.Equal(bt) {
		return at.Before(bt)
	}
	return a.SaleKey() < b.SaleKey()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// shared is the addresses in both lists.
func shared(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// normalizeAddr makes two spellings of one Redis compare equal: case, a
// missing port, localhost.
func normalizeAddr(addr string) string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = strings.Trim(addr, "[]"), "6379"
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// addrCache holds the Redis addresses read from Secrets for the overlap
// check, each for ResolveEvery (as long as the sales' connections keep
// theirs), so a check every refresh does not read Secrets every refresh.
type addrCache struct {
	mu sync.Mutex
	m  map[addrKey]cachedAddrs
}

type addrKey struct{ ns, name, key string }

type cachedAddrs struct {
	addrs []string
	at    time.Time
}

func (c *addrCache) get(k addrKey, now time.Time, ttl time.Duration) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	if !ok || now.Sub(v.at) >= ttl || now.Before(v.at) {
		return nil, false
	}
	return v.addrs, true
}

func (c *addrCache) put(k addrKey, addrs []string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[addrKey]cachedAddrs{}
	}
	c.m[k] = cachedAddrs{addrs: addrs, at: now}
}

// redisAddrs is the normalized, sorted Redis addresses fs's Secret names.
// A missing Secret or key is a ConfigError.
func (r *FlashSaleReconciler) redisAddrs(ctx context.Context, fs *v1alpha1.FlashSale) ([]string, error) {
	ref := SecretRef(fs.Spec.Redis.AddressSecretRef, r.DefaultSecret, KeyRedisAddress)
	k := addrKey{ns: fs.Namespace, name: ref.Name, key: ref.Key}
	now := r.Clock.Now()
	if addrs, ok := r.redisAddrCache.get(k, now, r.ResolveEvery); ok {
		return addrs, nil
	}
	var sec corev1.Secret
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: k.ns, Name: k.name}, &sec); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, &ConfigError{Reason: v1alpha1.ReasonSecretMissing, Msg: fmt.Sprintf("Secret %s/%s not found", k.ns, k.name)}
		}
		return nil, fmt.Errorf("read Secret %s/%s for the overlap check: %w", k.ns, k.name, err)
	}
	raw := splitList(string(sec.Data[k.key]))
	if len(raw) == 0 {
		return nil, &ConfigError{Reason: v1alpha1.ReasonSecretMissing, Msg: fmt.Sprintf("Secret %s/%s has no key %q", k.ns, k.name, k.key)}
	}
	addrs := make([]string, 0, len(raw))
	for _, a := range raw {
		addrs = append(addrs, normalizeAddr(a))
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	r.redisAddrCache.put(k, addrs, now)
	return addrs, nil
}

// conflictsNamingChanged maps a FlashSale event to the sales whose Conflict
// condition names that sale: its deletion, end or new window may free them.
func (r *FlashSaleReconciler) conflictsNamingChanged(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.FlashSaleList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.UnsafeDisableDeepCopy); err != nil {
		return nil // the refused sale looks again within configRetry anyway
	}
	prefix := conflictPrefix(obj.GetNamespace() + "/" + obj.GetName())
	var out []reconcile.Request
	for i := range list.Items {
		fs := &list.Items[i]
		c := apimeta.FindStatusCondition(fs.Status.Conditions, v1alpha1.ConditionConflict)
		if c != nil && c.Status == metav1.ConditionTrue && strings.HasPrefix(c.Message, prefix) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(fs)})
		}
	}
	return out
}

// mayFreeOthers passes the FlashSale events that can end an overlap: a
// deletion, a spec change (window, SKUs, closed) and a phase change (Ended,
// Failed). Status refreshes of a live sale do not pass.
var mayFreeOthers = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return true },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okO := e.ObjectOld.(*v1alpha1.FlashSale)
		n, okN := e.ObjectNew.(*v1alpha1.FlashSale)
		if !okO || !okN {
			return false
		}
		return o.Generation != n.Generation || o.Status.Phase != n.Status.Phase ||
			o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero()
	},
}
