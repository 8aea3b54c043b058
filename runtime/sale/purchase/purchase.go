// Package purchase runs the atomic purchase script: check stock, check the
// user's limit, decrement, record the user, append the order to the SKU's
// stream and its payment deadline to the expiry set, all in one Redis call,
// for one purchase or a batch of concurrent purchases of one SKU bucket
// (Options.Batch, batch.go).
package purchase

import (
	"context"
	"crypto/sha1" //nolint:gosec // must match redis.sha1hex in the script; not used for security
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
)

//go:embed purchase.lua
var scriptSource string

// Source is the Lua source of the purchase script (for benchmarks that call it directly).
func Source() string { return scriptSource }

// SHA is the digest EVALSHA calls the script by.
func SHA() string {
	sum := sha1.Sum([]byte(scriptSource)) //nolint:gosec // Redis names scripts by SHA-1
	return hex.EncodeToString(sum[:])
}

// Outcome is what the script decided.
type Outcome int

// The outcomes of one purchase attempt.
const (
	// Admitted: stock was taken and the order queued.
	Admitted Outcome = iota
	// Replayed: this token already produced an order; the earlier order
	// number is returned. Nothing changed (the token's record is rewritten
	// as it was, so that a durability wait covers the earlier order).
	Replayed
	// SoldOut: no stock left; nothing changed.
	SoldOut
	// LimitReached: the user already holds perUserLimit units; nothing changed.
	LimitReached
	// NotWarmed: the SKU's stock counter does not exist; nothing changed.
	NotWarmed
	// NoOrder (Replay only): the token made no order; nothing changed.
	NoOrder
)

func (o Outcome) String() string {
	switch o {
	case Admitted:
		return "admitted"
	case Replayed:
		return "replayed"
	case SoldOut:
		return "sold_out"
	case LimitReached:
		return "limit_reached"
	case NotWarmed:
		return "not_warmed"
	case NoOrder:
		return "no_order"
	}
	return "unknown"
}

// Request is one purchase attempt, already authenticated and rate limited.
type Request struct {
	SKU string
	// Bucket is the bucket of SKU (split into Buckets buckets) the purchase
	// runs in: the buyer's home bucket (keys.Home). Zero values: a SKU that
	// is not split.
	Bucket, Buckets int
	User            string
	Limit           int32
	Amount          string
	// Nonce is the token's nonce: one token makes at most one order.
	Nonce string
	// Now and Deadline come from the pod's clock.
	Now      time.Time
	Deadline time.Time
}

// Result is the script's answer.
type Result struct {
	Outcome Outcome
	OrderNo string
	// Remaining is the stock left after the call; -1 when unknown.
	Remaining int64
}

// Observer receives the latency of every Redis call, for metrics.
type Observer func(op string, d time.Duration, err error)

// Script calls the purchase script of one sale.
type Script struct {
	loader  redis.UniversalClient // SCRIPT LOAD goes to every master
	exec    redis.Scripter        // EVALSHA goes through here (maybe an autopipeliner)
	saleKey string
	sha     string
	observe Observer
	batches *batcher // nil unless Options.Batch
}

// Options tune a Script.
type Options struct {
	// AutoPipeline coalesces concurrent purchases into pipelined Redis calls
	// (go-redis' autopipeliner): fewer syscalls on both ends under load.
	AutoPipeline bool
	// Batch coalesces concurrent purchases of one SKU bucket into one script
	// call (batch.go): far less Redis CPU per purchase under load, no wait
	// when alone. The script runs on a context of the batch's own: a caller
	// that needs something of the call's context (a durability ack) must not
	// batch.
	Batch   bool
	Observe Observer
}

// New returns the purchase script of sale saleKey ("namespace/name") on rdb.
func New(rdb redis.UniversalClient, saleKey string, opts Options) (*Script, error) {
	s := &Script{loader: rdb, exec: rdb, saleKey: saleKey, sha: SHA(), observe: opts.Observe}
	if s.observe == nil {
		s.observe = func(string, time.Duration, error) {}
	}
	if opts.AutoPipeline {
		ap, err := rdb.AutoPipeline()
		if err != nil {
			return nil, fmt.Errorf("start redis autopipeline: %w", err)
		}
		s.exec = ap
	}
	if opts.Batch {
		s.batches = newBatcher(s)
	}
	return s, nil
}

// Load loads the script into Redis (every master of a cluster).
func (s *Script) Load(ctx context.Context) error {
	return Load(ctx, s.loader)
}

// Load loads the purchase script into rdb (every master of a cluster).
func Load(ctx context.Context, rdb redis.UniversalClient) error {
	sha, err := rdb.ScriptLoad(ctx, scriptSource).Result()
	if err != nil {
		return fmt.Errorf("load purchase script: %w", err)
	}
	if sha != SHA() {
		return fmt.Errorf("load purchase script: redis named it %s, expected %s", sha, SHA())
	}
	return nil
}

