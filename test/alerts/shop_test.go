package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shop is the buyers' side of the sale's seckill API, over HTTP.
type shop struct {
	t    *testing.T
	base string
	c    *http.Client
	// users numbers the buyers, so that each is new.
	users atomic.Int64
	// outcomes counts the answers of the purchase endpoint by error code
	// ("ok" for a 202).
	mu       sync.Mutex
	outcomes map[string]int
}

func newShop(t *testing.T, base string) *shop {
	return &shop{t: t, base: base, c: &http.Client{Timeout: 5 * time.Second}, outcomes: map[string]int{}}
}

// answer is the part of an answer the buyers read.
type answer struct {
	status  int
	Error   string `json:"error"`
	Ticket  string `json:"ticket"`
	State   string `json:"status"`
	Token   string `json:"token"`
	OrderNo string `json:"orderNo"`
}

func (s *shop) do(ctx context.Context, method, path, user, body string, hdr map[string]string) answer {
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, strings.NewReader(body))
	if err != nil {
		return answer{Error: err.Error()}
	}
	req.Header.Set("X-User-ID", user)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.c.Do(req)
	if err != nil {
		return answer{Error: "transport: " + err.Error()}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode}
	_ = json.NewDecoder(resp.Body).Decode(&a)
	return a
}

// newUser is a buyer nobody has been yet.
func (s *shop) newUser() string { return fmt.Sprintf("buyer-%d", s.users.Add(1)) }

// admit joins the waiting room as user and waits until admitted; it returns
// the ticket, or "" when ctx ends or the room refuses. A join the room
// answers "come back" (425 before it opens, 503 before the sale is warmed,
// 429) is tried again.
func (s *shop) admit(ctx context.Context, user string) string {
	j := s.do(ctx, http.MethodPost, "/queue", user, "", nil)
	for j.Ticket == "" {
		switch j.status {
		case http.StatusTooEarly, http.StatusServiceUnavailable, http.StatusTooManyRequests, 0:
		default:
			return ""
		}
		if sleep(ctx, 200*time.Millisecond); ctx.Err() != nil {
			return ""
		}
		j = s.do(ctx, http.MethodPost, "/queue", user, "", nil)
	}
	for ctx.Err() == nil {
		a := s.do(ctx, http.MethodGet, "/queue/"+j.Ticket, user, "", nil)
		switch {
		case a.State == "admitted":
			return j.Ticket
		case a.status == http.StatusGone || a.State == "done":
			return ""
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return ""
}

// token fetches a purchase token for sku with an admission's ticket.
func (s *shop) token(ctx context.Context, user, ticket, sku string) answer {
	return s.do(ctx, http.MethodPost, "/token", user, fmt.Sprintf(`{"sku":%q,"ticket":%q}`, sku, ticket), nil)
}

// purchase buys sku with a token and counts the answer.
func (s *shop) purchase(ctx context.Context, user, sku, token string) answer {
	a := s.do(ctx, http.MethodPost, "/purchase", user, fmt.Sprintf(`{"sku":%q,"token":%q}`, sku, token), nil)
	code := a.Error
	if a.status == http.StatusAccepted {
		code = "ok"
	}
	s.mu.Lock()
	s.outcomes[code]++
	s.mu.Unlock()
	return a
}

// buy is a whole buyer: admitted, a token, a purchase of sku; then, when
// pay is set, paying once the order is in MySQL (for at most 15 s).
func (s *shop) buy(ctx context.Context, sku string, pay bool) answer {
	user := s.newUser()
	ticket := s.admit(ctx, user)
	if ticket == "" {
		return answer{Error: "not admitted"}
	}
	tok := s.token(ctx, user, ticket, sku)
	if tok.Token == "" {
		return tok
	}
	a := s.purchase(ctx, user, sku, tok.Token)
	if a.status != http.StatusAccepted || !pay {
		return a
	}
	s.pay(ctx, user, a.OrderNo)
	return a
}

// pay pays an order as the shop's payment service does, retrying while it
// is not in MySQL yet (for at most 15 s).
func (s *shop) pay(ctx context.Context, user, orderNo string) {
	deadline := time.Now().Add(15 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		p := s.do(ctx, http.MethodPost, "/orders/"+orderNo+"/pay", user, "", map[string]string{"Authorization": "Bearer " + paySecret})
		if p.status == http.StatusOK {
			return
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// keepBuying sends a buyer of plenty every interval until ctx ends; every
// other one pays, the others leave their order to the rollback.
func (s *shop) keepBuying(ctx context.Context, every time.Duration) (wait func()) {
	var wg sync.WaitGroup
	n := 0
	tick := time.NewTicker(every)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n++
			pay := n%2 == 0
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.buy(ctx, plenty, pay)
			}()
		}
	}()
	return wg.Wait
}

// total is how many purchases were answered.
func (s *shop) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.outcomes {
		n += c
	}
	return n
}

// count is how many purchases were answered with code.
func (s *shop) count(code string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outcomes[code]
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
