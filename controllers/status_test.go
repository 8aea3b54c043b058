package controllers

import (
	"errors"
	"reflect"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// These tests run the status setters on a scope built by hand: no API
// server, no dependency, a fake Event recorder. The sale is timedSale's:
// warm-up from 11:55, start 12:00, end 12:30, settling from 12:45.

// statusScope is a reconcile of a sale with the given status at now.
func statusScope(now string, st v1alpha1.FlashSaleStatus) *scope {
	fs := timedSale(false)
	fs.Namespace, fs.Name, fs.Generation = "shop", "singles-day", 3
	fs.Spec.SKUs = []v1alpha1.SKU{{ID: "1001", Stock: 100}, {ID: "1002", Stock: 20}}
	fs.Status = st
	return newScope(fs, at(now))
}

func statusReconciler() (*FlashSaleReconciler, *events.FakeRecorder) {
	rec := events.NewFakeRecorder(100)
	r := &FlashSaleReconciler{Recorder: rec}
	r.defaults()
	return r, rec
}

// recorded drains the Events recorded so far.
func recorded(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case ev := <-rec.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func cond(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
}

// wantConds compares conditions on type, status, reason and message (and
// the generation they were observed at), in order.
func wantConds(t *testing.T, got []metav1.Condition, want ...metav1.Condition) {
	t.Helper()
	strip := func(cs []metav1.Condition) []metav1.Condition {
		out := make([]metav1.Condition, 0, len(cs))
		for _, c := range cs {
			out = append(out, metav1.Condition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message})
		}
		return out
	}
	if g, w := strip(got), strip(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("conditions\n  %+v\nwant\n  %+v", g, w)
	}
}

func wantEvents(t *testing.T, rec *events.FakeRecorder, want ...string) {
	t.Helper()
	if got := recorded(rec); !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
		t.Fatalf("events\n  %q\nwant\n  %q", got, want)
	}
}

func TestSetCondition(t *testing.T) {
	const (
		warmed   = v1alpha1.ConditionWarmed
		degraded = v1alpha1.ConditionDegraded
		ready    = v1alpha1.ConditionReady
		tru, fal = metav1.ConditionTrue, metav1.ConditionFalse
	)
	for _, tc := range []struct {
		name  string
		prev  []metav1.Condition
		set   metav1.Condition
		event []string
	}{
		{"new condition: an Event with its reason", nil,
			cond(warmed, tru, v1alpha1.ReasonWarmed, "2 SKUs"), []string{"Normal Warmed 2 SKUs"}},
		{"same status and reason, new message: no Event", []metav1.Condition{cond(warmed, tru, v1alpha1.ReasonWarmed, "2 SKUs")},
			cond(warmed, tru, v1alpha1.ReasonWarmed, "3 SKUs"), nil},
		{"gone bad: a Warning", []metav1.Condition{cond(warmed, tru, v1alpha1.ReasonWarmed, "2 SKUs")},
			cond(warmed, fal, v1alpha1.ReasonKeysMissing, "gone"), []string{"Warning KeysMissing gone"}},
		{"Degraded=True is the bad one", []metav1.Condition{cond(degraded, fal, v1alpha1.ReasonHealthy, "fine")},
			cond(degraded, tru, v1alpha1.ReasonRedisUnavailable, "refused"), []string{"Warning RedisUnavailable refused"}},
		{"Degraded back to False is news", []metav1.Condition{cond(degraded, tru, v1alpha1.ReasonRedisUnavailable, "refused")},
			cond(degraded, fal, v1alpha1.ReasonHealthy, "fine"), []string{"Normal Healthy fine"}},
		{"the first healthy Degraded is not news", nil,
			cond(degraded, fal, v1alpha1.ReasonHealthy, "fine"), nil},
		{"Ready never records an Event", []metav1.Condition{cond(ready, fal, v1alpha1.ReasonPodsNotReady, "pods")},
			cond(ready, tru, v1alpha1.ReasonLive, "live"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := statusReconciler()
			s := statusScope("2026-11-11T12:00:00Z", v1alpha1.FlashSaleStatus{Conditions: tc.prev})
			r.setCondition(s, tc.set.Type, tc.set.Status, tc.set.Reason, tc.set.Message)
			wantConds(t, s.fs.Status.Conditions, tc.set)
			c := apimeta.FindStatusCondition(s.fs.Status.Conditions, tc.set.Type)
			if c.ObservedGeneration != 3 {
				t.Fatalf("observedGeneration %d, want the sale's 3", c.ObservedGeneration)
			}
			wantEvents(t, rec, tc.event...)
		})
	}
}

