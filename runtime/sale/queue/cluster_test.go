package queue_test

import (
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestOnACluster: the scripts run on a real 3-master Redis Cluster (all the
// queue's keys share the sale's hash tag, so no CROSSSLOT), and the whole
// flow works there: Init, Load, Join, Admit, Position, Done, Read.
func TestOnACluster(t *testing.T) {
	rdb := testutil.RedisCluster(t).Client(t)
	q, sale := warmQueue(t, rdb, cfg(10))
	for i := range 20 {
		join(t, q, user(i), t0.Add(-time.Minute))
	}
	if p := join(t, q, "late", t0.Add(time.Second)); !p.New || p.Rank != 20 {
		t.Fatalf("late joiner %+v", p)
	}
	s := admit(t, q, t0.Add(time.Second), 2) // rate allows 10, budget 3
	if s.New != 3 || s.Outstanding != 3 || s.Length != 21 {
		t.Fatalf("admit %+v", s)
	}
	admitted := mustAdmittedUsers(t, q, 20)
	if len(admitted) != 3 {
		t.Fatalf("admitted users %v", admitted)
	}
	if err := q.Done(ctx, admitted...); err != nil {
		t.Fatal(err)
	}
	f, ok, err := queue.Read(ctx, rdb, sale)
	if want := (queue.Figures{Joined: 21, Waiting: 18, Admitted: 3}); err != nil || !ok || f != want {
		t.Fatalf("Read: %+v %v %v, want %+v", f, ok, err, want)
	}
}
