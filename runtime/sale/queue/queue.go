// Package queue is the waiting room of a sale with spec.queue, in Redis.
//
// A buyer joins once and keeps one place however often they join again.
// Whoever joins before the start draws a uniformly random place score in
// [0, 2^52), so everybody who came early is shuffled; whoever joins after
// the start gets 2^52 + an arrival number, behind all of them, in arrival
// order. A place is a rank (ZRANK, 0-based) in the queue's sorted set.
//
// Admission goes by rank: the first A ranks are admitted (A is the meta
// field "admitted") and an admission is never revoked. Every seckill pod
// calls Admit about every 100 ms; admit.lua admits the next ranks under a
// token bucket kept in Redis (so the rate is sale-wide whatever the pod
// count) and under a budget: never more outstanding admissions (admitted,
// not yet done, younger than the admission TTL) than remaining stock times
// overbook. Done tells the queue that admitted buyers have used their
// admission (bought, or were refused), freeing budget at once.
//
// All keys share the sale-wide hash tag (keys.ForSale), so the scripts run
// on one shard of a Redis Cluster.
package queue

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

// ErrNotWarmed means the queue's meta hash is absent: the sale was not
// warmed (Init), or was torn down.
var ErrNotWarmed = errors.New("queue: not warmed")

// MaxAdmitPerCall bounds how many one Admit call admits, whatever the rate,
// so that one call stays short however long the queue (the work is
// O(log N + n)); tokens left over stay in the bucket for the next call.
const MaxAdmitPerCall = 5000

// postStartBase is 2^52, the first score of a joiner after the start: every
// random pre-start score is below it, and 2^52 + n is exact in a float64.
const postStartBase = 1 << 52

//go:embed join.lua
var joinSource string

//go:embed admit.lua
var admitSource string

var (
	joinScript  = redis.NewScript(joinSource)
	admitScript = redis.NewScript(admitSource)
)

// Config is what the queue needs of the sale's spec.
type Config struct {
	// Start is the sale's start: joiners before it are shuffled, and nobody
	// is admitted before it.
	Start time.Time
	// AdmitPerSecond is the sale-wide admission rate (burst: one second).
	AdmitPerSecond float64
	// Overbook multiplies the remaining stock into the admission budget
	// (values below 1 count as 1).
	Overbook float64
	// AdmissionTTL is how long an admission counts as outstanding.
	AdmissionTTL time.Duration
}

// ConfigOf returns the queue configuration of sale, false when it has no
// spec.queue.
func ConfigOf(sale *v1alpha1.FlashSale) (Config, bool) {
	q := sale.Spec.Queue
	if q == nil {
		return Config{}, false
	}
	return Config{
		Start:          sale.Spec.StartTime.Time,
		AdmitPerSecond: float64(q.AdmitPerSecond),
		Overbook:       sale.Overbook(),
		AdmissionTTL:   sale.AdmissionTTL(),
	}, true
}

// Queue is the waiting room of one sale. Safe for concurrent use.
type Queue struct {
	rdb redis.UniversalClient
	k   keys.Sale
	cfg Config
}

// New returns the queue of sale saleKey ("namespace/name").
func New(rdb redis.UniversalClient, saleKey string, cfg Config) *Queue {
	return &Queue{rdb: rdb, k: keys.ForSale(saleKey), cfg: cfg}
}

// Load loads the scripts into Redis (every master of a cluster). Optional:
// the calls fall back to EVAL when a script is not cached.
func (q *Queue) Load(ctx context.Context) error {
	for _, s := range []*redis.Script{joinScript, admitScript} {
		if err := s.Load(ctx, q.rdb).Err(); err != nil {
			return fmt.Errorf("load queue scripts: %w", err)
		}
	}
	return nil
}

