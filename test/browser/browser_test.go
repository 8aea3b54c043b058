// Package browser_test plays buyers on the buyer's page (runtime/seckill/page)
// in a real headless Chromium: Debian's /usr/bin/chromium driven by
// playwright-core from npm (drive.js, pinned in package-lock.json), against
// real seckill servers and order workers in this process on the local Redis
// and MariaDB. Screenshots go to bin/browser/*.png.
//
// Chromium, Node.js and node_modules come from `make browser-deps`
// (hack/browser.sh), which `make test` runs first; without them this test
// fails (it never skips) and says so.
package browser_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/switches"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// scenario is one line of what drive.js plays (see drive.js).
type scenario struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	URL       string    `json:"url"`
	API       string    `json:"api"`
	SKU       string    `json:"sku"`
	Users     []string  `json:"users"`
	Rivals    []string  `json:"rivals,omitempty"`
	Bots      []string  `json:"bots,omitempty"`
	StartTime time.Time `json:"startTime"`
	OpensAt   time.Time `json:"opensAt"`
	EndTime   time.Time `json:"endTime"`
	// AdmissionTTLMs is spec.queue.admissionTTL of a queued sale.
	AdmissionTTLMs int64  `json:"admissionTTLMs,omitempty"`
	Control        string `json:"control"` // see control
	plane          *plane
}

// The sales of the scenarios. Those that start later start in ten minutes
// by their clocks, which the scenarios move forward (saleClock).
var sales = map[string]saleSpec{
	"queued":         {name: "queued", startIn: 10 * time.Minute, stock: 10, queue: true, prequeue: 5 * time.Minute},
	"unqueued":       {name: "unqueued", startIn: 10 * time.Minute, stock: 10},
	"soldout":        {name: "soldout", startIn: -time.Second, stock: 1},
	"ended":          {name: "ended", startIn: -time.Second, stock: 10},
	"paused":         {name: "paused", startIn: -time.Second, stock: 10},
	"queued-soldout": {name: "queued-soldout", startIn: 10 * time.Minute, stock: 1, queue: true, prequeue: 5 * time.Minute, overbook: "1"},
	// Short enough to be a session, long enough that a slow machine shows
	// the admission before it lapses by real time: the scenario lapses it
	// by moving the clock.
	"queued-lapsed": {name: "queued-lapsed", startIn: 10 * time.Minute, stock: 10, queue: true, prequeue: 5 * time.Minute, ttl: 30 * time.Second},
}

func TestBuyersPage(t *testing.T) {
	tools := requireBrowser(t)
	out := screenshotDir(t)
	rdb := testutil.Redis(t)
	ns := testutil.UniqueName(t)
	testutil.CleanupKeys(t, rdb, "*"+ns+"/*")
	db, _ := testutil.MySQL(t)
	if _, err := orderdb.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	store := orderdb.New(db)

	kinds := []string{"queued", "unqueued", "soldout", "queued-soldout", "queued-lapsed", "ended", "paused"}
	d := startDriver(t, tools, len(kinds))
	now := time.Now()
	var plays []scenario
	for _, kind := range kinds {
		t0 := time.Now()
		p := startPlane(t, rdb, db, newSale(ns, sales[kind], now))
		servesPage(t, p)
		t.Logf("%s: started in %v", kind, time.Since(t0))
		plays = append(plays, newScenario(kind, p))
	}
	ctl := control(t, rdb, plays)
	for i := range plays {
		plays[i].Control = ctl
	}
	results := d.play(t, out, plays)
	t.Logf("drive.js:\n%s", d.stderr)
	for _, sc := range plays {
		t.Run(sc.Name, func(t *testing.T) {
			res, ok := results[sc.Name]
			if !ok {
				t.Fatal("drive.js gave no result")
			}
			t.Logf("screenshots: %v; shown: %v", res.Screenshots, res.Shown)
			if !res.OK {
				t.Fatalf("in the browser: %s", res.Error)
			}
			checks[sc.Kind](t, sc, res, store)
		})
	}
}

func newScenario(kind string, p *plane) scenario {
	sc := scenario{Name: kind, Kind: kind, URL: p.url, API: p.api, SKU: "phone",
		StartTime: p.sale.Spec.StartTime.Time, OpensAt: p.sale.QueueOpensAt(), EndTime: p.sale.Spec.EndTime.Time, plane: p}
	if p.sale.Spec.Queue != nil {
		sc.AdmissionTTLMs = p.sale.AdmissionTTL().Milliseconds()
	}
	sc.Users = []string{kind + "-buyer", kind + "-latecomer"}
	sc.Rivals = []string{kind + "-rival"}
	for i := range 5 {
		sc.Bots = append(sc.Bots, kind+"-bot-"+strconv.Itoa(i))
	}
	return sc
}

// screenshotDir is bin/browser at the repository's root, emptied of the
// screenshots of an earlier run.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "bin", "browser"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	return dir
}

// control serves what drive.js changes on the server side of a scenario's
// sale: POST /clock?sale=NAME&at=RFC3339&frozen=BOOL sets its clock,
// POST /pause?sale=NAME&on=BOOL its pause switch (as the operator does).
func control(t *testing.T, rdb redis.UniversalClient, plays []scenario) string {
	t.Helper()
	planes := map[string]*plane{}
	for _, sc := range plays {
		planes[sc.Name] = sc.plane
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p, ok := planes[q.Get("sale")]
		if r.Method != http.MethodPost || !ok {
			http.Error(w, "want POST /clock or /pause with ?sale=NAME of a scenario", http.StatusBadRequest)
			return
		}
		var err error
		switch r.URL.Path {
		case "/clock":
			var at time.Time
			if at, err = time.Parse(time.RFC3339Nano, q.Get("at")); err == nil {
				p.clock.set(at, q.Get("frozen") == "true")
			}
		case "/pause":
			err = switches.SetPaused(r.Context(), rdb, p.sale.SaleKey(), q.Get("on") == "true")
		default:
			err = fmt.Errorf("no such control %s", r.URL.Path)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}
