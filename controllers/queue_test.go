package controllers_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestQueueStatus follows a sale with a waiting room: the warm-up creates
// the queue's records, and status.queue (and the Waiting and Admitted
// columns of `kubectl get fs -o wide`) shows what buyers did through the
// queue package: joins before and after the start, admissions, and
// admissions used. A sale without a waiting room shows no queue at all,
// rather than zeros.
func TestQueueStatus(t *testing.T) {
	e := newEnv(t, envOpts{})
	fs := e.sale(func(fs *v1alpha1.FlashSale) {
		fs.Spec.Queue = &v1alpha1.Queue{AdmitPerSecond: 2}
	})
	key := e.ns + "/" + saleName

	e.reconcile()
	e.wantPhase(v1alpha1.PhasePending)
	if q := e.get().Status.Queue; q != nil {
		t.Fatalf("status.queue %+v while Pending, before any queue exists", *q)
	}

	// The warm-up creates the queue; nobody has joined yet.
	e.clk.SetTime(e.t0.Add(5 * time.Minute))
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseWarming)
	if _, ok, err := queue.Read(e.ctx, e.uc, key); err != nil || !ok {
		t.Fatalf("after the warm-up the queue's records exist = %v (err %v), want true", ok, err)
	}
	e.wantQueue(v1alpha1.QueueStatus{})
	e.markReady()
	e.reconcile() // the go-live gate opens

	// Five buyers join before the start, one of them twice: one place each.
	cfg, ok := queue.ConfigOf(e.get())
	if !ok {
		t.Fatal("queue.ConfigOf: no spec.queue")
	}
	q := queue.New(e.uc, key, cfg)
	buyers := []string{"b0", "b1", "b2", "b3", "b4", "b0"}
	for _, u := range buyers {
		if _, err := q.Join(e.ctx, u, e.clk.Now()); err != nil {
			t.Fatalf("join %s: %v", u, err)
		}
	}
	e.reconcile()
	e.wantQueue(v1alpha1.QueueStatus{Joined: 5, Waiting: 5})

	// One second after the start the admitter admits 2 (admitPerSecond 2,
	// the bucket starts empty at the start); a late buyer queues behind.
	start := fs.Spec.StartTime.Time
	e.clk.SetTime(start.Add(time.Second))
	step, err := q.Admit(e.ctx, e.clk.Now(), 120)
	if err != nil || step.New != 2 {
		t.Fatalf("admit one second after the start: %+v, %v; want 2 admitted", step, err)
	}
	if _, err := q.Join(e.ctx, "late", e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.wantPhase(v1alpha1.PhaseActive)
	e.wantQueue(v1alpha1.QueueStatus{Joined: 6, Waiting: 4, Admitted: 2, Outstanding: 2})
	e.wantWideColumns(map[string]string{"Waiting": "4", "Admitted": "2"})

	// An admitted buyer bought: their admission no longer counts against
	// the budget, but they stay admitted.
	if err := q.Done(e.ctx, e.admittedBuyer(q, buyers)); err != nil {
		t.Fatal(err)
	}
	e.reconcile()
	e.wantQueue(v1alpha1.QueueStatus{Joined: 6, Waiting: 4, Admitted: 2, Outstanding: 1})

	// A sale without a waiting room: no status.queue, empty columns.
	plain := newEnv(t, envOpts{})
	plain.sale(nil)
	plain.clk.SetTime(plain.t0.Add(5 * time.Minute))
	plain.reconcile()
	plain.wantPhase(v1alpha1.PhaseWarming)
	if q := plain.get().Status.Queue; q != nil {
		t.Fatalf("status.queue %+v for a sale without spec.queue", *q)
	}
	plain.wantWideColumns(map[string]string{"Waiting": "<none>", "Admitted": "<none>"})
}

// wantQueue fails unless status.queue is exactly want.
func (e *env) wantQueue(want v1alpha1.QueueStatus) {
	e.t.Helper()
	got := e.get().Status.Queue
	if got == nil || *got != want {
		e.t.Fatalf("status.queue %+v at t0+%s, want %+v", got, e.clk.Now().Sub(e.t0), want)
	}
}

// admittedBuyer is one of users whose place is admitted.
func (e *env) admittedBuyer(q *queue.Queue, users []string) string {
	e.t.Helper()
	for _, u := range users {
		p, err := q.Position(e.ctx, u)
		if err != nil {
			e.t.Fatal(err)
		}
		if p.IsAdmitted() {
			return u
		}
	}
	e.t.Fatalf("none of %v is admitted", users)
	return ""
}

// wantWideColumns asks the API server for the sale as a Table, which is
// what `kubectl get fs -o wide` prints (the CRD's additionalPrinterColumns,
// evaluated by the server), and fails unless each named column is a
// -o wide one (priority 1) showing want (kubectl's "<none>" for a
// missing value).
func (e *env) wantWideColumns(want map[string]string) {
	e.t.Helper()
	table := e.table()
	if len(table.Rows) != 1 {
		e.t.Fatalf("table of %d rows, want the sale's 1", len(table.Rows))
	}
	for name, w := range want {
		i := columnIndex(table, name)
		if i < 0 {
			e.t.Fatalf("no column %s in %+v: the CRD lacks its printer column", name, table.ColumnDefinitions)
		}
		if p := table.ColumnDefinitions[i].Priority; p != 1 {
			e.t.Errorf("column %s has priority %d, want 1 (shown by -o wide only)", name, p)
		}
		got := "<none>"
		if c := table.Rows[0].Cells[i]; c != nil {
			got = fmt.Sprint(c)
		}
		if got != w {
			e.t.Errorf("column %s shows %s, want %s", name, got, w)
		}
	}
}

func columnIndex(table *metav1.Table, name string) int {
	for i, c := range table.ColumnDefinitions {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// table GETs the sale in the Table form kubectl asks for.
func (e *env) table() *metav1.Table {
	e.t.Helper()
	cfg, _ := testutil.Kube(e.t, cli.Scheme())
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	url := fmt.Sprintf("%s/apis/%s/namespaces/%s/flashsales/%s", strings.TrimSuffix(cfg.Host, "/"), v1alpha1.GroupVersion, e.ns, saleName)
	req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s as a Table: %d %s (%v)", url, resp.StatusCode, body, err)
	}
	var table metav1.Table
	if err := json.Unmarshal(body, &table); err != nil {
		e.t.Fatalf("decode the Table: %v\n%s", err, body)
	}
	return &table
}
