// Package queue is the waiting room of a sale with spec.queue, in Redis.
//
// A buyer joins once and keeps one place however often they join again.
// Whoever joins before the start draws a uniformly random place score in
// [0, 2^52), so everybody who came early is shuffled; whoever joins after
// the start gets 2^52 + an arrival number, behind all of them, in arrival
// order. A place is a rank (ZRANK, 0-based) in the queue's sorted set.
//
// Admission goes by rank: the first A ranks have been admitted (A is the
// meta field "admitted"). An admission is a session: the admitted buyer may
// fetch path tokens while it is live, that is while it is in the admissions
// set and younger than the admission TTL. After the TTL the admission
// lapses; Done ends it when it is used (the buyer bought, or was refused
// for good), and Shorten makes it lapse soon (the buyer was refused one
// item but may still choose another). A lapsed or used admission fetches
// no token (Place.Live), and it is not given again: the buyer's rank stays
// below A.
//
// Every seckill pod calls Admit about every 100 ms; admit.lua admits the
// next ranks under a token bucket kept in Redis (so the rate is sale-wide
// whatever the pod count) and under a budget: never more outstanding (live)
// admissions than remaining stock times overbook. Done frees budget at once,
// Shorten after a short grace.
//
// With Config.RedisClock the scripts take "now" from Redis's clock, one for
// every pod, so that a pod whose clock runs ahead neither admits before the
// start, nor ends the shuffle early, nor stalls the token bucket.
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

//go:embed join.lua
var joinSource string

//go:embed admit.lua
var admitSource string

//go:embed shorten.lua
var shortenSource string

