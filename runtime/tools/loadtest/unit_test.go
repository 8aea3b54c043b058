package loadtest

import (
	"context"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond))
		h.record(vals[i])
	}
	slices.Sort(vals)
	qs := []float64{0.5, 0.95, 0.99, 1}
	got := h.quantiles(qs...)
	for i, q := range qs {
		exact := vals[int(q*float64(len(vals)))-1]
		if d := float64(got[i]-exact) / float64(exact); d < 0 || d > 0.02 {
			t.Errorf("p%g: %s, exact %s (%.2f%% off)", q*100, got[i], exact, d*100)
		}
	}
	if got[3] != vals[len(vals)-1] {
		t.Errorf("max %s, want %s", got[3], vals[len(vals)-1])
	}
	// Bucket bounds are contiguous and monotonic.
	for v := int64(0); v < 1<<20; v += 1 + v/97 {
		b := bucketOf(v)
		if v > bucketHigh(b) || (b > 0 && v <= bucketHigh(b-1)) {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, b, bucketHigh(b-1)+1, bucketHigh(b))
		}
	}
	var empty histogram
	if q := empty.quantiles(0.5); q[0] != 0 {
		t.Errorf("empty histogram p50 %s", q[0])
	}
}

// TestPlanReproducible: the same seed draws the same sessions, another seed others.
func TestPlanReproducible(t *testing.T) {
	o := Options{SKUs: []SKU{{ID: "a"}, {ID: "b"}, {ID: "c"}}, Profile: Spike, Users: 1000, BotShare: 0.1,
		RepeatShare: 0.2, PayShare: 0.7, Seed: 99}
	draw := func(o Options) []session {
		p := newPlanner(&o)
		var out []session
		for {
			s, ok := p.next()
			if !ok {
				return out
			}
			out = append(out, s)
		}
	}
	a, b := draw(o), draw(o)
	if len(a) != 1100 || !slices.Equal(a, b) {
		t.Fatalf("same seed, different plans (%d, %d sessions)", len(a), len(b))
	}
	var users []int
	var bots, pays int
	for _, s := range a {
		if s.kind == buyer {
			users = append(users, s.index)
			if s.pays {
				pays++
			}
		} else {
			bots++
		}
	}
	sort.Ints(users)
	if bots != 100 || len(users) != 1000 || users[0] != 0 || users[999] != 999 || pays < 600 || pays > 800 {
		t.Errorf("plan: %d bots, %d buyers, %d pay", bots, len(users), pays)
	}
	o.Seed = 100
	if slices.Equal(draw(o), a) {
		t.Error("another seed drew the same plan")
	}
	// Sustained: buyers cycle through the users.
	o.Profile = Sustained
	p := newPlanner(&o)
	seen := map[int]int{}
	for range 3000 {
		s, _ := p.next()
		if s.kind == buyer {
			seen[s.index]++
		}
	}
	if len(seen) != 1000 {
		t.Errorf("sustained plan used %d distinct users, want 1000", len(seen))
	}
}

func TestParseSKUs(t *testing.T) {
	got, err := ParseSKUs("1001:5000:2, 1002:7,1003")
	want := []SKU{{ID: "1001", Stock: 5000, PerUserLimit: 2}, {ID: "1002", Stock: 7}, {ID: "1003", Stock: -1}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %+v, %v", got, err)
	}
	for _, bad := range []string{"a:b", "a:1:0", "a,a", ":1", "a:1:2:3"} {
		if _, err := ParseSKUs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPacerRate(t *testing.T) {
	p := newPacer(2000)
	start := time.Now()
	for range 400 {
		if err := p.wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 180*time.Millisecond || el > 600*time.Millisecond {
		t.Errorf("400 requests at 2000/s took %s, want about 200ms", el)
	}
}

func TestForgedTokenShape(t *testing.T) {
	tok := forgedToken(12345)
	parts := 0
	for _, c := range tok {
		if c == '.' {
			parts++
		}
	}
	if parts != 4 || len(tok) != len("v1.0badc0de.")+len("1k4fnc6ps")+1+22+1+43 {
		t.Errorf("forged token %q (len %d)", tok, len(tok))
	}
	if forgedToken(1) == forgedToken(2) {
		t.Error("forged tokens do not vary")
	}
}

// TestCheckHammer: only a bot served every request proves a missing limit;
// one refused before the limiter (paused, sold out) proves nothing.
func TestCheckHammer(t *testing.T) {
	o := &Options{HammerRequests: 50, Sale: &v1alpha1.FlashSale{}}
	o.Sale.Spec.RateLimit.PerUserPerSecond = 5
	for _, tc := range []struct {
		name                                 string
		throttled, unthrottled, inconclusive int64
		want                                 string
	}{
		{"all throttled", 3, 0, 0, Pass},
		{"paused bots excused", 3, 0, 2, Pass},
		{"one served every request", 3, 1, 0, Fail},
		{"none reached the limiter", 0, 0, 4, Skip},
	} {
		l := newLedger()
		b := &l.bots[botHammer]
		b.throttled, b.unthrottled, b.inconclusive = tc.throttled, tc.unthrottled, tc.inconclusive
		b.sessions = tc.throttled + tc.unthrottled + tc.inconclusive
		if got := checkHammer(l, o); got.Status != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.name, got.Status, got.Detail, tc.want)
		}
	}
}
