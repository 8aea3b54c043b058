package loadtest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// fakeRoom is a waiting room speaking the seckill contract in memory, with
// defects to switch on: the checks must catch each of them.
type fakeRoom struct {
	mu          sync.Mutex
	stock       int64
	overbook    float64
	perTick     int
	queue       []string
	joined      map[string]bool
	admitted    int
	outstanding map[string]bool
	// Defects.
	tokenToAnyone  bool // a token for a waiting ticket
	newTicketAgain bool // a rejoin gets another ticket (and 201)
	keepWaiting    bool // never says SOLD_OUT
	overAdmit      bool // admits without looking at the stock
}

func (f *fakeRoom) ticketOf(user string, n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", user, n)))
	return "q1.0000abcd." + base64.RawURLEncoding.EncodeToString(sum[:])
}

func (f *fakeRoom) admit() {
	f.mu.Lock()
	defer f.mu.Unlock()
	budget, perTick := int(float64(f.stock)*f.overbook)-len(f.outstanding), f.perTick
	if f.overAdmit {
		budget, perTick = len(f.queue), len(f.queue) // everyone at once
	}
	for n := 0; n < perTick && n < budget && f.admitted < len(f.queue); n++ {
		f.outstanding[f.queue[f.admitted]] = true
		f.admitted++
	}
}

func (f *fakeRoom) rank(user string) int {
	for i, u := range f.queue {
		if u == user {
			return i
		}
	}
	return -1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func refuse(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]string{"error": code, "message": code})
}

func (f *fakeRoom) handler() http.Handler {
	mux := http.NewServeMux()
	const api = "/api/v1/sales/ns/s"
	mux.HandleFunc("GET "+api, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"status": "ACTIVE", "queue": map[string]any{"admitPerSecond": f.perTick * 100}})
	})
	mux.HandleFunc("GET "+api+"/skus/{sku}", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"remaining": f.stock, "soldOut": f.stock <= 0})
	})
	mux.HandleFunc("POST "+api+"/queue", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		user := r.Header.Get("X-User-ID")
		if f.stock <= 0 && !f.keepWaiting {
			refuse(w, 410, "SOLD_OUT")
			return
		}
		status := 200
		if !f.joined[user] || f.newTicketAgain {
			f.joined[user] = true
			f.queue = append(f.queue, user)
			status = 201
		}
		writeJSON(w, status, map[string]any{"ticket": f.ticketOf(user, len(f.queue)*btoi(f.newTicketAgain)), "status": "waiting", "pollAfterSeconds": 0.02})
	})
	mux.HandleFunc("GET "+api+"/queue/{ticket}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		user := r.Header.Get("X-User-ID")
		if !f.newTicketAgain && r.PathValue("ticket") != f.ticketOf(user, 0) {
			refuse(w, 403, "BAD_TICKET")
			return
		}
		switch rk := f.rank(user); {
		case rk >= 0 && rk < f.admitted:
			writeJSON(w, 200, map[string]any{"status": "admitted"})
		case f.stock <= 0 && !f.keepWaiting:
			refuse(w, 410, "SOLD_OUT")
		default:
			writeJSON(w, 200, map[string]any{"status": "waiting", "place": f.rank(user) + 1, "pollAfterSeconds": 0.02})
		}
	})
	mux.HandleFunc("POST "+api+"/token", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ SKU, Ticket string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		defer f.mu.Unlock()
		user := r.Header.Get("X-User-ID")
		rk := f.rank(user)
		switch {
		case body.Ticket == "":
			refuse(w, 403, "NOT_ADMITTED")
		case !f.newTicketAgain && body.Ticket != f.ticketOf(user, 0):
			refuse(w, 403, "BAD_TICKET")
		case (rk < 0 || rk >= f.admitted) && !f.tokenToAnyone:
			refuse(w, 403, "NOT_ADMITTED")
		default:
			writeJSON(w, 200, map[string]any{"token": "t." + user})
		}
	})
	mux.HandleFunc("POST "+api+"/purchase", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ SKU, Token string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		defer f.mu.Unlock()
		user := r.Header.Get("X-User-ID")
		if body.Token != "t."+user {
			refuse(w, 403, "BAD_TOKEN")
			return
		}
		delete(f.outstanding, user)
		if f.stock <= 0 {
			refuse(w, 410, "SOLD_OUT")
			return
		}
		f.stock--
		writeJSON(w, 202, map[string]any{"orderNo": "o-" + user, "status": "queued"})
	})
	mux.HandleFunc("GET "+api+"/orders/{no}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"status": "created"})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		fmt.Fprintf(w, "# TYPE flashsale_queue_outstanding gauge\nflashsale_queue_outstanding{sale=\"ns/s\"} %d\n", len(f.outstanding))
		fmt.Fprintf(w, "flashsale_queue_admitted{sale=\"ns/s\"} %d\nflashsale_queue_waiting{sale=\"ns/s\"} %d\n", f.admitted, len(f.queue)-f.admitted)
		fmt.Fprintf(w, "flashsale_queue_outstanding{sale=\"other/x\"} 999999\n")
	})
	return mux
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runRoom runs a spike of 200 buyers at a fake waiting room of 40 units
// (overbook 1.5) and returns the report.
func runRoom(t *testing.T, f *fakeRoom) *Report {
	t.Helper()
	f.stock, f.overbook, f.perTick = 40, 1.5, 3
	f.joined, f.outstanding = map[string]bool{}, map[string]bool{}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			f.admit()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	sale := &v1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}}
	sale.Spec.SKUs = []v1alpha1.SKU{{ID: "x", Stock: 40, PerUserLimit: 1}}
	sale.Spec.Queue = &v1alpha1.Queue{AdmitPerSecond: 300, Overbook: "1.5"} // bound: 60 + 30 outstanding
	rep, err := Run(ctx, Options{BaseURL: srv.URL, Namespace: "ns", Name: "s", SKUs: SKUsOf(sale), Sale: sale,
		Users: 200, SpikeWindow: 100 * time.Millisecond, Concurrency: 16, RejoinShare: 0.3, ProbeShare: 0.2, BotShare: 0.2,
		ThinkTime: 150 * time.Millisecond, Seed: 7, PollInterval: 10 * time.Millisecond, QueueTimeout: 3 * time.Second, ProgressEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b)
	t.Logf("report:\n%s", b.String())
	return rep
}

