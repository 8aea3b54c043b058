// Package buckets moves unsold stock between the buckets of a SKU split into
// buckets (spec.skus[].buckets), crash-safely, and owns the transfer records
// (keys.SKU.Outbox and Inbox).
//
// A transfer of m units from bucket s to bucket t is three steps, each one
// script or command on ONE bucket (one hash slot of a cluster):
//
//  1. give (give.lua, on s): take m' = min(m, stock) units out of s's stock
//     and initial and record them in s's outbox under a random transfer id;
//  2. take (take.lua, on t): unless t's inbox already has the id, add the m'
//     units to t, paying t's debt first, and record the id in t's inbox;
//  3. close (on s): mark the outbox record done ("-").
//
// A crash between steps leaves an open outbox record; Recover completes it
// (step 2 is idempotent by the inbox), and InFlight counts its units, so the
// conservation law holds per SKU at every instant:
//
//	declared stock = Σ_b (initial_b − debt_b) + InFlight
//
// A closed record stays, marked done ("-"): the client library sends a
// command again when its reply is lost, and a copy of a give may even reach
// Redis after the transfer completed (an earlier attempt delayed on a dead
// connection); a give finding the mark gives nothing twice. Marks and inbox
// records grow by one small field per transfer (a few per bucket that runs
// out) and go with the sale's keys at teardown.
//
// While a lowering of the SKU's stock is applied or owed, the buckets are
// held (hold.go): units flow only toward bucket 0, which owes the whole
// debt, and a unit returned to another bucket is forwarded there by a
// transfer record that the release script of package orderstate writes.
package buckets

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

var (
	//go:embed give.lua
	giveSource string
	//go:embed take.lua
	takeSource string

	giveScript = redis.NewScript(giveSource)
	takeScript = redis.NewScript(takeSource)
)

// between runs after steps 1 ("given") and 2 ("taken") of every transfer:
// tests crash there (cut the connection, kill the process).
var between = func(step string) {}

// closed is the value of an outbox record whose transfer is complete.
const closed = "-"

// all is "every unit" for a give: more than any stock.
const all = int64(1) << 50

// Move moves up to units unsold units from bucket from to bucket to of SKU
// sku of sale saleKey, split into n buckets, and returns how many it moved
// (fewer when from has fewer; 0 when it has none). Units taken into a bucket
// with debt pay the debt first. While from has a Hold and to is not bucket
// 0 it moves nothing and answers ErrHeld. On another error the transfer may
// be half-done: Recover completes it.
func Move(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n, from, to int, units int64) (int64, error) {
	if err := checkBuckets(n, from, to); err != nil {
		return 0, err
	}
	ks := keys.Buckets(saleKey, sku, n)
	return move(ctx, rdb, ks[from], ks[to], units)
}

func checkBuckets(n, from, to int) error {
	if from < 0 || from >= n || to < 0 || to >= n || from == to {
		return fmt.Errorf("buckets: cannot move from bucket %d to bucket %d of %d", from, to, n)
	}
	return nil
}

// ErrHeld is a move refused because the giving bucket has a Hold and the
// receiver is not bucket 0 (see Hold): it moved nothing.
var ErrHeld = errors.New("buckets: units flow only toward bucket 0 while a lowering is applied or owed")

// move runs the three steps of one transfer. A give refused by a Hold moves
// nothing and answers ErrHeld.
func move(ctx context.Context, rdb redis.UniversalClient, from, to keys.SKU, units int64) (int64, error) {
	if units <= 0 {
		return 0, nil
	}
	id, err := newID()
	if err != nil {
		return 0, err
	}
	m, err := giveScript.Run(ctx, rdb, []string{from.Stock, from.Initial, from.Outbox, from.Hold},
		id, units, to.Bucket).Int64()
	if err != nil {
		return 0, fmt.Errorf("buckets: give %d units of SKU %s from bucket %d: %w", units, from.ID, from.Bucket, err)
	}
	if m < 0 {
		return 0, ErrHeld
	}
	if m == 0 {
		return 0, nil
	}
	between("given")
	if _, err := complete(ctx, rdb, from, to, id, m); err != nil {
		return 0, err
	}
	return m, nil
}

