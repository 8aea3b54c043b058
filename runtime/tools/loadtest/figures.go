package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// QueueFigures are a waiting room's sale-wide figures: tickets issued,
// holders not admitted yet, admitted so far, and admissions outstanding
// (admitted, not bought yet, within their TTL).
type QueueFigures struct {
	Joined      int64 `json:"joined,omitempty"`
	Waiting     int64 `json:"waiting"`
	Admitted    int64 `json:"admitted"`
	Outstanding int64 `json:"outstanding"`
}

// The seckill pods' gauges of the waiting room. Each pod sets them from its
// last admission step, whose figures are the sale's (read in Redis), so any
// one pod's /metrics gives the sale-wide figures of that moment.
const (
	metricWaiting     = "flashsale_queue_waiting"
	metricAdmitted    = "flashsale_queue_admitted"
	metricOutstanding = "flashsale_queue_outstanding"
)

// parseQueueGauges reads the queue gauges of saleKey from a Prometheus text
// exposition; ok is false when none is there.
func parseQueueGauges(r io.Reader, saleKey string) (f QueueFigures, ok bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "flashsale_queue_") {
			continue
		}
		name, rest, braces := strings.Cut(line, "{")
		var labels, value string
		if i := strings.LastIndexByte(rest, '}'); braces && i >= 0 {
			labels, value = rest[:i], rest[i+1:]
		} else {
			name, value, _ = strings.Cut(line, " ")
		}
		if strings.Contains(labels, `sale="`) && !strings.Contains(labels, `sale="`+saleKey+`"`) {
			continue // another sale's
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		v, perr := strconv.ParseFloat(fields[0], 64)
		if perr != nil {
			continue
		}
		switch name {
		case metricWaiting:
			f.Waiting, ok = int64(v), true
		case metricAdmitted:
			f.Admitted, ok = int64(v), true
		case metricOutstanding:
			f.Outstanding, ok = int64(v), true
		}
	}
	return f, ok, sc.Err()
}

// sampler reads the queue gauges every interval while the load runs: the
// most admissions outstanding at once it saw, and the last figures.
type sampler struct {
	mu             sync.Mutex
	last           QueueFigures
	maxOutstanding int64
	samples        int
	lastErr        error
}

// queueGauges reads the gauges once from the seckill's metrics (base is
// Options.MetricsURL: the pods' metrics port, not the buyers').
func (c *apiClient) queueGauges(ctx context.Context, base, saleKey string) (QueueFigures, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return QueueFigures{}, false, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return QueueFigures{}, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return QueueFigures{}, false, fmt.Errorf("GET %s/metrics: %s", base, resp.Status)
	}
	return parseQueueGauges(io.LimitReader(resp.Body, 16<<20), saleKey)
}

// sampleQueue samples until the returned func is called (which takes one
// last sample).
func (r *run) sampleQueue(ctx context.Context, every time.Duration) (stop func()) {
	s := r.sampler
	once := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.o.Timeout)
		defer cancel()
		f, ok, err := r.c.queueGauges(sctx, r.o.MetricsURL, r.o.SaleKey())
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case err != nil:
			s.lastErr = err
		case ok:
			s.samples++
			s.last = f
			s.maxOutstanding = max(s.maxOutstanding, f.Outstanding)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				once()
				return
			case <-t.C:
				once()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