func TestSetPhase(t *testing.T) {
	for _, tc := range []struct {
		name       string
		prev, next v1alpha1.Phase
		want       v1alpha1.Phase
		event      []string
	}{
		{"a new sale", "", v1alpha1.PhasePending, v1alpha1.PhasePending,
			[]string{"Normal PhaseChanged (new) → Pending: waiting for the warm-up window"}},
		{"a change", v1alpha1.PhaseWarming, v1alpha1.PhaseActive, v1alpha1.PhaseActive,
			[]string{"Normal PhaseChanged Warming → Active: purchases are admitted"}},
		{"Failed is a Warning", v1alpha1.PhasePending, v1alpha1.PhaseFailed, v1alpha1.PhaseFailed,
			[]string{"Warning PhaseChanged Pending → Failed: the sale cannot proceed without a human; see the conditions"}},
		{"no change, no Event", v1alpha1.PhaseActive, v1alpha1.PhaseActive, v1alpha1.PhaseActive, nil},
		{"no decision keeps the phase", v1alpha1.PhaseWarming, "", v1alpha1.PhaseWarming, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := statusReconciler()
			s := statusScope("2026-11-11T12:00:00Z", v1alpha1.FlashSaleStatus{Phase: tc.prev})
			r.setPhase(s, tc.next)
			if s.fs.Status.Phase != tc.want {
				t.Fatalf("phase %s, want %s", s.fs.Status.Phase, tc.want)
			}
			wantEvents(t, rec, tc.event...)
		})
	}
}

var (
	errRedis   = &DependencyError{Reason: v1alpha1.ReasonRedisUnavailable, Err: errors.New("dial tcp: refused")}
	errMissing = &ConfigError{Reason: v1alpha1.ReasonSecretMissing, Msg: "spec.mysql.dsnSecretRef: Secret shop/orders-db not found"}
	opened     = &metav1.Time{Time: at("2026-11-11T12:00:00Z")}
	liveReady  = cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonLive, "the sale is live")
)

