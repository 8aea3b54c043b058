package browser_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// checks hold, per scenario kind, what the pages must have shown and what
// the servers must hold afterwards.
var checks = map[string]func(t *testing.T, sc scenario, res result, store *orderdb.Store){
	"queued": func(t *testing.T, sc scenario, res result, store *orderdb.Store) {
		countdownShown(t, res)
		if got := res.Shown["earlyPlace"]; got != "drawn at the start" {
			t.Errorf("a buyer who joined before the start saw place %q, want %q", got, "drawn at the start")
		}
		// Everyone who joined before the start (the early buyer and the
		// bots) is ahead of a buyer who joins after it.
		if want := strconv.Itoa(len(sc.Bots) + 2); res.Shown["latePlace"] != want {
			t.Errorf("the latecomer saw place %q, want %s", res.Shown["latePlace"], want)
		}
		if n, err := strconv.Atoi(res.Shown["lateAhead"]); err != nil || n < 1 {
			t.Errorf("the latecomer saw %q ahead, want a number of buyers", res.Shown["lateAhead"])
		}
		ordersCreated(t, sc, res, store, sc.Users)
	},
	"unqueued": func(t *testing.T, sc scenario, res result, store *orderdb.Store) {
		countdownShown(t, res)
		ordersCreated(t, sc, res, store, sc.Users[:1])
	},
	"soldout": func(t *testing.T, _ scenario, res result, _ *orderdb.Store) {
		if res.Shown["code"] != "SOLD_OUT" || !strings.Contains(strings.ToLower(res.Shown["message"]), "sold out") {
			t.Errorf("after the last unit went: message %q (%s), want sold out", res.Shown["message"], res.Shown["code"])
		}
		if !strings.Contains(strings.ToLower(res.Shown["reloaded"]), "sold out") {
			t.Errorf("a fresh page of a sold-out sale says %q, want sold out", res.Shown["reloaded"])
		}
	},
	"ended": func(t *testing.T, _ scenario, res result, _ *orderdb.Store) {
		if res.Shown["code"] != "ENDED" || res.Shown["status"] != "ENDED" || res.Shown["buyDisabled"] != "true" {
			t.Errorf("once the sale ended the page shows %v, want the ENDED message and phase and Buy disabled", res.Shown)
		}
	},
	"paused": func(t *testing.T, _ scenario, res result, _ *orderdb.Store) {
		if res.Shown["code"] != "PAUSED" || res.Shown["buyDisabled"] != "true" {
			t.Errorf("while paused the page shows %v, want the PAUSED message and Buy disabled", res.Shown)
		}
		if res.Shown["buyEnabledAgain"] != "true" || res.Shown["messageAfter"] != "" {
			t.Errorf("after the pause the page shows %v, want Buy enabled and no message", res.Shown)
		}
	},
	"queued-soldout": func(t *testing.T, _ scenario, res result, _ *orderdb.Store) {
		if res.Shown["place"] != "2" {
			t.Errorf("the buyer behind the rival saw place %q, want 2", res.Shown["place"])
		}
		if res.Shown["code"] != "SOLD_OUT" {
			t.Errorf("a waiting buyer of a sold-out sale was shown %q (%s), want SOLD_OUT", res.Shown["message"], res.Shown["code"])
		}
	},
	"queued-lapsed": func(t *testing.T, sc scenario, res result, _ *orderdb.Store) {
		if !strings.Contains(res.Shown["admittedStatus"], "your turn") || res.Shown["buyEnabled"] != "true" {
			t.Errorf("once admitted the page said %q with Buy enabled %s, want its turn and Buy enabled",
				res.Shown["admittedStatus"], res.Shown["buyEnabled"])
		}
		if res.Shown["token"] != "403 NOT_ADMITTED" {
			t.Errorf("Buy after the admission lapsed got /token %q, want 403 NOT_ADMITTED", res.Shown["token"])
		}
		lapsed(t, res)
		if n := sc.plane.tokens.of(sc.Users[0]); n != 1 {
			t.Errorf("the buyer's page asked for %d tokens, want 1 (the refused click only)", n)
		}
	},
}

// lapsed checks that a page told "done" by the wait endpoint says the
// admission is over, keeps Buy disabled, and asked the wait endpoint once
// after the refused Buy and never again.
func lapsed(t *testing.T, res result) {
	t.Helper()
	if res.Shown["code"] != "DONE" || !strings.Contains(res.Shown["message"], "ran out of time") ||
		!strings.Contains(res.Shown["queueStatus"], "turn has passed") {
		t.Errorf("after the lapse the page says %q (%s), queue panel %q; want that the buyer's turn passed (used or out of time)",
			res.Shown["message"], res.Shown["code"], res.Shown["queueStatus"])
	}
	if res.Shown["waitsToDone"] != "1" {
		t.Errorf("the page asked the wait endpoint %s times between Buy and done, want 1", res.Shown["waitsToDone"])
	}
	if res.Shown["waitsAfterDone"] != "0" || res.Shown["stateLater"] != "done" || res.Shown["buyDisabled"] != "true" {
		t.Errorf("after done the page asked the wait endpoint %s more times, is in state %q with Buy disabled %s; want no more polls, done, disabled",
			res.Shown["waitsAfterDone"], res.Shown["stateLater"], res.Shown["buyDisabled"])
	}
}

var clockFace = regexp.MustCompile(`^(\d+d )?\d\d:\d\d:\d\d$`)

func countdownShown(t *testing.T, res result) {
	t.Helper()
	if !clockFace.MatchString(res.Shown["countdown"]) {
		t.Errorf("countdown showed %q, want hh:mm:ss", res.Shown["countdown"])
	}
}

// ordersCreated checks that each user's page showed an order "created",
// that MySQL holds that order for that user, and that each user's double
// click fetched one token only (the button was disabled after the click).
func ordersCreated(t *testing.T, sc scenario, res result, store *orderdb.Store, users []string) {
	t.Helper()
	if len(res.Orders) != len(users) {
		t.Fatalf("%d orders shown, want %d: %+v", len(res.Orders), len(users), res.Orders)
	}
	for i, user := range users {
		shown := res.Orders[i]
		if shown.Status != "created" {
			t.Errorf("%s's page shows order %s %q, want created", user, shown.OrderNo, shown.Status)
		}
		row, err := store.Get(context.Background(), shown.OrderNo)
		if err != nil {
			t.Errorf("%s's order %q in MySQL: %v", user, shown.OrderNo, err)
			continue
		}
		if row.User != user || row.SKU != sc.SKU || row.Status != order.Created {
			t.Errorf("MySQL holds order %s as user %s SKU %s %s, want %s %s created", shown.OrderNo, row.User, row.SKU, row.Status, user, sc.SKU)
		}
		if n := sc.plane.tokens.of(user); n != 1 {
			t.Errorf("%s's double click on Buy fetched %d tokens, want 1 (the button must be disabled after the click)", user, n)
		}
	}
}
