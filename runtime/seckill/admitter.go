package seckill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/queue"
)

// DefaultAdmitInterval is how often a pod runs the admitter of a queued
// sale. The rate is enforced in Redis (a token bucket shared by every pod),
// so the interval only sets how smooth admission is and how soon a bought
// admission frees its budget.
const DefaultAdmitInterval = 100 * time.Millisecond

// maxDoneBuffered bounds the used (or shortened) admissions a pod keeps
// while Redis is unreachable; past it the oldest are dropped (their
// admissions then count until admissionTTL, which only slows admission).
const maxDoneBuffered = 100_000

// refusalGrace is how long an admission stays live after its buyer was
// refused one SKU (SOLD_OUT, ALREADY_PURCHASED) while another is on sale
// (the TTL when that is shorter): time enough to choose the other item,
// short enough that a buyer who leaves frees the budget for the next in
// line long before admissionTTL. Before it, refused buyers who left held
// the whole budget of a sale whose first SKU sold out, and nobody more was
// admitted for the SKUs still on sale.
const refusalGrace = 15 * time.Second

// userBuffer collects buyers whose admission the admitter ends (they
// bought, or were refused with nothing else on sale) or shortens (refused
// one SKU while another is on sale), so that it does so in one call per
// tick instead of one Redis call per request.
type userBuffer struct {
	mu    sync.Mutex
	users []string
}

func (d *userBuffer) add(user string) {
	d.mu.Lock()
	d.users = append(d.users, user)
	d.mu.Unlock()
}

func (d *userBuffer) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.users
	d.users = nil
	return out
}

// putBack returns users whose flush failed, ahead of those added since.
func (d *userBuffer) putBack(users []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.users = append(users, d.users...)
	if over := len(d.users) - maxDoneBuffered; over > 0 {
		d.users = d.users[over:]
	}
}

// queueDone records that a queued sale's buyer used their admission.
func (s *Server) queueDone(user string) {
	if s.queue != nil {
		s.done.add(user)
	}
}

// queueRefused records that a queued sale's buyer was refused sku
// (SOLD_OUT, ALREADY_PURCHASED): while another SKU is on sale their
// admission is shortened to refusalGrace (they may choose that one; a
// buyer who leaves frees their share of the budget soon), otherwise it is
// used.
func (s *Server) queueRefused(user, sku string) {
	if s.queue == nil {
		return
	}
	if s.otherOnSale(sku) {
		s.shorten.add(user)
		return
	}
	s.done.add(user)
}

// otherOnSale says whether a SKU other than sku is not sold out, as this
// pod knows it.
func (s *Server) otherOnSale(sku string) bool {
	for _, id := range s.state.order {
		if id != sku && !s.state.skus[id].soldOut.Load() {
			return true
		}
	}
	return false
}

// runAdmitter admits ticket holders every interval until ctx is done.
func (s *Server) runAdmitter(ctx context.Context) {
	t := time.NewTicker(s.admitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.admitOnce(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("Admitting from the waiting room failed; retrying next tick", "sale", s.saleKey, "err", err)
			}
		}
	}
}

