package seckill

import (
	"net/http"
	"net/url"
	"time"
)

// saleCacheControl lets a CDN absorb the buyers' page polling the sale: a
// second of staleness, and stale answers for two more while it refreshes.
const saleCacheControl = "public, max-age=1, s-maxage=1, stale-while-revalidate=2"

// Phases of the sale-level answer.
const (
	PhaseUpcoming = "UPCOMING"
	PhaseActive   = "ACTIVE"
	PhasePaused   = "PAUSED"
	PhaseNotReady = "NOT_READY"
	PhaseEnded    = "ENDED"
)

type saleResponse struct {
	Namespace  string         `json:"namespace"`
	Name       string         `json:"name"`
	Status     string         `json:"status"`
	SoldOut    bool           `json:"soldOut"`
	StartTime  time.Time      `json:"startTime"`
	EndTime    time.Time      `json:"endTime"`
	ServerTime time.Time      `json:"serverTime"`
	Queue      *saleQueue     `json:"queue"`
	SKUs       []saleSKUEntry `json:"skus"`
}

type saleQueue struct {
	OpensAt        time.Time `json:"opensAt"`
	AdmitPerSecond int32     `json:"admitPerSecond"`
}

type saleSKUEntry struct {
	SKU          string `json:"sku"`
	Price        string `json:"price"`
	PerUserLimit int32  `json:"perUserLimit"`
	Remaining    int64  `json:"remaining"`
	SoldOut      bool   `json:"soldOut"`
}

// handleSale answers the sale as a whole from this pod's memory (it never
// touches Redis and needs no identity), for the buyer's page: phase,
// times, server time for the countdown, and each SKU's stock.
func (s *Server) handleSale(w http.ResponseWriter, _ *http.Request) (string, *apiError) {
	now := s.clk.Now()
	spec := &s.sale.Spec
	body := saleResponse{Namespace: s.ns, Name: s.name, Status: s.phase(now), SoldOut: s.allSoldOut(now),
		StartTime: spec.StartTime.UTC(), EndTime: spec.EndTime.UTC(), ServerTime: now.UTC()}
	if q := spec.Queue; q != nil {
		body.Queue = &saleQueue{OpensAt: s.sale.QueueOpensAt().UTC(), AdmitPerSecond: q.AdmitPerSecond}
	}
	body.SKUs = make([]saleSKUEntry, 0, len(spec.SKUs))
	for _, sku := range spec.SKUs {
		st := s.state.skus[sku.ID]
		body.SKUs = append(body.SKUs, saleSKUEntry{SKU: sku.ID, Price: sku.Price, PerUserLimit: sku.PerUserLimit,
			Remaining: max(st.remaining.Load(), 0), SoldOut: st.soldOut.Load()})
	}
	w.Header().Set("Cache-Control", saleCacheControl)
	writeJSON(w, http.StatusOK, body)
	return "ok", nil
}

// phase is the sale's phase as /token would see it now: ENDED and closed
// early first, then UPCOMING, then the operator's hold (NOT_READY, as is a
// started sale whose stock is not warmed), then PAUSED.
func (s *Server) phase(now time.Time) string {
	switch {
	case s.over(now):
		return PhaseEnded
	case now.Before(s.sale.Spec.StartTime.Time):
		return PhaseUpcoming
	case s.state.held.Load():
		return PhaseNotReady
	case s.state.paused.Load():
		return PhasePaused
	}
	if ok, _ := s.state.allWarmed(); !ok {
		return PhaseNotReady
	}
	return PhaseActive
}

// pageHandler serves the buyer's page of this sale at /sales/{ns}/{sale}/
// (package page); /sales/{ns}/{sale} redirects to it, keeping the query
// (?user= in demos). Other sales' pages are not this pod's: 404.
func (s *Server) pageHandler(redirect bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		outcome := s.servePage(w, r, redirect)
		s.metrics.observeRequest("page", outcome, time.Since(start))
	})
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request, redirect bool) string {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, refuse(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use GET here"))
		return CodeMethodNotAllowed
	}
	if r.PathValue("ns") != s.ns || r.PathValue("sale") != s.name || s.page == nil {
		writeError(w, errUnknownSale)
		return CodeNotFound
	}
	if redirect {
		// Built from this server's own sale (which the path was checked to
		// name), never from the request's path: the redirect stays on this
		// origin and this page whatever the request held.
		target := "/sales/" + url.PathEscape(s.ns) + "/" + url.PathEscape(s.name) + "/"
		if q := r.URL.Query(); len(q) > 0 {
			target += "?" + q.Encode()
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently) //nolint:gosec // G710: the path is our own; the query alone cannot change the origin
		return "redirect"
	}
	// The page reads the sale from location.pathname and sets its own
	// caching headers.
	s.page.ServeHTTP(w, r)
	return "ok"
}
