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
// Same Redis means the same server, however its address is spelled:
// redis:6379, redis.shop.svc.cluster.local:6379 and a ClusterIP are one
// server, and two cluster-mode sales may list different seed nodes of one
// cluster. A shared address (host:port, normalized) settles it at once;
// otherwise the servers are asked who they are (the run_id of a standalone
// Redis, the node ids of a cluster: redisident), and only when they cannot
// be asked are the addresses compared by the IPs they resolve to. A
// standalone address names no database index (the operator always uses
// DB 0), so there is no "same server, other database" to tell apart.
//
// A warmed or live other sale whose Redis cannot be told (its Secret was
// deleted a moment by a GitOps re-sync or a rotation, and this process
// holds no connection of it) holds this one back: it may well sell the
// same stock, and a sale that warms is never checked again.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// overlap is one other sale this sale may not run beside.
type overlap struct {
	other      *v1alpha1.FlashSale
	skus       []string
	from, till time.Time
	// redis says which Redis the two share, e.g. "redis:6379".
	redis string
	// unknown, when set, says why the other's Redis cannot be told (its
	// Secret is missing): redis is empty then.
	unknown string
}

// message names the other sale first ("sale ns/name ..."): the watch finds
// the sales to look at again by that prefix (conflictPrefix).
func (o overlap) message() string {
	window := fmt.Sprintf("in an overlapping window from %s to %s", o.from.UTC().Format(time.RFC3339), o.till.UTC().Format(time.RFC3339))
	if o.unknown != "" {
		return fmt.Sprintf("%ssells SKU %s %s and is warmed or live, but its Redis is unknown (%s); this sale waits, as it may be the same Redis",
			conflictPrefix(o.other.SaleKey()), strings.Join(o.skus, ", "), window, o.unknown)
	}
	return fmt.Sprintf("%ssells SKU %s against the same Redis (%s) %s; this sale is not warmed until the overlap is gone",
		conflictPrefix(o.other.SaleKey()), strings.Join(o.skus, ", "), o.redis, window)
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
	var mine *redisOf
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
			if mine, err = r.ownRedis(ctx, s); err != nil {
				return nil, err
			}
		}
		theirs, err := r.otherRedis(ctx, o)
		var cfgErr *ConfigError
		switch {
		case errors.As(err, &cfgErr) && warmedOrLive(o):
			// It may sell the same stock this very moment, and this sale,
			// once warmed, is never checked again: better late than twice.
			ov.unknown = cfgErr.Msg
			return ov, nil
		case errors.As(err, &cfgErr):
			// Not warmed: it sells nothing until its Secret is back, and
			// then it is checked against this one.
			continue
		case err != nil:
			return nil, err
		}
		if ov.redis = r.sameRedis(ctx, mine, theirs); ov.redis != "" {
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

// normalizeAddrs is raw normalized, sorted, without duplicates.
func normalizeAddrs(raw []string) []string {
	addrs := make([]string, 0, len(raw))
	for _, a := range raw {
		addrs = append(addrs, normalizeAddr(a))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs)
}

// addrCache holds the Redis addresses read from Secrets for the overlap
// check, each for ResolveEvery (as long as the sales' connections keep
// theirs), so a check every refresh does not read Secrets every refresh.
// ids holds the identities the servers told (readIdentity), as long.
type addrCache struct {
	mu  sync.Mutex
	m   map[addrKey]cachedAddrs
	ids map[string]cachedAddrs
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

func (c *addrCache) identity(key string, now time.Time, ttl time.Duration) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.ids[key]
	if !ok || now.Sub(v.at) >= ttl || now.Before(v.at) {
		return nil, false
	}
	return v.addrs, true
}

func (c *addrCache) putIdentity(key string, ids []string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil {
		c.ids = map[string]cachedAddrs{}
	}
	c.ids[key] = cachedAddrs{addrs: ids, at: now}
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
	addrs := normalizeAddrs(raw)
	r.redisAddrCache.put(k, addrs, now)
	return addrs, nil
}

// redisOf is one sale's Redis as the overlap check compares it.
type redisOf struct {
	// addrs are normalized and sorted.
	addrs []string
	// rdb is this process's open connection to addrs, or nil when it holds
	// none.
	rdb redis.UniversalClient
}

func (x *redisOf) String() string { return strings.Join(x.addrs, ",") }

// ownRedis is this sale's Redis: the connection it would warm through.
func (r *FlashSaleReconciler) ownRedis(ctx context.Context, s *scope) (*redisOf, error) {
	if s.c != nil {
		if addrs := clientAddrs(s.c.rdb); len(addrs) > 0 {
			return &redisOf{addrs: addrs, rdb: s.c.rdb}, nil
		}
	}
	addrs, err := r.redisAddrs(ctx, s.fs)
	if err != nil {
		return nil, err
	}
	return &redisOf{addrs: addrs}, nil
}

// otherRedis is another sale's Redis. For a warmed or live sale it is
// what its connection in this process dials when there is one: that is
// where it sells, whatever its Secret says this moment. Otherwise it is
// what its Secret names (a ConfigError when missing), with that connection
// when it dials the same.
func (r *FlashSaleReconciler) otherRedis(ctx context.Context, o *v1alpha1.FlashSale) (*redisOf, error) {
	var held *redisOf
	if b := r.pool.get(o.SaleKey()); b != nil {
		if addrs := clientAddrs(b.c.rdb); len(addrs) > 0 {
			held = &redisOf{addrs: addrs, rdb: b.c.rdb}
		}
	}
	if held != nil && warmedOrLive(o) {
		return held, nil
	}
	addrs, err := r.redisAddrs(ctx, o)
	if err != nil {
		return nil, err
	}
	out := &redisOf{addrs: addrs}
	if held != nil && slices.Equal(held.addrs, addrs) {
		out.rdb = held.rdb
	}
	return out, nil
}

// clientAddrs is the normalized addresses rdb dials (nil for a client of
// another kind).
func clientAddrs(rdb redis.UniversalClient) []string {
	switch c := rdb.(type) {
	case *redis.Client:
		return normalizeAddrs([]string{c.Options().Addr})
	case *redis.ClusterClient:
		return normalizeAddrs(c.Options().Addrs)
	}
	return nil
}

func clientPassword(rdb redis.UniversalClient) string {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().Password
	case *redis.ClusterClient:
		return c.Options().Password
	}
	return ""
}

