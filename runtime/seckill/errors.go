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
)

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// apiError is a refusal on its way to the client.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter int // seconds; 0 = no header
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
)

var renderedBodies = map[*apiError][]byte{}

func init() {
	for _, e := range []*apiError{errSoldOut, errEnded, errPaused, errHeld, errLimit, errBadToken, errBlocked, errNoUser, errBadUser, errUnknownSale, errUnknownSKU, errUnknownOrder, errBusy} {
		renderedBodies[e] = render(e)
	}
}

func render(e *apiError) []byte {
	b, _ := json.Marshal(errorBody{Error: e.code, Message: e.message})
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