func TestSetReady(t *testing.T) {
	const tru, fal = metav1.ConditionTrue, metav1.ConditionFalse
	ready := v1alpha1.ConditionReady
	for _, tc := range []struct {
		name   string
		status v1alpha1.FlashSaleStatus
		scope  func(*scope)
		phase  v1alpha1.Phase
		want   []metav1.Condition
	}{
		{"configuration broken", v1alpha1.FlashSaleStatus{}, func(s *scope) { s.stopAt(errMissing) }, v1alpha1.PhaseFailed,
			[]metav1.Condition{cond(ready, fal, v1alpha1.ReasonSecretMissing, errMissing.Msg)}},
		{"a dependency down before the gate opened", v1alpha1.FlashSaleStatus{}, func(s *scope) { s.stopAt(errRedis) }, v1alpha1.PhaseWarming,
			[]metav1.Condition{cond(ready, fal, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")}},
		{"a dependency down once open: Ready kept", v1alpha1.FlashSaleStatus{OpenedAt: opened, Conditions: []metav1.Condition{liveReady}},
			func(s *scope) { s.connected = true; s.stopAt(errRedis) }, v1alpha1.PhaseActive,
			[]metav1.Condition{liveReady}},
		{"a failure that is no dependency's", v1alpha1.FlashSaleStatus{}, func(s *scope) { s.stopAt(errors.New("apply: refused")) }, v1alpha1.PhaseWarming,
			[]metav1.Condition{cond(ready, fal, v1alpha1.ReasonReconcileFailed, "apply: refused")}},
		{"torn down before: nothing looked at", v1alpha1.FlashSaleStatus{}, func(*scope) {}, v1alpha1.PhaseEnded, nil},
		{"before the warm-up", v1alpha1.FlashSaleStatus{}, func(s *scope) { s.connected = true }, v1alpha1.PhasePending,
			[]metav1.Condition{cond(ready, fal, v1alpha1.ReasonWaitingForWarmup, "warm-up starts at 2026-11-11T11:55:00Z")}},
		{"torn down now", v1alpha1.FlashSaleStatus{OpenedAt: opened}, func(s *scope) { s.connected = true }, v1alpha1.PhaseEnded,
			[]metav1.Condition{cond(ready, tru, v1alpha1.ReasonTornDown, "the sale has ended and was torn down")}},
		{"gate shut: what is missing", v1alpha1.FlashSaleStatus{},
			func(s *scope) {
				s.connected, s.missing = true, []string{v1alpha1.ReasonPodsNotReady, "seckill 0/2 ready"}
			}, v1alpha1.PhaseWarming,
			[]metav1.Condition{cond(ready, fal, v1alpha1.ReasonPodsNotReady, "seckill 0/2 ready")}},
		{"verified before the start", v1alpha1.FlashSaleStatus{OpenedAt: opened}, func(s *scope) { s.connected = true }, v1alpha1.PhaseWarming,
			[]metav1.Condition{cond(ready, tru, v1alpha1.ReasonVerified, "everything is verified; buyers are admitted from 2026-11-11T12:00:00Z")}},
		{"open, a pod not ready: still live", v1alpha1.FlashSaleStatus{OpenedAt: opened},
			func(s *scope) {
				s.connected, s.missing = true, []string{v1alpha1.ReasonPodsNotReady, "seckill 1/2 ready"}
			}, v1alpha1.PhaseActive,
			[]metav1.Condition{liveReady}},
		{"paused", v1alpha1.FlashSaleStatus{OpenedAt: opened}, func(s *scope) { s.connected = true }, v1alpha1.PhasePaused,
			[]metav1.Condition{cond(ready, tru, v1alpha1.ReasonPaused, "the sale is paused: purchases are answered 503")}},
		{"draining", v1alpha1.FlashSaleStatus{OpenedAt: opened}, func(s *scope) { s.connected = true }, v1alpha1.PhaseDraining,
			[]metav1.Condition{cond(ready, tru, v1alpha1.ReasonDraining, "purchases are closed; orders drain and unpaid ones roll back")}},
		{"active", v1alpha1.FlashSaleStatus{OpenedAt: opened}, func(s *scope) { s.connected = true }, v1alpha1.PhaseActive,
			[]metav1.Condition{liveReady}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := statusReconciler()
			s := statusScope("2026-11-11T12:10:00Z", tc.status)
			tc.scope(s)
			r.setReady(s, tc.phase)
			wantConds(t, s.fs.Status.Conditions, tc.want...)
			wantEvents(t, rec)
		})
	}
}

func TestSetDegraded(t *testing.T) {
	const tru, fal = metav1.ConditionTrue, metav1.ConditionFalse
	degraded := v1alpha1.ConditionDegraded
	healthy := cond(degraded, fal, v1alpha1.ReasonHealthy, "every dependency and workload is healthy")
	for _, tc := range []struct {
		name  string
		prev  []metav1.Condition
		scope func(*scope)
		phase v1alpha1.Phase
		want  []metav1.Condition
		event []string
	}{
		{"a dependency down", []metav1.Condition{healthy}, func(s *scope) { s.stopAt(errRedis) }, v1alpha1.PhaseActive,
			[]metav1.Condition{cond(degraded, tru, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")},
			[]string{"Warning RedisUnavailable dial tcp: refused"}},
		{"a failure that is no dependency's", nil, func(s *scope) { s.stopAt(errors.New("apply: refused")) }, v1alpha1.PhaseWarming,
			[]metav1.Condition{cond(degraded, tru, v1alpha1.ReasonReconcileFailed, "apply: refused")},
			[]string{"Warning ReconcileFailed apply: refused"}},
		{"configuration broken: left alone", []metav1.Condition{healthy}, func(s *scope) { s.stopAt(errMissing) }, v1alpha1.PhaseFailed,
			[]metav1.Condition{healthy}, nil},
		{"torn down before: left alone", nil, func(*scope) {}, v1alpha1.PhaseEnded, nil, nil},
		{"before the warm-up: the connections", nil, func(s *scope) { s.connected = true }, v1alpha1.PhasePending,
			[]metav1.Condition{cond(degraded, fal, v1alpha1.ReasonHealthy, "Redis, MySQL and Kafka reachable")}, nil},
		{"something wrong", []metav1.Condition{healthy},
			func(s *scope) { s.connected, s.degraded = true, []string{v1alpha1.ReasonKeysMissing, "SKU 1001 gone"} }, v1alpha1.PhaseActive,
			[]metav1.Condition{cond(degraded, tru, v1alpha1.ReasonKeysMissing, "SKU 1001 gone")},
			[]string{"Warning KeysMissing SKU 1001 gone"}},
		{"healthy again", []metav1.Condition{cond(degraded, tru, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")},
			func(s *scope) { s.connected = true }, v1alpha1.PhaseActive,
			[]metav1.Condition{healthy}, []string{"Normal Healthy every dependency and workload is healthy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec := statusReconciler()
			s := statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{Conditions: tc.prev})
			tc.scope(s)
			r.setDegraded(s, tc.phase)
			wantConds(t, s.fs.Status.Conditions, tc.want...)
			wantEvents(t, rec, tc.event...)
		})
	}
}

func TestSetFigures(t *testing.T) {
	s := statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{
		SKUs: []v1alpha1.SKUStatus{{ID: "gone"}}, Stock: 1, Sold: 1,
	})
	f := &liveFigures{
		// 1001 was raised to 150 in Redis; 1002 has no initial key yet.
		remaining: map[string]int64{"1001": 120, "1002": 0},
		initial:   map[string]int64{"1001": 150},
		counts:    map[string]*orderdb.Counts{"1001": {Paid: 20, Cancelled: 3}},
		total:     4,
	}
	setFigures(&s.fs.Status, s.sale, f, s.now)
	st := s.fs.Status
	want := []v1alpha1.SKUStatus{
		{ID: "1001", Stock: 100, Remaining: 120, Sold: 30, Paid: 20, Cancelled: 3},
		{ID: "1002", Stock: 20, Remaining: 0, Sold: 20, SoldOut: true},
	}
	if !reflect.DeepEqual(st.SKUs, want) {
		t.Fatalf("SKUs %+v, want %+v", st.SKUs, want)
	}
	if st.Stock != 120 || st.Remaining != 120 || st.Sold != 50 || st.Paid != 20 || st.Cancelled != 3 || st.QueueLag != 4 {
		t.Fatalf("totals %+v", st)
	}
	if st.LastRefreshTime == nil || !st.LastRefreshTime.Time.Equal(s.now) {
		t.Fatalf("lastRefreshTime %v, want %s", st.LastRefreshTime, s.now)
	}
}

// TestSummary runs the deferred summary of a reconcile over what the steps
// observed: one decision sets the phase, Ready and Degraded, and the
// requeue.
func TestSummary(t *testing.T) {
	const tru, fal = metav1.ConditionTrue, metav1.ConditionFalse
	ready, degraded := v1alpha1.ConditionReady, v1alpha1.ConditionDegraded
	healthy := cond(degraded, fal, v1alpha1.ReasonHealthy, "every dependency and workload is healthy")
	redisDown := cond(degraded, tru, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")
	tornDown := cond(v1alpha1.ConditionTornDown, tru, v1alpha1.ReasonTornDown, "workloads deleted")
	warming := v1alpha1.FlashSaleStatus{Phase: v1alpha1.PhaseWarming}
	active := v1alpha1.FlashSaleStatus{Phase: v1alpha1.PhaseActive, OpenedAt: opened, Conditions: []metav1.Condition{healthy, liveReady}}
	for _, tc := range []struct {
		name   string
		now    string
		status v1alpha1.FlashSaleStatus
		scope  func(*scope)
		phase  v1alpha1.Phase
		conds  []metav1.Condition
		// generation is the observedGeneration written (0: none).
		generation int64
		requeue    time.Duration
	}{
		{"stale read: nothing written, look again in a second", "2026-11-11T13:00:00Z", active,
			func(s *scope) { s.stale = true }, v1alpha1.PhaseActive, active.Conditions, 0, time.Second},
		{"torn down before: Ended, nothing else", "2026-11-11T13:00:00Z",
			v1alpha1.FlashSaleStatus{Phase: v1alpha1.PhaseDraining, Conditions: []metav1.Condition{redisDown, tornDown}},
			func(*scope) {}, v1alpha1.PhaseEnded, []metav1.Condition{redisDown, tornDown}, 3, 0},
		{"configuration broken: Failed, looked at again in a minute", "2026-11-11T11:00:00Z", v1alpha1.FlashSaleStatus{},
			func(s *scope) { s.stopAt(errMissing) }, v1alpha1.PhaseFailed,
			[]metav1.Condition{cond(ready, fal, v1alpha1.ReasonSecretMissing, errMissing.Msg)}, 3, configRetry},
		{"before the warm-up: look again at it", "2026-11-11T11:54:30Z", v1alpha1.FlashSaleStatus{},
			func(s *scope) { s.connected = true }, v1alpha1.PhasePending,
			[]metav1.Condition{
				cond(degraded, fal, v1alpha1.ReasonHealthy, "Redis, MySQL and Kafka reachable"),
				cond(ready, fal, v1alpha1.ReasonWaitingForWarmup, "warm-up starts at 2026-11-11T11:55:00Z"),
			}, 3, 30 * time.Second},
		{"long before the warm-up: look again now and then", "2026-11-11T10:00:00Z", v1alpha1.FlashSaleStatus{},
			func(s *scope) { s.connected = true }, v1alpha1.PhasePending,
			[]metav1.Condition{
				cond(degraded, fal, v1alpha1.ReasonHealthy, "Redis, MySQL and Kafka reachable"),
				cond(ready, fal, v1alpha1.ReasonWaitingForWarmup, "warm-up starts at 2026-11-11T11:55:00Z"),
			}, 3, DefaultResolveEvery},
		{"a dependency down before the warm-up: retried in 5s", "2026-11-11T11:00:00Z", v1alpha1.FlashSaleStatus{},
			func(s *scope) { s.stopAt(errRedis) }, v1alpha1.PhasePending,
			[]metav1.Condition{redisDown, cond(ready, fal, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")}, 0, DefaultRefreshInterval},
		{"a dependency down while warming", "2026-11-11T11:58:00Z", warming,
			func(s *scope) { s.connected = true; s.stopAt(errRedis) }, v1alpha1.PhaseWarming,
			[]metav1.Condition{redisDown, cond(ready, fal, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")}, 0, DefaultRefreshInterval},
		{"a dependency down mid-sale: Ready kept", "2026-11-11T12:10:00Z", active,
			func(s *scope) { s.connected = true; s.stopAt(errRedis) }, v1alpha1.PhaseActive,
			[]metav1.Condition{redisDown, liveReady}, 0, DefaultRefreshInterval},
		{"a dependency down past the end of a live sale: Draining", "2026-11-11T12:31:00Z", active,
			func(s *scope) { s.stopAt(errRedis) }, v1alpha1.PhaseDraining,
			[]metav1.Condition{redisDown, liveReady}, 0, DefaultRefreshInterval},
		{"a dependency down past the end of a sale never opened: phase kept", "2026-11-11T12:31:00Z", warming,
			func(s *scope) { s.stopAt(errRedis) }, v1alpha1.PhaseWarming,
			[]metav1.Condition{redisDown, cond(ready, fal, v1alpha1.ReasonRedisUnavailable, "dial tcp: refused")}, 0, DefaultRefreshInterval},
		{"active: the refresh interval", "2026-11-11T12:10:00Z", active,
			func(s *scope) { s.connected = true }, v1alpha1.PhaseActive, []metav1.Condition{healthy, liveReady}, 3, DefaultRefreshInterval},
		{"active a second before the end: the end", "2026-11-11T12:29:59Z", active,
			func(s *scope) { s.connected = true }, v1alpha1.PhaseActive, []metav1.Condition{healthy, liveReady}, 3, time.Second},
		{"torn down now: Ended, no requeue", "2026-11-11T12:46:00Z", active,
			func(s *scope) { s.connected = true; s.obs.Settled, s.obs.TornDown = true, true }, v1alpha1.PhaseEnded,
			[]metav1.Condition{healthy, cond(ready, tru, v1alpha1.ReasonTornDown, "the sale has ended and was torn down")}, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := statusReconciler()
			s := statusScope(tc.now, *tc.status.DeepCopy())
			tc.scope(s)
			res := r.summarize(s)
			if want := (ctrl.Result{RequeueAfter: tc.requeue}); res != want {
				t.Fatalf("result %+v, want %+v", res, want)
			}
			st := s.fs.Status
			if st.Phase != tc.phase {
				t.Fatalf("phase %s, want %s", st.Phase, tc.phase)
			}
			wantConds(t, st.Conditions, tc.conds...)
			if st.ObservedGeneration != tc.generation {
				t.Fatalf("observedGeneration %d, want %d", st.ObservedGeneration, tc.generation)
			}
		})
	}
}

// TestSummaryFigures: the live figures reach status whenever observe read
// them, even if a later step failed; before the warm-up the stock is the
// spec's.
func TestSummaryFigures(t *testing.T) {
	r, _ := statusReconciler()
	s := statusScope("2026-11-11T11:00:00Z", v1alpha1.FlashSaleStatus{})
	s.connected = true
	r.summarize(s)
	if st := s.fs.Status; st.Stock != 120 || st.Remaining != 120 || st.LastRefreshTime != nil {
		t.Fatalf("before the warm-up: stock %d remaining %d refreshed %v, want 120, 120, never", st.Stock, st.Remaining, st.LastRefreshTime)
	}

	s = statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{OpenedAt: opened})
	s.connected = true
	s.live = &liveFigures{remaining: map[string]int64{"1001": 90, "1002": 20}, total: 7}
	s.stopAt(errRedis)
	r.summarize(s)
	if st := s.fs.Status; st.Remaining != 110 || st.Sold != 10 || st.QueueLag != 7 {
		t.Fatalf("after a later step failed: remaining %d sold %d lag %d, want 110, 10, 7", st.Remaining, st.Sold, st.QueueLag)
	}

	s = statusScope("2026-11-11T12:10:00Z", v1alpha1.FlashSaleStatus{OpenedAt: opened, Stock: 1})
	s.connected = true
	s.stopAt(errRedis)
	r.summarize(s)
	if s.fs.Status.Stock != 1 {
		t.Fatalf("figures written although observe read none: stock %d", s.fs.Status.Stock)
	}
}