// sameRedis says which Redis a and b share, "" when none: a shared
// address; else the same server as the servers tell (readIdentity); else,
// only when either cannot be asked, a shared IP:port once the host names
// are resolved.
func (r *FlashSaleReconciler) sameRedis(ctx context.Context, a, b *redisOf) string {
	if sh := shared(a.addrs, b.addrs); len(sh) > 0 {
		return strings.Join(sh, ",")
	}
	named := fmt.Sprintf("%s, which the other sale names %s", a, b)
	// b is dialled with a's password if need be: the same server takes it.
	pw := clientPassword(a.rdb)
	idA, errA := r.identityOf(ctx, a, pw)
	idB, errB := r.identityOf(ctx, b, pw)
	if errA == nil && errB == nil {
		for _, id := range idA {
			if slices.Contains(idB, id) {
				kind, _, _ := strings.Cut(id, ":")
				return named + ": the same server by its " + map[string]string{"run": "run_id", "node": "cluster node ids"}[kind]
			}
		}
		return ""
	}
	log.FromContext(ctx).V(1).Info("overlap check: a Redis cannot tell who it is; comparing resolved addresses",
		"mine", a.String(), "theirs", b.String(), "mineErr", errA, "theirsErr", errB)
	if sh := shared(r.resolvedAddrs(ctx, a.addrs), r.resolvedAddrs(ctx, b.addrs)); len(sh) > 0 {
		return named + ": the same address " + strings.Join(sh, ",")
	}
	return ""
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

// identityOf is readIdentity of x, through x's connection or, when this
// process holds none, a client of its own; cached for ResolveEvery. A
// failure is not cached: the next check asks again.
func (r *FlashSaleReconciler) identityOf(ctx context.Context, x *redisOf, password string) ([]string, error) {
	key := x.String()
	now := r.Clock.Now()
	if ids, ok := r.redisAddrCache.identity(key, now, r.ResolveEvery); ok {
		return ids, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*r.DialTimeout)
	defer cancel()
	var ids []string
	var err error
	if x.rdb != nil {
		ids, err = readIdentity(ctx, x.rdb)
	} else {
		ids, err = r.dialIdentity(ctx, x.addrs, password)
	}
	if err != nil {
		return nil, err
	}
	r.redisAddrCache.putIdentity(key, ids, now)
	return ids, nil
}

// dialIdentity asks the first of addrs that answers, through a client
// closed at once. A cluster node lists every node of its cluster, so any
// seed node answers for the whole cluster.
func (r *FlashSaleReconciler) dialIdentity(ctx context.Context, addrs []string, password string) ([]string, error) {
	var errs []error
	for _, a := range addrs {
		// One try each: a sale waiting on this check must not wait on
		// retries against an address that does not answer.
		c := redis.NewClient(&redis.Options{Addr: a, Password: password, PoolSize: 1, MaxRetries: -1, DialerRetries: 1,
			DialTimeout: r.DialTimeout, ReadTimeout: r.DialTimeout, WriteTimeout: r.DialTimeout})
		ids, err := readIdentity(ctx, c)
		_ = c.Close()
		if err == nil {
			return ids, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	return nil, errors.Join(errs...)
}

// readIdentity is who the Redis behind rdb is: "run:<run_id>" of the server
// a plain client talks to and, when it is a cluster node, "node:<id>" of
// every node CLUSTER NODES lists; through a cluster client, those node ids.
// Every node of one cluster lists the same ids, so two seed lists of one
// cluster share them, and a run_id is one server's until it restarts.
func readIdentity(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	var ids []string
	if _, isCluster := rdb.(*redis.ClusterClient); !isCluster {
		info, err := rdb.Info(ctx, "server").Result()
		if err != nil {
			return nil, fmt.Errorf("INFO server: %w", err)
		}
		run := infoValue(info, "run_id")
		if run == "" {
			return nil, errors.New("INFO server names no run_id")
		}
		ids = append(ids, "run:"+run)
	}
	// A standalone server refuses CLUSTER NODES: its run_id is all there is.
	nodes, err := rdb.ClusterNodes(ctx).Result()
	if err != nil && len(ids) == 0 {
		return nil, fmt.Errorf("CLUSTER NODES: %w", err)
	}
	for _, line := range strings.Split(nodes, "\n") {
		if id, _, _ := strings.Cut(strings.TrimSpace(line), " "); id != "" {
			ids = append(ids, "node:"+id)
		}
	}
	return ids, nil
}

// infoValue is the value of key in an INFO reply ("key:value" lines).
func infoValue(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}

// resolvedAddrs is addrs with their host names looked up (IP:port, sorted);
// an address whose host does not resolve stays as it is.
func (r *FlashSaleReconciler) resolvedAddrs(ctx context.Context, addrs []string) []string {
	ctx, cancel := context.WithTimeout(ctx, r.DialTimeout)
	defer cancel()
	var out []string
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			out = append(out, a)
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			out = append(out, a)
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	return normalizeAddrs(out)
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
