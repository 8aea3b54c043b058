package ratelimit

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// DefaultMaxKeys is the default cap on the number of per-user buckets and,
// separately, on the number of per-IP buckets of one Limiter.
const DefaultMaxKeys = 1_000_000

const (
	numShards  = 64
	sweepEvery = int64(time.Second)
	// maxInterval bounds the emission interval (one request per ~18 min at
	// the slowest) so that interval x burst never overflows int64.
	maxInterval = int64(1) << 40
)

// Limit names the limit that refused a request.
type Limit uint8

const (
	// None means no limit refused the request.
	None Limit = iota
	// Global is the sale-wide requestsPerSecond.
	Global
	// User is perUserPerSecond.
	User
	// IP is perIPPerSecond.
	IP
)

// String returns "global", "user", "ip", or "" for None.
func (l Limit) String() string {
	switch l {
	case Global:
		return "global"
	case User:
		return "user"
	case IP:
		return "ip"
	}
	return ""
}

// Decision is the answer of [Limiter.Allow].
type Decision struct {
	// Allowed is true when every limit admitted the request.
	Allowed bool
	// Limit is the limit that refused the request (None when allowed).
	Limit Limit
	// RetryAfter is how long until the refusing bucket has a token again,
	// rounded up to whole seconds and at least 1 s, ready for the HTTP
	// Retry-After header. Zero when allowed.
	RetryAfter time.Duration
}

// RetryAfterSeconds returns RetryAfter in whole seconds (the value of the
// Retry-After header), 0 when allowed.
func (d Decision) RetryAfterSeconds() int {
	return int(d.RetryAfter / time.Second)
}

// Rates are the limits of a whole sale (across all its seckill pods). A rate
// of zero or less means unlimited for that dimension. A burst of zero or less
// means the default: one second's worth of the rate, rounded up, at least 1.
type Rates struct {
	RequestsPerSecond float64
	Burst             int
	PerUserPerSecond  float64
	UserBurst         int
	PerIPPerSecond    float64
	IPBurst           int
}

// Option configures a Limiter.
type Option func(*Limiter)

// WithMaxKeys caps the number of per-user buckets and, separately, of per-IP
// buckets (default DefaultMaxKeys). n < numShards is raised to one per shard.
func WithMaxKeys(n int) Option {
	return func(l *Limiter) { l.maxKeys = n }
}

// Limiter enforces this pod's fair share of a sale's Rates. It is safe for
// concurrent use. Allow and AllowAddr do not allocate (beyond the amortised
// growth of a shard's map when new keys arrive).
type Limiter struct {
	clk     clock.PassiveClock
	seed    maphash.Seed
	maxKeys int

	mu    sync.Mutex // serialises SetRates/SetShare
	rates Rates
	share int

	p      atomic.Pointer[params]
	global gcra
	users  keyed
	ips    keyed
}

// New returns a Limiter for the given sale-wide rates with a share of 1 (this
// pod alone). A nil clk means the real clock.
func New(r Rates, clk clock.PassiveClock, opts ...Option) *Limiter {
	if clk == nil {
		clk = clock.RealClock{}
	}
	l := &Limiter{clk: clk, seed: maphash.MakeSeed(), maxKeys: DefaultMaxKeys, rates: r, share: 1}
	for _, o := range opts {
		o(l)
	}
	perShard := l.maxKeys / numShards
	if perShard < 1 {
		perShard = 1
	}
	l.users.init(perShard)
	l.ips.init(perShard)
	l.p.Store(computeParams(r, 1))
	return l
}

// SetShare rescales every bucket to this pod's fair share for n live seckill
// pods (n < 1 is treated as 1). Existing buckets follow at once.
func (l *Limiter) SetShare(n int) {
	if n < 1 {
		n = 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.share {
		return
	}
	l.share = n
	l.p.Store(computeParams(l.rates, n))
}

// Share returns the number of pods the limits are currently divided by.
func (l *Limiter) Share() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.share
}