var (
	joinScript    = redis.NewScript(joinSource)
	admitScript   = redis.NewScript(admitSource)
	shortenScript = redis.NewScript(shortenSource)
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
	// AdmissionTTL is how long an admission lives: until it is used or this
	// old it counts as outstanding and opens /token; after it, it lapses.
	AdmissionTTL time.Duration
	// RedisClock makes Join and Admit take "now" from Redis (TIME) instead
	// of the caller's now: the place scores, the token bucket, admission
	// times and the before-start decisions then follow one clock whatever
	// the pods' clocks say. Set it in production (a real clock); tests with
	// a fake clock leave it off and pass their now.
	RedisClock bool
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
	for _, s := range []*redis.Script{joinScript, admitScript, shortenScript} {
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
	// AdmittedAt is when the user's admission began, zero when they hold no
	// outstanding admission (never admitted, used, or dropped after the TTL).
	// For a shortened admission (Shorten) it is moved back: the admission
	// lapses AdmissionTTL after it, as any other.
	AdmittedAt time.Time
}

// IsAdmitted says the user's place was reached: queued within the admitted
// ranks. Whether they may still fetch tokens is Live.
func (p Place) IsAdmitted() bool { return p.Queued && p.Rank < p.Admitted }

// Live says the user holds a live admission at now: admitted, not used,
// and younger than ttl. Only a live admission fetches path tokens.
func (p Place) Live(now time.Time, ttl time.Duration) bool {
	return p.IsAdmitted() && !p.AdmittedAt.IsZero() && now.Sub(p.AdmittedAt) < ttl
}

// admittedAt converts an admission score (ms; negative: none).
func admittedAt(ms int64) time.Time {
	if ms < 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// redisClock is the scripts' flag for Config.RedisClock.
func (q *Queue) redisClock() string {
	if q.cfg.RedisClock {
		return "1"
	}
	return "0"
}

// Ahead is how many not yet admitted are before the user (0 once admitted).
func (p Place) Ahead() int64 {
	if !p.Queued || p.Rank < p.Admitted {
		return 0
	}
	return p.Rank - p.Admitted
}

// Join gives user a place (the same one when they joined before). now is
// the pod's clock (Redis's with Config.RedisClock): before the start, the
// place is drawn at random.
func (q *Queue) Join(ctx context.Context, user string, now time.Time) (Place, error) {
	var b [8]byte
	rand.Read(b[:]) // never fails (Go >= 1.24)
	// A uniform integer in [0, 2^52): exact as a Redis score (a float64).
	random := binary.BigEndian.Uint64(b[:]) >> 12
	vals, err := joinScript.Run(ctx, q.rdb, []string{q.k.Queue, q.k.QueueMeta, q.k.Joined, q.k.Admissions},
		user, now.UnixMilli(), q.cfg.Start.UnixMilli(), strconv.FormatUint(random, 10), q.redisClock()).Int64Slice()
	if err != nil {
		return Place{}, fmt.Errorf("join queue: %w", err)
	}
	if len(vals) != 5 {
		return Place{}, fmt.Errorf("join queue: want 5 values, got %v", vals)
	}
	if vals[0] < 0 {
		return Place{}, ErrNotWarmed
	}
	return Place{Queued: true, New: vals[0] == 1, Rank: vals[1], Admitted: vals[2], Length: vals[3],
		AdmittedAt: admittedAt(vals[4])}, nil
}

// Position reads user's place and admission in one round trip (Queued
// false: not in the queue).
func (q *Queue) Position(ctx context.Context, user string) (Place, error) {
	var rank *redis.IntCmd
	var admitted *redis.StringCmd
	var length *redis.IntCmd
	var at *redis.FloatCmd
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		rank = p.ZRank(ctx, q.k.Queue, user)
		admitted = p.HGet(ctx, q.k.QueueMeta, "admitted")
		length = p.ZCard(ctx, q.k.Queue)
		at = p.ZScore(ctx, q.k.Admissions, user)
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
	if at.Err() == nil {
		p.AdmittedAt = admittedAt(int64(at.Val()))
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
// before the start. It is AdmitFloor with no floor: right only when the
// stock figure cannot be older than the outstanding admissions (a single
// caller that frees admissions itself, as the tests are); the seckill
// pods' admitter uses AdmitFloor.
func (q *Queue) Admit(ctx context.Context, now time.Time, remaining int64) (Step, error) {
	return q.AdmitFloor(ctx, now, remaining, 0)
}

// AdmitFloor is Admit for a caller that read floor = Outstanding() before it
// read the stock: the budget counts at least floor outstanding admissions.
// Another pod's Done between the two reads frees an admission whose
// purchase took a unit the stock figure may still count; without the floor
// that unit would be counted twice (once free in the stock, once free in the
// budget) and admission would run ahead of the stock.
func (q *Queue) AdmitFloor(ctx context.Context, now time.Time, remaining, floor int64) (Step, error) {
	if q.cfg.AdmitPerSecond <= 0 || q.cfg.AdmissionTTL <= 0 {
		return Step{}, fmt.Errorf("admit: invalid queue config %+v", q.cfg)
	}
	vals, err := admitScript.Run(ctx, q.rdb, []string{q.k.Queue, q.k.QueueMeta, q.k.Admissions, q.k.Joined},
		now.UnixMilli(), q.cfg.Start.UnixMilli(), budget(remaining, q.cfg.Overbook),
		strconv.FormatFloat(q.cfg.AdmitPerSecond, 'f', -1, 64), q.cfg.AdmissionTTL.Milliseconds(),
		MaxAdmitPerCall, q.redisClock(), max(floor, 0)).Int64Slice()
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

// Outstanding is the number of admissions in the admissions set (those
// older than the TTL included until the next Admit drops them): the floor
// a caller passes to AdmitFloor, read before the stock.
func (q *Queue) Outstanding(ctx context.Context) (int64, error) {
	n, err := q.rdb.ZCard(ctx, q.k.Admissions).Result()
	if err != nil {
		return 0, fmt.Errorf("queue outstanding: %w", err)
	}
	return n, nil
}

// doneChunk bounds the users of one ZREM or shorten call, so that a large
// batch (a pod that could not reach Redis for a while) never makes one long
// command.
const doneChunk = 1000

// inChunks calls f with users doneChunk at a time, stopping at an error.
func inChunks(users []string, f func(chunk []string) error) error {
	for len(users) > 0 {
		n := min(len(users), doneChunk)
		if err := f(users[:n]); err != nil {
			return err
		}
		users = users[n:]
	}
	return nil
}

// Done ends the admissions of users who used them (bought, or were refused
// for good): they fetch no more tokens, and their share of the budget goes
// to the next in line at once. Users not outstanding are ignored.
func (q *Queue) Done(ctx context.Context, users ...string) error {
	return inChunks(users, func(chunk []string) error {
		members := make([]any, len(chunk))
		for i, u := range chunk {
			members[i] = u
		}
		if err := q.rdb.ZRem(ctx, q.k.Admissions, members...).Err(); err != nil {
			return fmt.Errorf("queue done: %w", err)
		}
		return nil
	})
}

// Shorten makes the admissions of users lapse grace from now (Redis's clock
// with Config.RedisClock), unless they lapse sooner anyway: a buyer refused
// one item (SOLD_OUT of one SKU, or its per-user limit) may still choose
// another for a little while, and one who leaves frees the budget soon
// instead of holding it for the whole TTL. It never lengthens an admission
// and never gives one: users without an outstanding admission are ignored.
// A grace longer than the TTL changes nothing.
func (q *Queue) Shorten(ctx context.Context, now time.Time, grace time.Duration, users ...string) error {
	if q.cfg.AdmissionTTL <= 0 {
		return fmt.Errorf("shorten admissions: invalid queue config %+v", q.cfg)
	}
	grace = min(max(grace, 0), q.cfg.AdmissionTTL)
	return inChunks(users, func(chunk []string) error {
		args := make([]any, 0, 4+len(chunk))
		args = append(args, now.UnixMilli(), q.redisClock(), grace.Milliseconds(), q.cfg.AdmissionTTL.Milliseconds())
		for _, u := range chunk {
			args = append(args, u)
		}
		if err := shortenScript.Run(ctx, q.rdb, []string{q.k.Admissions}, args...).Err(); err != nil {
			return fmt.Errorf("shorten admissions: %w", err)
		}
		return nil
	})
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