// Init creates the queue of sale saleKey at warm-up. It is idempotent and
// never resets a live queue: it only sets the fields that are missing.
func Init(ctx context.Context, rdb redis.UniversalClient, saleKey string) error {
	meta := keys.ForSale(saleKey).QueueMeta
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, meta, "admitted", 0)
		p.HSetNX(ctx, meta, "seq", 0)
		return nil
	})
	if err != nil {
		return fmt.Errorf("init queue of sale %s: %w", saleKey, err)
	}
	return nil
}

// Place is a user's place in the queue.
type Place struct {
	// Queued says the user holds a place (false: never joined).
	Queued bool
	// New says this Join gave the place (false: the user had it already).
	New bool
	// Rank is the place, 0-based. Before the start it may still move (the
	// early joiners are shuffled as they come); from the start it is fixed.
	Rank int64
	// Admitted is how many are admitted: the first Admitted ranks.
	Admitted int64
	// Length is how many hold a place.
	Length int64
}

// IsAdmitted says the user may buy: queued within the admitted ranks.
func (p Place) IsAdmitted() bool { return p.Queued && p.Rank < p.Admitted }

// Ahead is how many not yet admitted are before the user (0 once admitted).
func (p Place) Ahead() int64 {
	if !p.Queued || p.Rank < p.Admitted {
		return 0
	}
	return p.Rank - p.Admitted
}

// Join gives user a place (the same one when they joined before). now is
// the pod's clock: before the start, the place is drawn at random.
func (q *Queue) Join(ctx context.Context, user string, now time.Time) (Place, error) {
	var b [8]byte
	rand.Read(b[:]) // never fails (Go >= 1.24)
	// A uniform integer in [0, 2^52): exact as a Redis score (a float64).
	random := binary.BigEndian.Uint64(b[:]) >> 12
	vals, err := joinScript.Run(ctx, q.rdb, []string{q.k.Queue, q.k.QueueMeta, q.k.Joined},
		user, now.UnixMilli(), q.cfg.Start.UnixMilli(), strconv.FormatUint(random, 10)).Int64Slice()
	if err != nil {
		return Place{}, fmt.Errorf("join queue: %w", err)
	}
	if len(vals) != 4 {
		return Place{}, fmt.Errorf("join queue: want 4 values, got %v", vals)
	}
	if vals[0] < 0 {
		return Place{}, ErrNotWarmed
	}
	return Place{Queued: true, New: vals[0] == 1, Rank: vals[1], Admitted: vals[2], Length: vals[3]}, nil
}

// Position reads user's place in one round trip (Queued false: not in the
// queue).
func (q *Queue) Position(ctx context.Context, user string) (Place, error) {
	var rank *redis.IntCmd
	var admitted *redis.StringCmd
	var length *redis.IntCmd
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		rank = p.ZRank(ctx, q.k.Queue, user)
		admitted = p.HGet(ctx, q.k.QueueMeta, "admitted")
		length = p.ZCard(ctx, q.k.Queue)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Place{}, fmt.Errorf("queue position: %w", err)
	}
	if errors.Is(admitted.Err(), redis.Nil) {
		return Place{}, ErrNotWarmed
	}
	a, err := strconv.ParseInt(admitted.Val(), 10, 64)
	if err != nil {
		return Place{}, fmt.Errorf("queue position: admitted %q: %w", admitted.Val(), err)
	}
	p := Place{Admitted: a, Length: length.Val()}
	if rank.Err() == nil {
		p.Queued, p.Rank = true, rank.Val()
	}
	return p, nil
}

// Step is what one Admit call did and saw.
type Step struct {
	// Admitted is how many are admitted in all; New how many this call admitted.
	Admitted, New int64
	// Length is how many hold a place; Outstanding the admissions still
	// counted against the budget.
	Length, Outstanding int64
	// Waits are the times from join to admission of the New admitted.
	Waits []time.Duration
}

