package token

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

const (
	// DefaultTTL is the token lifetime when NewSigner is given ttl <= 0.
	DefaultTTL = 10 * time.Second
	// MaxTokenLen bounds the token string; longer input is rejected before
	// any other work.
	MaxTokenLen = 256
	// MaxFieldLen bounds each of sale, SKU and user id.
	MaxFieldLen = 256
	// MaxClockSkew is how far ahead of the verifying pod's clock a token's
	// issuer may have been: a genuine token whose expiry lies further than
	// TTL + MaxClockSkew ahead is refused (ErrTooFarAhead), so that a pod
	// with a clock far ahead cannot mint tokens that stay valid elsewhere
	// for longer than a TTL.
	MaxClockSkew = 2 * time.Second

	version  = "v1"
	nonceLen = 16
	macLen   = 32
	kidLen   = 8  // hex of 4 bytes
	nonceB64 = 22 // base64url, no padding, of 16 bytes
	macB64   = 43 // base64url, no padding, of 32 bytes
	maxExp36 = 12 // base36 digits; 36^12 > 4.7e18 ms fits int64
)

// Error is the type of every verification error. All of them mean "403
// BAD_TOKEN" to a client; Reason tells them apart for logs and metrics.
type Error struct {
	Reason string // malformed, unknown_key, bad_signature, expired, too_far_ahead
}

func (e *Error) Error() string { return "token: " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true for every verification error.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

var (
	// ErrInvalid matches (errors.Is) every verification error below.
	ErrInvalid = errors.New("token: invalid")
	// ErrMalformed means the token is empty, too long, of the wrong shape or encoding, or of an unknown version.
	ErrMalformed = &Error{Reason: "malformed"}
	// ErrUnknownKey means the key id is not in the ring (rotated out, or forged).
	ErrUnknownKey = &Error{Reason: "unknown_key"}
	// ErrBadSignature means the MAC does not match, which includes a genuine token
	// presented for another sale, SKU or user.
	ErrBadSignature = &Error{Reason: "bad_signature"}
	// ErrExpired means the token is genuine but now >= its expiry.
	ErrExpired = &Error{Reason: "expired"}
	// ErrTooFarAhead means the token is genuine but its expiry lies further
	// ahead than the TTL (plus MaxClockSkew) allows: its issuer's clock was
	// ahead, or it was issued with a longer TTL than this Signer's.
	ErrTooFarAhead = &Error{Reason: "too_far_ahead"}
)

// Reason returns the metric label of a verification error ("" for nil,
// "other" for an error not from Verify).
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var te *Error
	if errors.As(err, &te) {
		return te.Reason
	}
	return "other"
}

// Claims is what a valid token proves.
type Claims struct {
	// Nonce is 16 random bytes, unique per token: the idempotency key of the
	// purchase (one token = at most one order).
	Nonce [nonceLen]byte
	// ExpiresAt is the expiry instant (millisecond precision).
	ExpiresAt time.Time
	// KeyID is the id of the key that signed the token.
	KeyID string
}

// NonceString returns the nonce as unpadded base64url (22 characters), as it
// appears in the token.
func (c Claims) NonceString() string {
	return base64.RawURLEncoding.EncodeToString(c.Nonce[:])
}

var b64 = base64.RawURLEncoding.Strict()

// Signer issues and verifies tokens. Safe for concurrent use; the key ring
// can be swapped at any time without blocking verifications.
type Signer struct {
	ring atomic.Pointer[KeyRing]
	ttl  time.Duration
	clk  clock.PassiveClock
}