// admitOnce is one tick: shorten the admissions of buyers refused one SKU
// and free the budget of used admissions (before the outstanding count is
// read), then (from the start, unless the sale is held, paused or over)
// admit what the rate and the stock allow. Outside that window it only
// refreshes the figures.
func (s *Server) admitOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, queueTimeout)
	defer cancel()
	now := s.clk.Now()
	// The refused are shortened before the used are freed: a buyer refused
	// one SKU who then bought another is shortened first and freed after,
	// never left shortened.
	shorten := func(ctx context.Context, users ...string) error {
		return s.queue.Shorten(ctx, now, refusalGrace, users...)
	}
	if err := s.flush(ctx, &s.shorten, "queue_shorten", "shorten refused admissions", shorten); err != nil {
		return err
	}
	if err := s.flush(ctx, &s.done, "queue_done", "free used admissions", s.queue.Done); err != nil {
		return err
	}
	if now.Before(s.sale.Spec.StartTime.Time) || s.over(now) || s.state.held.Load() || s.state.paused.Load() {
		return s.readFigures(ctx)
	}
	// The outstanding count first, the stock second: it is the floor of
	// what the budget counts (queue.AdmitFloor), so that an admission
	// another pod frees between the two reads is not counted free twice.
	start := time.Now()
	floor, err := s.queue.Outstanding(ctx)
	s.metrics.observeRedis("queue_outstanding", time.Since(start), err)
	if err != nil {
		return fmt.Errorf("admit: %w", err)
	}
	remaining, err := s.stockLeft(ctx, now)
	if err != nil {
		return err
	}
	start = time.Now()
	step, err := s.queue.AdmitFloor(ctx, now, remaining, floor)
	s.metrics.observeRedis("queue_admit", time.Since(start), err)
	if err != nil {
		return fmt.Errorf("admit: %w", err)
	}
	s.metrics.admissions.WithLabelValues(s.saleKey).Add(float64(step.New))
	for _, w := range step.Waits {
		s.metrics.queueWait.WithLabelValues(s.saleKey).Observe(w.Seconds())
	}
	s.setFigures(queue.Figures{Joined: step.Length, Waiting: step.Length - step.Admitted,
		Admitted: step.Admitted, Outstanding: step.Outstanding})
	return nil
}

// flush sends the users buf collected since the last tick: the buyers
// whose admission was used (queue Done: their budget is freed) or who were
// refused one SKU (queue Shorten: their admission lapses refusalGrace from
// now, within a tick of the refusal). On failure they go back to buf for
// the next tick.
func (s *Server) flush(ctx context.Context, buf *userBuffer, op, what string, send func(context.Context, ...string) error) error {
	users := buf.take()
	if len(users) == 0 {
		return nil
	}
	start := time.Now()
	err := send(ctx, users...)
	s.metrics.observeRedis(op, time.Since(start), err)
	if err != nil {
		buf.putBack(users)
		return fmt.Errorf("%s (%d): %w", what, len(users), err)
	}
	return nil
}

// stockLeft is the sale's remaining stock for the admission budget, read
// from Redis after the used admissions were freed (flush), not from
// the pod's cached state: a purchase lowers the stock before its buyer's
// admission is freed, so a fresh read never sees a freed admission
// without its unit gone, and admission never runs ahead of the stock. The
// cache may lag (a refresh that read before a purchase and stored after
// it), and each unit it overstates lets overbook more buyers in.
func (s *Server) stockLeft(ctx context.Context, now time.Time) (int64, error) {
	if s.allSoldOut(now) {
		return 0, nil
	}
	pipe := s.rdb.Pipeline()
	var gets []*redis.StringCmd
	for _, id := range s.state.order {
		for _, k := range s.state.skus[id].buckets {
			gets = append(gets, pipe.Get(ctx, k.Stock))
		}
	}
	start := time.Now()
	_, err := pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		err = nil // an unwarmed bucket holds nothing to sell
	}
	s.metrics.observeRedis("queue_stock", time.Since(start), err)
	if err != nil {
		return 0, fmt.Errorf("read stock for admission: %w", err)
	}
	var total int64
	for _, g := range gets {
		if n, err := strconv.ParseInt(g.Val(), 10, 64); err == nil && n > 0 {
			total += n
		}
	}
	return total, nil
}

// readFigures refreshes the queue figures while nobody is admitted (before
// the start, held, paused), so the gauges show the pre-queue filling.
func (s *Server) readFigures(ctx context.Context) error {
	start := time.Now()
	f, ok, err := queue.Read(ctx, s.rdb, s.saleKey)
	s.metrics.observeRedis("queue_read", time.Since(start), err)
	if err != nil {
		return fmt.Errorf("read queue figures: %w", err)
	}
	if ok {
		s.setFigures(f)
	}
	return nil
}

// setFigures records the queue's figures for the gauges.
func (s *Server) setFigures(f queue.Figures) {
	s.metrics.queueWaiting.WithLabelValues(s.saleKey).Set(float64(f.Waiting))
	s.metrics.queueAdmitted.WithLabelValues(s.saleKey).Set(float64(f.Admitted))
	s.metrics.queueOutstanding.WithLabelValues(s.saleKey).Set(float64(f.Outstanding))
}