// Admit admits the next ticket holders at now, given the sale's remaining
// stock (the sum over SKUs; 0 or less when sold out). Nothing is admitted
// before the start.
func (q *Queue) Admit(ctx context.Context, now time.Time, remaining int64) (Step, error) {
	if q.cfg.AdmitPerSecond <= 0 || q.cfg.AdmissionTTL <= 0 {
		return Step{}, fmt.Errorf("admit: invalid queue config %+v", q.cfg)
	}
	vals, err := admitScript.Run(ctx, q.rdb, []string{q.k.Queue, q.k.QueueMeta, q.k.Admissions, q.k.Joined},
		now.UnixMilli(), q.cfg.Start.UnixMilli(), budget(remaining, q.cfg.Overbook),
		strconv.FormatFloat(q.cfg.AdmitPerSecond, 'f', -1, 64), q.cfg.AdmissionTTL.Milliseconds(),
		MaxAdmitPerCall).Int64Slice()
	if err != nil {
		return Step{}, fmt.Errorf("admit: %w", err)
	}
	if len(vals) < 5 || int64(len(vals)) != 5+vals[2] {
		return Step{}, fmt.Errorf("admit: unexpected reply %v", vals)
	}
	if vals[0] < 0 {
		return Step{}, ErrNotWarmed
	}
	s := Step{Admitted: vals[1], New: vals[2], Length: vals[3], Outstanding: vals[4]}
	for _, ms := range vals[5:] {
		s.Waits = append(s.Waits, time.Duration(ms)*time.Millisecond)
	}
	return s, nil
}

// budget is floor(remaining * overbook), 0 when nothing remains. The small
// epsilon keeps a product such as 29 * 1.1 (31.900000000000002 or
// 31.899999999999999) from losing a unit to binary rounding.
func budget(remaining int64, overbook float64) int64 {
	if remaining <= 0 {
		return 0
	}
	if overbook < 1 {
		overbook = 1
	}
	return int64(math.Floor(float64(remaining)*overbook + 1e-6))
}

// Done releases the admissions of users who used them (bought, or were
// refused for good), so their share of the budget goes to the next in line
// at once. Users not outstanding are ignored.
func (q *Queue) Done(ctx context.Context, users ...string) error {
	if len(users) == 0 {
		return nil
	}
	members := make([]any, len(users))
	for i, u := range users {
		members[i] = u
	}
	if err := q.rdb.ZRem(ctx, q.k.Admissions, members...).Err(); err != nil {
		return fmt.Errorf("queue done: %w", err)
	}
	return nil
}

// Figures are a queue's counts (status.queue).
type Figures struct {
	// Joined is the number of places given (one per user).
	Joined int64
	// Waiting is the number not admitted yet.
	Waiting int64
	// Admitted is the number admitted so far.
	Admitted int64
	// Outstanding is the admissions still counted against the budget (as of
	// the last Admit, which drops those older than the TTL).
	Outstanding int64
}

// Read returns the figures of the queue of sale saleKey; exists is false
// when the queue was never initialised (or was torn down).
func Read(ctx context.Context, rdb redis.UniversalClient, saleKey string) (Figures, bool, error) {
	k := keys.ForSale(saleKey)
	var joined, outstanding *redis.IntCmd
	var admitted *redis.StringCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		joined = p.ZCard(ctx, k.Queue)
		admitted = p.HGet(ctx, k.QueueMeta, "admitted")
		outstanding = p.ZCard(ctx, k.Admissions)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Figures{}, false, fmt.Errorf("read queue of sale %s: %w", saleKey, err)
	}
	if errors.Is(admitted.Err(), redis.Nil) {
		return Figures{}, false, nil
	}
	a, err := strconv.ParseInt(admitted.Val(), 10, 64)
	if err != nil {
		return Figures{}, true, fmt.Errorf("read queue of sale %s: admitted %q: %w", saleKey, admitted.Val(), err)
	}
	f := Figures{Joined: joined.Val(), Admitted: a, Outstanding: outstanding.Val()}
	f.Waiting = max(f.Joined-a, 0)
	return f, true, nil
}