func status(rep *Report, name string) (string, string) {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Status, c.Detail
		}
	}
	return "missing", ""
}

// TestQueueFlow: buyers join, wait, buy with their ticket; the waiting
// room's checks pass against a sound room and each fails against a room
// with the defect it is there to catch.
func TestQueueFlow(t *testing.T) {
	rep := runRoom(t, &fakeRoom{})
	q := rep.Queue
	if q == nil || q.Joined != 200 || q.Admitted < 40 || q.ToldSoldOut == 0 || q.GaveUp != 0 || rep.Orders.Admitted != 40 {
		t.Fatalf("queue report %+v, orders %+v", q, rep.Orders)
	}
	if q.Rejoins == 0 || q.Probes["403 NOT_ADMITTED"] == 0 || q.MaxOutstanding == 0 || q.Samples == 0 || q.Figures == nil {
		t.Errorf("rejoins %d, probes %v, max outstanding %d, samples %d", q.Rejoins, q.Probes, q.MaxOutstanding, q.Samples)
	}
	for _, name := range []string{CheckOneTicket, CheckNoTokenUnqueued, CheckAdmissionBound, CheckQueueSoldOut, CheckOversell, CheckBots} {
		if st, d := status(rep, name); st != Pass {
			t.Errorf("check %s: %s %s", name, st, d)
		}
	}
	for _, tc := range []struct {
		name  string
		room  *fakeRoom
		check string
	}{
		{"token before admission", &fakeRoom{tokenToAnyone: true}, CheckNoTokenUnqueued},
		{"a new ticket on rejoin", &fakeRoom{newTicketAgain: true}, CheckOneTicket},
		{"kept waiting after the sell-out", &fakeRoom{keepWaiting: true}, CheckQueueSoldOut},
		{"admissions over the budget", &fakeRoom{overAdmit: true}, CheckAdmissionBound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.room.keepWaiting {
				t.Parallel()
			}
			rep := runRoom(t, tc.room)
			if st, d := status(rep, tc.check); st != Fail {
				t.Errorf("check %s: %s (%s), want fail", tc.check, st, d)
			}
			if rep.OK {
				t.Error("report OK")
			}
		})
	}
}

func TestParseQueueGauges(t *testing.T) {
	in := `# HELP flashsale_queue_waiting x
flashsale_queue_waiting{sale="a/b"} 12
flashsale_queue_waiting{sale="c/d"} 99
flashsale_queue_admitted{sale="a/b"} 3e+03
flashsale_queue_outstanding 7
`
	f, ok, err := parseQueueGauges(strings.NewReader(in), "a/b")
	if err != nil || !ok || f.Waiting != 12 || f.Admitted != 3000 || f.Outstanding != 7 {
		t.Fatalf("%+v %v %v", f, ok, err)
	}
}

func TestForgedTicket(t *testing.T) {
	genuine := "q1.1234abcd." + strings.Repeat("B", 43)
	f := forgedTicket(genuine, 5)
	if len(f) != len(genuine) || !strings.HasPrefix(f, "q1.1234abcd.") || f == genuine {
		t.Errorf("forged %q", f)
	}
	if g := forgedTicket("", 5); !strings.HasPrefix(g, "q1.0badc0de.") || len(g) != len(genuine) {
		t.Errorf("forged without a genuine ticket %q", g)
	}
}