// SetRates replaces the sale-wide rates (e.g. after the FlashSale spec
// changed), keeping the current share. Existing buckets follow at once.
func (l *Limiter) SetRates(r Rates) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rates = r
	l.p.Store(computeParams(r, l.share))
}

// Len returns the number of per-user and per-IP buckets currently held.
func (l *Limiter) Len() (users, ips int) {
	return l.users.len(), l.ips.len()
}

// Allow decides one request of user from ip. An empty user or ip is not
// limited in that dimension (identities are validated by the caller).
// The ip string is used as given: pass a canonical form (netip.Addr.String)
// or use AllowAddr.
func (l *Limiter) Allow(user, ip string) Decision {
	var uh, ih uint64
	if user != "" {
		uh = maphash.String(l.seed, user)
	}
	if ip != "" {
		ih = maphash.String(l.seed, ip)
	}
	return l.allow(user != "", uh, ip != "", ih)
}

// AllowAddr is Allow with the client address as a netip.Addr, keyed by
// IPKey: an IPv4 address (IPv4-mapped IPv6 included) on its own, an IPv6
// address by its /64. An invalid ip is not limited in the IP dimension.
func (l *Limiter) AllowAddr(user string, ip netip.Addr) Decision {
	var uh, ih uint64
	if user != "" {
		uh = maphash.String(l.seed, user)
	}
	hasIP := ip.IsValid()
	if hasIP {
		b := IPKey(ip).As16()
		ih = maphash.Bytes(l.seed, b[:])
	}
	return l.allow(user != "", uh, hasIP, ih)
}

// IPv6Prefix is the prefix length one IPv6 client is counted by: a /64 is
// the smallest block an ISP hands a home or a phone, and a host picks any of
// its 2^64 addresses at will (privacy addresses), so keying by the full /128
// would give one client as many buckets as it cares to use.
const IPv6Prefix = 64

// IPKey is the address the per-IP limit counts ip by: an IPv4 address
// (IPv4-mapped IPv6 included) as is, an IPv6 address as its /64 (zone dropped).
func IPKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is4() || !ip.IsValid() {
		return ip
	}
	p, _ := ip.WithZone("").Prefix(IPv6Prefix)
	return p.Addr()
}

func (l *Limiter) allow(hasUser bool, uh uint64, hasIP bool, ih uint64) Decision {
	p := l.p.Load()
	now := l.clk.Now().UnixNano()

	userTaken := false
	if hasUser && !p.user.unlimited {
		ok, wait := l.users.take(uh, now, p.user)
		if !ok {
			return refuse(User, wait)
		}
		userTaken = true
	}
	ipTaken := false
	if hasIP && !p.ip.unlimited {
		ok, wait := l.ips.take(ih, now, p.ip)
		if !ok {
			if userTaken {
				l.users.refund(uh, p.user)
			}
			return refuse(IP, wait)
		}
		ipTaken = true
	}
	if !p.global.unlimited {
		ok, wait := l.global.take(now, p.global)
		if !ok {
			if userTaken {
				l.users.refund(uh, p.user)
			}
			if ipTaken {
				l.ips.refund(ih, p.ip)
			}
			return refuse(Global, wait)
		}
	}
	return Decision{Allowed: true}
}

func refuse(lim Limit, wait int64) Decision {
	secs := (wait + int64(time.Second) - 1) / int64(time.Second)
	if secs < 1 {
		secs = 1
	}
	return Decision{Limit: lim, RetryAfter: time.Duration(secs) * time.Second}
}

// dim is the GCRA parameters of one dimension for this pod's share.
type dim struct {
	unlimited bool
	interval  int64 // ns between two tokens
	tolerance int64 // burst x interval
}

type params struct {
	global, user, ip dim
}

