package seckill

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of the HTTP contract (DESIGN.md). Every refusal answers
// {"error": CODE, "message": "..."} and leaves stock and orders untouched.
const (
	CodeAlreadyPurchased = "ALREADY_PURCHASED"
	CodeSoldOut          = "SOLD_OUT"
	CodeRateLimited      = "RATE_LIMITED"
	CodeBadToken         = "BAD_TOKEN"
	CodeNotStarted       = "NOT_STARTED"
	CodeEnded            = "ENDED"
	CodePaused           = "PAUSED"
	CodeBadRequest       = "BAD_REQUEST"
	CodeNotFound         = "NOT_FOUND"
	CodeMethodNotAllowed = "METHOD_NOT_ALLOWED"
	CodeTooLarge         = "BODY_TOO_LARGE"
	CodeBlocked          = "BLOCKED"
	CodeRiskRejected     = "RISK_REJECTED"
	CodeNotReady         = "NOT_READY"
	CodeUnavailable      = "UNAVAILABLE"
	CodeNotImplemented   = "NOT_IMPLEMENTED"
	CodeUnauthorized     = "UNAUTHORIZED"
	CodeNotConfigured    = "NOT_CONFIGURED"
	CodeExpired          = "EXPIRED"
	CodeCancelled        = "CANCELLED"
	CodePending          = "PENDING"
	// The waiting room's (spec.queue).
	CodeNotAdmitted = "NOT_ADMITTED" // 403: no admitted ticket yet
	CodeBadTicket   = "BAD_TICKET"   // 403: forged, or another user's or sale's
	CodeNotQueued   = "NOT_QUEUED"   // 404: a genuine ticket whose user is not in the queue
	CodeNoQueue     = "NO_QUEUE"     // 404: the sale has no waiting room
)

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	// Place and Ahead tell a queued buyer refused NOT_ADMITTED where they
	// stand.
	Place *int64 `json:"place,omitempty"`
	Ahead *int64 `json:"ahead,omitempty"`
}

// apiError is a refusal on its way to the client.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds; 0 = no header
	// place and ahead go into the body (NOT_ADMITTED).
	place, ahead *int64
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func refuse(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

// Refusals that happen on the hot path, rendered once.
var (
	errSoldOut      = refuse(http.StatusGone, CodeSoldOut, "this SKU is sold out")
	errEnded        = refuse(http.StatusGone, CodeEnded, "the sale has ended")
	errPaused       = &apiError{status: http.StatusServiceUnavailable, code: CodePaused, message: "the sale is paused", retryAfter: 1}
	errHeld         = &apiError{status: http.StatusServiceUnavailable, code: CodeNotReady, message: "the sale is not open yet: the operator is still getting it ready", retryAfter: 1}
	errLimit        = refuse(http.StatusConflict, CodeAlreadyPurchased, "you already hold as many units of this SKU as one buyer may")
	errBadToken     = refuse(http.StatusForbidden, CodeBadToken, "the purchase token is missing, forged, expired or issued for another SKU, user or sale")
	errBlocked      = refuse(http.StatusForbidden, CodeBlocked, "this buyer or network may not take part in the sale")
	errNoUser       = refuse(http.StatusBadRequest, CodeBadRequest, "the X-User-ID header is missing")
	errBadUser      = refuse(http.StatusBadRequest, CodeBadRequest, "the X-User-ID header must be 1-64 characters of letters, digits, '_', '.', ':', '@', '-'")
	errUnknownSale  = refuse(http.StatusNotFound, CodeNotFound, "no such sale here")
	errUnknownSKU   = refuse(http.StatusNotFound, CodeNotFound, "no such SKU in this sale")
	errUnknownOrder = refuse(http.StatusNotFound, CodeNotFound, "no such order")
	// errBusy: too many purchases of the bucket already wait for Redis (a
	// stall); this one was refused before it was sent, so nothing changed.
	errBusy = &apiError{status: http.StatusServiceUnavailable, code: CodeUnavailable,
		message: "too many purchases are waiting for the store; nothing was done, retry with the same token", retryAfter: 1}

	errNoQueue    = refuse(http.StatusNotFound, CodeNoQueue, "this sale has no waiting room: fetch a token directly")
	errBadTicket  = refuse(http.StatusForbidden, CodeBadTicket, "the queue ticket is forged or was issued to another user or sale")
	errNoTicket   = refuse(http.StatusForbidden, CodeNotAdmitted, `this sale has a waiting room: join it with POST …/queue and send the admitted "ticket" with the token request`)
	errNotQueued  = refuse(http.StatusNotFound, CodeNotQueued, "this ticket's holder is not in the queue: join again with POST …/queue")
	errAllSoldOut = refuse(http.StatusGone, CodeSoldOut, "every SKU of this sale is sold out")
)

var renderedBodies = map[*apiError][]byte{}

func init() {
	for _, e := range []*apiError{errSoldOut, errEnded, errPaused, errHeld, errLimit, errBadToken, errBlocked, errNoUser, errBadUser, errUnknownSale, errUnknownSKU, errUnknownOrder, errBusy,
		errNoQueue, errBadTicket, errNoTicket, errNotQueued, errAllSoldOut} {
		renderedBodies[e] = render(e)
	}
}

func render(e *apiError) []byte {
	b, _ := json.Marshal(errorBody{Error: e.code, Message: e.message, Place: e.place, Ahead: e.ahead})
	return append(b, '\n')
}

func writeError(w http.ResponseWriter, e *apiError) {
	body, ok := renderedBodies[e]
	if !ok {
		body = render(e)
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	if e.retryAfter > 0 {
		h["Retry-After"] = []string{strconv.Itoa(e.retryAfter)}
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

var jsonContentType = []string{"application/json"}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, refuse(http.StatusInternalServerError, CodeUnavailable, "could not encode the answer"))
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