// complete runs steps 2 and 3 of transfer id (m units from from to to) and
// says what this call took in: the units put on sale, the units that paid
// debt, and whether someone else had taken them in already.
func complete(ctx context.Context, rdb redis.UniversalClient, from, to keys.SKU, id string, m int64) (taken, error) {
	res, err := takeScript.Run(ctx, rdb, []string{to.Stock, to.Initial, to.Debt, to.Inbox}, id, m).Int64Slice()
	if err != nil || len(res) != 3 {
		return taken{}, fmt.Errorf("buckets: take transfer %s (%d units of SKU %s) into bucket %d: %v %w",
			id, m, to.ID, to.Bucket, res, err)
	}
	between("taken")
	if err := rdb.HSet(ctx, from.Outbox, id, closed).Err(); err != nil {
		return taken{}, fmt.Errorf("buckets: close transfer %s of SKU %s in bucket %d: %w", id, from.ID, from.Bucket, err)
	}
	return taken{onSale: res[0], paid: res[1], before: res[2] == 1}, nil
}

// taken is what one take (step 2) did.
type taken struct {
	onSale, paid int64
	// before: the receiver had taken the transfer in already (a retry, a
	// recovery racing); onSale and paid are then 0.
	before bool
}

// newID is a transfer id: 128 random bits, unique across pods and restarts
// without any coordination.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("buckets: transfer id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// record is an open outbox record: a transfer given and maybe not taken in.
type record struct {
	id    string
	from  int
	to    int
	units int64
}

// openRecords reads the open outbox records of every bucket (one pipelined
// round; a cluster client sends each bucket's read to its own shard).
func openRecords(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU) ([]record, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ks))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for b, k := range ks {
			cmds[b] = p.HGetAll(ctx, k.Outbox)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buckets: read transfer records: %w", err)
	}
	var out []record
	for b, c := range cmds {
		for id, v := range c.Val() {
			if v == closed {
				continue
			}
			r, err := parseRecord(id, b, v, len(ks))
			if err != nil {
				return nil, fmt.Errorf("buckets: SKU %s: %w", ks[b].ID, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func parseRecord(id string, from int, v string, n int) (record, error) {
	us, ts, ok := strings.Cut(v, " ")
	units, err1 := strconv.ParseInt(us, 10, 64)
	to, err2 := strconv.Atoi(ts)
	if !ok || err1 != nil || err2 != nil || units <= 0 || checkBuckets(n, from, to) != nil {
		return record{}, fmt.Errorf("transfer record %s of bucket %d is malformed: %q", id, from, v)
	}
	return record{id: id, from: from, to: to, units: units}, nil
}

// InFlight is the number of units of the SKU given by one bucket and not
// yet taken in by another: the conservation law counts them. A record whose
// units the receiver already took in (a crash before step 3) is not
// counted: those units are in the receiver's initial.
func InFlight(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) (int64, error) {
	ks := keys.Buckets(saleKey, sku, n)
	recs, err := openRecords(ctx, rdb, ks)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	taken := make([]*redis.BoolCmd, len(recs))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range recs {
			taken[i] = p.HExists(ctx, ks[r.to].Inbox, r.id)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("buckets: read the inboxes of SKU %s: %w", sku, err)
	}
	var sum int64
	for i, r := range recs {
		if !taken[i].Val() {
			sum += r.units
		}
	}
	return sum, nil
}

// Recover completes every transfer a crash left half-done (given, not yet
// taken in) among the SKU's n buckets and returns how many it took in
// itself (a transfer another caller completed at the same time is not
// counted, and its units are added once).
func Recover(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n int) (int, error) {
	return recoverAll(ctx, rdb, keys.Buckets(saleKey, sku, n))
}

func recoverAll(ctx context.Context, rdb redis.UniversalClient, ks []keys.SKU) (int, error) {
	recs, err := openRecords(ctx, rdb, ks)
	if err != nil {
		return 0, err
	}
	done := 0
	var errs []error
	for _, r := range recs {
		took, err := complete(ctx, rdb, ks[r.from], ks[r.to], r.id, r.units)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !took.before {
			done++
		}
	}
	return done, errors.Join(errs...)
}

// Gather moves every unsold unit of the SKU's n buckets into bucket to (a
// lowering of the stock takes them back from there) and returns how many.
// It completes half-done transfers first, so no unit in flight lands in
// another bucket afterwards.
func Gather(ctx context.Context, rdb redis.UniversalClient, saleKey, sku string, n, to int) (int64, error) {
	ks := keys.Buckets(saleKey, sku, n)
	if to < 0 || to >= len(ks) {
		return 0, fmt.Errorf("buckets: cannot gather into bucket %d of %d", to, n)
	}
	if _, err := recoverAll(ctx, rdb, ks); err != nil {
		return 0, err
	}
	var sum int64
	for b := range ks {
		if b == to {
			continue
		}
		m, err := move(ctx, rdb, ks[b], ks[to], all)
		sum += m
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}