func computeParams(r Rates, share int) *params {
	return &params{
		global: computeDim(r.RequestsPerSecond, r.Burst, share, share),
		// A buyer's token+purchase pair must not trip a limit that a single
		// pod would allow, so per-key buckets keep the whole burst on every
		// pod and only their sustained rate is shared.
		user: computeDim(r.PerUserPerSecond, r.UserBurst, share, 1),
		ip:   computeDim(r.PerIPPerSecond, r.IPBurst, share, 1),
	}
}

// computeDim divides the rate by share and the burst by burstShare.
func computeDim(rate float64, burst, share, burstShare int) dim {
	if !(rate > 0) || math.IsInf(rate, 1) {
		return dim{unlimited: true}
	}
	if burst <= 0 {
		burst = int(math.Min(math.Ceil(rate), math.MaxInt32))
		if burst < 1 {
			burst = 1
		}
	}
	perRate := rate / float64(share)
	perBurst := burst / burstShare
	if perBurst < 1 {
		perBurst = 1
	}
	iv := float64(time.Second) / perRate
	interval := int64(iv)
	if iv > float64(maxInterval) {
		interval = maxInterval
	}
	if interval < 1 {
		interval = 1
	}
	tol := int64(perBurst) * interval
	if int64(perBurst) > math.MaxInt64/4/interval {
		tol = math.MaxInt64 / 4
	}
	return dim{interval: interval, tolerance: tol}
}

// gcra is a lock-free GCRA bucket: tat is the theoretical arrival time of
// the next request in Unix nanoseconds.
type gcra struct {
	_   [64]byte // keep the hot word on its own cache line
	tat atomic.Int64
	_   [56]byte
}

func (g *gcra) take(now int64, d dim) (bool, int64) {
	for {
		old := g.tat.Load()
		tat := max(old, now)
		next := tat + d.interval
		if wait := next - d.tolerance - now; wait > 0 {
			return false, wait
		}
		if g.tat.CompareAndSwap(old, next) {
			return true, 0
		}
	}
}

// keyed is a bounded, sharded map of GCRA buckets.
type keyed struct {
	perShard int
	shards   [numShards]shard
}

type shard struct {
	mu        sync.Mutex
	m         map[uint64]int64 // key hash -> TAT
	lastSweep int64
	_         [40]byte // pad to a cache line
}

func (k *keyed) init(perShard int) {
	k.perShard = perShard
	for i := range k.shards {
		k.shards[i].m = make(map[uint64]int64)
	}
}

func (k *keyed) len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (k *keyed) take(h uint64, now int64, d dim) (bool, int64) {
	s := &k.shards[h%numShards]
	s.mu.Lock()
	tat, found := s.m[h]
	if tat < now {
		tat = now
	}
	next := tat + d.interval
	if wait := next - d.tolerance - now; wait > 0 {
		s.mu.Unlock()
		return false, wait
	}
	if !found {
		s.makeRoom(now, k.perShard)
	}
	s.m[h] = next
	s.mu.Unlock()
	return true, 0
}

// refund gives back the token taken by the last take of h.
func (k *keyed) refund(h uint64, d dim) {
	s := &k.shards[h%numShards]
	s.mu.Lock()
	if tat, ok := s.m[h]; ok {
		s.m[h] = tat - d.interval
	}
	s.mu.Unlock()
}

// makeRoom runs before a new key is inserted: it sweeps refilled buckets at
// most once per sweepEvery, and evicts an arbitrary entry if the shard is
// still full. Called with s.mu held.
func (s *shard) makeRoom(now int64, perShard int) {
	if now-s.lastSweep >= sweepEvery || now < s.lastSweep {
		s.lastSweep = now
		for h, tat := range s.m {
			if tat <= now {
				delete(s.m, h)
			}
		}
	}
	if len(s.m) >= perShard {
		for h := range s.m { // map iteration starts at a random entry
			delete(s.m, h)
			if len(s.m) < perShard {
				break
			}
		}
	}
}