// Purchase runs one purchase (in a batch of concurrent ones with
// Options.Batch). An error means the outcome is unknown (a timeout may hide
// an admitted order): the buyer retries with the same token and gets the
// same order back.
func (s *Script) Purchase(ctx context.Context, r Request) (Result, error) {
	if s.batches != nil {
		return s.batches.purchase(ctx, r)
	}
	res, err := s.run(ctx, []Request{r})
	if err != nil {
		return Result{}, err
	}
	return res[0], nil
}

// Call returns the script's keys and arguments for a batch of purchases of
// one bucket of one SKU of sale saleKey (for callers that pipeline EVALSHA
// themselves, such as benchmarks); the reply is 3 values per purchase.
func Call(saleKey string, batch []Request) (ks []string, args []any) {
	r0 := batch[0]
	k := keys.ForBucket(saleKey, r0.SKU, r0.Bucket, max(r0.Buckets, 1))
	ks = []string{k.Stock, k.Holders, k.Seq, k.Stream, k.Expiry, k.Orders, k.Tokens}
	args = make([]any, 3, 3+7*len(batch))
	args[0], args[1], args[2] = saleKey, r0.SKU, keys.OrderSuffix(r0.Bucket)
	for _, r := range batch {
		// The user's first order number, computed here: SHA-1 in Lua is one
		// of the script's dearest steps, and most buyers buy once.
		args = append(args, r.Nonce, r.User, int64(r.Limit), r.Now.UnixMilli(), r.Deadline.UnixMilli(), r.Amount,
			OrderNo(saleKey, r.SKU, r.User, 1, r.Bucket))
	}
	return ks, args
}

// run calls the script once for a batch of purchases of one bucket of one
// SKU and returns one result per purchase, in order.
func (s *Script) run(ctx context.Context, batch []Request) ([]Result, error) {
	ks, args := Call(s.saleKey, batch)
	start := time.Now()
	res, err := s.exec.EvalSha(ctx, s.sha, ks, args...).Slice()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis lost its script cache (restart, failover, SCRIPT FLUSH): the
		// call did not run, so loading and calling again is safe.
		s.observe("script_load", time.Since(start), nil)
		if lerr := s.Load(ctx); lerr != nil {
			s.observe("evalsha", time.Since(start), lerr)
			return nil, lerr
		}
		res, err = s.exec.EvalSha(ctx, s.sha, ks, args...).Slice()
	}
	s.observe("evalsha", time.Since(start), err)
	if err != nil {
		return nil, fmt.Errorf("purchase script: %w", err)
	}
	if len(res) != 3*len(batch) {
		return nil, fmt.Errorf("purchase script: want %d values, got %d", 3*len(batch), len(res))
	}
	out := make([]Result, len(batch))
	for i := range out {
		if out[i], err = parse(res[3*i : 3*i+3]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func parse(res []any) (Result, error) {
	if len(res) != 3 {
		return Result{}, fmt.Errorf("purchase script: want 3 values, got %d", len(res))
	}
	status, _ := res[0].(string)
	orderNo, _ := res[1].(string)
	left, ok := res[2].(int64)
	if !ok {
		return Result{}, errors.New("purchase script: remaining is not an integer")
	}
	r := Result{OrderNo: orderNo, Remaining: left}
	switch status {
	case "OK":
		r.Outcome = Admitted
	case "REPLAY":
		r.Outcome = Replayed
	case "SOLD_OUT":
		r.Outcome = SoldOut
	case "LIMIT":
		r.Outcome = LimitReached
	case "NOT_WARMED":
		r.Outcome = NotWarmed
	case "NONE": // replay.lua: the token made no order
		r.Outcome = NoOrder
	default:
		return Result{}, fmt.Errorf("purchase script: unknown status %q", status)
	}
	return r, nil
}

// OrderNo is the order number the script gives the n-th purchase of user on
// sku of sale, admitted by bucket bucket of the SKU: the SKU id, '-', 24 hex
// digits of SHA-1 over the four, and the bucket's mark (keys.OrderSuffix;
// none for bucket 0). The SKU comes first so an order can be found from its
// number alone, and the mark says which bucket's keys hold its records.
func OrderNo(saleKey, sku, user string, n int64, bucket int) string {
	h := sha1.Sum([]byte(saleKey + "\n" + sku + "\n" + user + "\n" + strconv.FormatInt(n, 10))) //nolint:gosec // identifier, not security
	return sku + "-" + hex.EncodeToString(h[:])[:24] + keys.OrderSuffix(bucket)
}

// SKUOf returns the SKU id an order number belongs to.
func SKUOf(orderNo string) (string, bool) {
	_, orderNo = keys.BucketOf(orderNo)
	i := strings.LastIndexByte(orderNo, '-')
	if i <= 0 || len(orderNo)-i-1 != 24 {
		return "", false
	}
	for _, c := range orderNo[i+1:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	return orderNo[:i], true
}