// NewSigner returns a Signer. ttl <= 0 means DefaultTTL; a nil clk means the
// real clock. ring must not be nil.
func NewSigner(ring *KeyRing, ttl time.Duration, clk clock.PassiveClock) *Signer {
	if ring == nil {
		panic("token: NewSigner with nil key ring")
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	s := &Signer{ttl: ttl, clk: clk}
	s.ring.Store(ring)
	return s
}

// SetKeyRing atomically replaces the key ring. r must not be nil.
func (s *Signer) SetKeyRing(r *KeyRing) {
	if r == nil {
		panic("token: SetKeyRing with nil key ring")
	}
	s.ring.Store(r)
}

// KeyRing returns the ring in use.
func (s *Signer) KeyRing() *KeyRing { return s.ring.Load() }

// TTL returns the token lifetime.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Issue returns a token for (sale, sku, user), signed with the current key,
// and its expiry. sale is "namespace/name". Each id must be non-empty and at
// most MaxFieldLen bytes.
func (s *Signer) Issue(sale, sku, user string) (string, time.Time, error) {
	if sale == "" || sku == "" || user == "" {
		return "", time.Time{}, errors.New("token: empty sale, sku or user")
	}
	if len(sale) > MaxFieldLen || len(sku) > MaxFieldLen || len(user) > MaxFieldLen {
		return "", time.Time{}, errors.New("token: sale, sku or user id too long")
	}
	expMs := s.clk.Now().Add(s.ttl).UnixMilli()
	if expMs <= 0 {
		return "", time.Time{}, errors.New("token: clock before 1970")
	}
	k := s.ring.Load().keys[0]
	st := k.get()
	rand.Read(st.nonce[:]) // never fails (Go >= 1.24)
	mac := st.compute(k.id, sale, sku, user, expMs)

	b := st.buf[:0]
	b = append(b, version...)
	b = append(b, '.')
	b = append(b, k.id...)
	b = append(b, '.')
	b = strconv.AppendInt(b, expMs, 36)
	b = append(b, '.')
	b = b64.AppendEncode(b, st.nonce[:])
	b = append(b, '.')
	b = b64.AppendEncode(b, mac)
	tok := string(b)
	st.buf = b
	k.put(st)
	return tok, time.UnixMilli(expMs), nil
}

// compute returns HMAC(key, msg) in st.sum, where msg length-prefixes every
// variable field (uvarint) and appends expiry (8 bytes BE) and nonce.
func (st *macState) compute(kid, sale, sku, user string, expMs int64) []byte {
	m := st.msg[:0]
	for _, f := range [...]string{version, kid, sale, sku, user} {
		m = binary.AppendUvarint(m, uint64(len(f)))
		m = append(m, f...)
	}
	m = binary.BigEndian.AppendUint64(m, uint64(expMs))
	m = append(m, st.nonce[:]...)
	st.msg = m
	st.h.Reset()
	st.h.Write(m)
	st.sum = st.h.Sum(st.sum[:0])
	return st.sum
}

// Verify checks tok for (sale, sku, user) and returns its claims. The error,
// if any, is one of ErrMalformed, ErrUnknownKey, ErrBadSignature,
// ErrTooFarAhead, ErrExpired (all match errors.Is(err, ErrInvalid)). The
// token is valid while now < ExpiresAt <= now + TTL + MaxClockSkew. The
// signature is checked before the expiry, so ErrTooFarAhead and ErrExpired
// are only reported for genuine tokens, and with either of them the claims
// are returned too: the token cannot buy here, but a caller may still look
// up what it bought while it was valid (a token minted by a pod whose clock
// runs ahead, or before the TTL was lowered, may have bought elsewhere).
func (s *Signer) Verify(tok, sale, sku, user string) (Claims, error) {
	if len(tok) == 0 || len(tok) > MaxTokenLen {
		return Claims{}, ErrMalformed
	}
	var parts [5]string
	rest := tok
	for i := 0; i < 4; i++ {
		j := indexDot(rest)
		if j < 0 {
			return Claims{}, ErrMalformed
		}
		parts[i], rest = rest[:j], rest[j+1:]
	}
	if indexDot(rest) >= 0 {
		return Claims{}, ErrMalformed
	}
	parts[4] = rest
	if parts[0] != version || !isLowerHex(parts[1]) || len(parts[3]) != nonceB64 || len(parts[4]) != macB64 {
		return Claims{}, ErrMalformed
	}
	expMs, ok := parseBase36(parts[2])
	if !ok {
		return Claims{}, ErrMalformed
	}
	k := s.ring.Load().lookup(parts[1])
	if k == nil {
		return Claims{}, ErrUnknownKey
	}
	if len(sale) > MaxFieldLen || len(sku) > MaxFieldLen || len(user) > MaxFieldLen {
		return Claims{}, ErrBadSignature // could not have been issued
	}
	st := k.get()
	defer k.put(st)
	// Strict decoding plus exact lengths make the encoding canonical: one
	// (nonce, mac) has exactly one text form.
	st.buf = append(st.buf[:0], parts[3]...)
	if n, err := b64.Decode(st.nonce[:], st.buf); err != nil || n != nonceLen {
		return Claims{}, ErrMalformed
	}
	st.buf = append(st.buf[:0], parts[4]...)
	if n, err := b64.Decode(st.mac[:], st.buf); err != nil || n != macLen {
		return Claims{}, ErrMalformed
	}
	if !hmac.Equal(st.compute(k.id, sale, sku, user, expMs), st.mac[:]) {
		return Claims{}, ErrBadSignature
	}
	c := Claims{Nonce: st.nonce, ExpiresAt: time.UnixMilli(expMs), KeyID: k.id}
	now := s.clk.Now()
	if c.ExpiresAt.Sub(now) > s.ttl+MaxClockSkew {
		return c, ErrTooFarAhead
	}
	if !now.Before(c.ExpiresAt) {
		return c, ErrExpired
	}
	return c, nil
}

func indexDot(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

func isLowerHex(s string) bool {
	if len(s) != kidLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// parseBase36 parses a canonical positive base36 number: lower-case digits,
// no sign, no leading zero, at most maxExp36 digits.
func parseBase36(s string) (int64, bool) {
	if len(s) == 0 || len(s) > maxExp36 || s[0] == '0' {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d int64
		switch {
		case c >= '0' && c <= '9':
			d = int64(c - '0')
		case c >= 'a' && c <= 'z':
			d = int64(c-'a') + 10
		default:
			return 0, false
		}
		v = v*36 + d
	}
	return v, true
}
