package loadtest

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// kind of session.
type kind uint8

const (
	buyer kind = iota
	// botForged purchases with a well-formed token signed by no known key.
	botForged
	// botNoToken purchases without asking for a token.
	botNoToken
	// botBorrowed purchases with a genuine token issued to another user.
	botBorrowed
	// botHammer fires token requests back to back, far over the per-user rate.
	botHammer
	// The waiting room's bots, drawn only for a queued sale:
	// botForgedTicket presents a ticket of its own making (its genuine
	// ticket's key id, a MAC of its own) to the wait and token endpoints;
	botForgedTicket
	// botBorrowedTicket presents a genuine ticket issued to another user.
	botBorrowedTicket
	numKinds
)

// numPlainKinds ends the kinds drawn for a sale without a waiting room.
const numPlainKinds = botHammer + 1

var kindNames = [numKinds]string{"buyer", "forged-token", "no-token", "borrowed-token", "hammer", "forged-ticket", "borrowed-ticket"}

func (k kind) String() string { return kindNames[k] }

// session is one arrival: a buyer's whole flow or one bot's attack. Every
// choice is made when the plan is drawn, from the seed, so a run is
// reproducible whatever the scheduling.
type session struct {
	kind   kind
	index  int // buyer: user index; bot: bot index
	sku    int
	pays   bool
	repeat bool
	// A queued sale's buyers: rejoin joins the waiting room again (a double
	// click, and once more after the wait: the same ticket both times);
	// probe asks for a path token before admission (must be refused).
	rejoin bool
	probe  bool
	// think is how long an admitted buyer takes to click "buy".
	think time.Duration
	noise uint64 // for the bot's forged token or ticket
}

// planner draws sessions from one seeded generator.
type planner struct {
	rng         *rand.Rand
	o           *Options
	buyers      int
	bots        int
	botChance   float64 // sustained: chance that an arrival is a bot
	spikeOrder  []session
	spikeCursor int
}

func newPlanner(o *Options) *planner {
	p := &planner{
		rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), //nolint:gosec // a reproducible load plan, not a secret
		o:   o,
	}
	p.botChance = o.BotShare / (1 + o.BotShare)
	if o.Profile == Spike {
		bots := int(float64(o.Users)*o.BotShare + 0.5)
		order := make([]session, 0, o.Users+bots)
		for i := range o.Users {
			order = append(order, p.buyerSession(i))
		}
		for i := range bots {
			order = append(order, p.botSession(i))
		}
		p.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		p.spikeOrder = order
	}
	return p
}

func (p *planner) buyerSession(user int) session {
	return session{
		kind:   buyer,
		index:  user,
		sku:    p.rng.IntN(len(p.o.SKUs)),
		pays:   p.rng.Float64() < p.o.PayShare,
		repeat: p.rng.Float64() < p.o.RepeatShare,
		rejoin: p.rng.Float64() < p.o.RejoinShare,
		probe:  p.rng.Float64() < p.o.ProbeShare,
		think:  time.Duration(p.rng.Float64() * float64(p.o.ThinkTime)),
	}
}

func (p *planner) botSession(i int) session {
	kinds := int(numPlainKinds)
	if p.o.queued {
		kinds = int(numKinds)
	}
	return session{
		kind:  kind(1 + p.rng.IntN(kinds-1)),
		index: i,
		sku:   p.rng.IntN(len(p.o.SKUs)),
		noise: p.rng.Uint64(),
	}
}

// total is the number of sessions of a spike (-1: open-ended).
func (p *planner) total() int {
	if p.spikeOrder != nil {
		return len(p.spikeOrder)
	}
	return -1
}

// next returns the next session; ok is false when a spike has sent all.
func (p *planner) next() (session, bool) {
	if p.o.Profile == Spike {
		if p.spikeCursor >= len(p.spikeOrder) {
			return session{}, false
		}
		s := p.spikeOrder[p.spikeCursor]
		p.spikeCursor++
		return s, true
	}
	if p.rng.Float64() < p.botChance {
		s := p.botSession(p.bots)
		p.bots++
		return s, true
	}
	// Sustained: buyers cycle through the users; one who comes back is
	// refused ALREADY_PURCHASED once they hold their limit.
	s := p.buyerSession(p.buyers % p.o.Users)
	p.buyers++
	return s, true
}

// Synthetic identities. Buyers come from 10.0.0.0/8, bots from the
// benchmarking network 198.18.0.0/15 (RFC 2544).
func (r *run) buyerID(i int) identity {
	return identity{user: r.o.UserPrefix + strconv.Itoa(i), ip: ip4(10, i)}
}

func (r *run) botID(i int, suffix string) identity {
	return identity{user: r.o.UserPrefix + "bot" + strconv.Itoa(i) + suffix, ip: ip4(198, 18<<16|i&0x1ffff)}
}

func ip4(a byte, i int) string {
	return strconv.Itoa(int(a)) + "." + strconv.Itoa((i>>16)&255) + "." + strconv.Itoa((i>>8)&255) + "." + strconv.Itoa(i&255)
}

// forgedToken has the shape of a genuine token (version, key id, expiry,
// 16-byte nonce, 32-byte MAC in base64url) signed by no key the API holds.
func forgedToken(noise uint64) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, 0, 100)
	b = append(b, "v1.0badc0de."...)
	b = strconv.AppendInt(b, 1<<42, 36)
	b = append(b, '.')
	x := noise | 1
	for i := range 22 + 1 + 43 {
		if i == 22 {
			b = append(b, '.')
			continue
		}
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		c := alphabet[x&63]
		if i == 21 || i == 22+1+42 {
			c = 'A' // the last character carries padding bits: keep them zero
		}
		b = append(b, c)
	}
	return string(b)
}

// forgedTicket replaces the MAC of a genuine ticket ("q1.<kid>.<mac>") with
// noise: the key id is one the API holds, the signature is not its. Without
// a genuine ticket (the bot could not join) the key id is made up too.
func forgedTicket(genuine string, noise uint64) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	prefix := "q1.0badc0de."
	if len(genuine) > len(prefix) && genuine[:3] == "q1." && genuine[11] == '.' {
		prefix = genuine[:12]
	}
	b := make([]byte, 0, len(prefix)+43)
	b = append(b, prefix...)
	x := noise | 1
	for i := range 43 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		c := alphabet[x&63]
		if i == 42 {
			c = 'A' // the last character carries padding bits: keep them zero
		}
		b = append(b, c)
	}
	return string(b)
}
