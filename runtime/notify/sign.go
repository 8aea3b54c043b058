package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of a signed delivery (Standard Webhooks, standardwebhooks.com).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a delivery's timestamp may be from the
// receiver's clock before Verify refuses it (a replay).
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrNoSignature = errors.New("webhook-id, webhook-timestamp or webhook-signature header missing")
	ErrTimestamp   = errors.New("webhook-timestamp too far from now")
	ErrSignature   = errors.New("no webhook-signature matches")
)

// key is the HMAC key of a secret: a Standard Webhooks secret
// ("whsec_" and base64) is decoded, so its libraries verify our deliveries
// with the secret as they know it; any other value is the key as it is.
func key(secret []byte) []byte {
	s := string(secret)
	if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
		if k, err := base64.StdEncoding.DecodeString(rest); err == nil {
			return k
		}
	}
	return secret
}

// Sign is the webhook-signature value of one delivery: "v1," and the
// base64 of HMAC-SHA256(key, id "." unix-seconds "." body).
func Sign(secret []byte, id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, key(secret))
	fmt.Fprintf(m, "%s.%d.", id, ts.Unix())
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// SetHeaders signs body for a delivery at ts and sets the three headers.
func SetHeaders(h http.Header, secret []byte, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(secret, id, ts, body))
}

// Verify checks a delivery as a receiver gets it: the signature over the
// raw body with the webhook's secret (the value of its Secret key), and a
// timestamp within tolerance of now (DefaultTolerance when 0). The
// signature header may carry several space-separated signatures (during a
// key rotation); one match is enough.
func Verify(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrNoSignature
	}
	sec, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %w", tsText, err)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts := time.Unix(sec, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off", ErrTimestamp, d.Round(time.Second))
	}
	want := []byte(Sign(secret, id, ts, body))
	for _, sig := range strings.Fields(sigs) {
		if hmac.Equal([]byte(sig), want) {
			return nil
		}
	}
	return ErrSignature
}
