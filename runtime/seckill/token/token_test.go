package token

import (
	"errors"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

const (
	sale = "shop/summer-sale"
	sku  = "1001"
	user = "user-42@example.com"
)

var (
	keyA = []byte(strings.Repeat("a", 32))
	keyB = []byte(strings.Repeat("b", 40))
	keyC = []byte(strings.Repeat("c", 32))
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func mustRing(t testing.TB, secrets ...[]byte) *KeyRing {
	t.Helper()
	r, err := NewKeyRing(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newSigner(t testing.TB, secrets ...[]byte) (*Signer, *clocktesting.FakePassiveClock) {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(t0)
	return NewSigner(mustRing(t, secrets...), 0, clk), clk
}

func mustIssue(t testing.TB, s *Signer, sale, sku, user string) string {
	t.Helper()
	tok, _, err := s.Issue(sale, sku, user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRoundTrip(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tok, exp, err := s.Issue(sale, sku, user)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(DefaultTTL)) {
		t.Fatalf("expiresAt %v, want %v", exp, t0.Add(DefaultTTL))
	}
	if len(tok) > MaxTokenLen || strings.ContainsAny(tok, "+/= ") {
		t.Fatalf("token not compact/url-safe: %q", tok)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 5 || parts[0] != "v1" || parts[1] != KeyID(keyA) {
		t.Fatalf("unexpected token shape %q", tok)
	}
	c, err := s.Verify(tok, sale, sku, user)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !c.ExpiresAt.Equal(exp) || c.KeyID != KeyID(keyA) {
		t.Fatalf("claims %+v", c)
	}
	if c.Nonce == ([16]byte{}) || c.NonceString() != parts[3] {
		t.Fatalf("nonce %x / %q vs %q", c.Nonce, c.NonceString(), parts[3])
	}
	// A second token has another nonce (idempotency key).
	c2, err := s.Verify(mustIssue(t, s, sale, sku, user), sale, sku, user)
	if err != nil || c2.Nonce == c.Nonce {
		t.Fatalf("second token: err %v, same nonce %v", err, c2.Nonce == c.Nonce)
	}
}

func TestCustomTTLAndNilClock(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(t0)
	s := NewSigner(mustRing(t, keyA), 3*time.Second, clk)
	_, exp, _ := s.Issue(sale, sku, user)
	if !exp.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("exp %v", exp)
	}
	genuine := NewSigner(mustRing(t, keyA), 0, nil)
	if _, err := genuine.Verify(mustIssue(t, genuine, sale, sku, user), sale, sku, user); err != nil {
		t.Fatal(err)
	}
	if genuine.TTL() != DefaultTTL {
		t.Fatal(genuine.TTL())
	}
}

func TestIssueRejectsBadFields(t *testing.T) {
	s, _ := newSigner(t, keyA)
	long := strings.Repeat("x", MaxFieldLen+1)
	for _, f := range [][3]string{{"", sku, user}, {sale, "", user}, {sale, sku, ""}, {long, sku, user}, {sale, long, user}, {sale, sku, long}} {
		if _, _, err := s.Issue(f[0], f[1], f[2]); err == nil {
			t.Errorf("Issue(%q,%q,%q): want error", f[0], f[1], f[2])
		}
	}
}

func TestExpiryBoundary(t *testing.T) {
	s, clk := newSigner(t, keyA)
	tok, exp, _ := s.Issue(sale, sku, user)
	tests := []struct {
		name string
		now  time.Time
		want error
	}{
		{"at issue", t0, nil},
		{"1ns before expiry", exp.Add(-time.Nanosecond), nil},
		{"exactly at expiry", exp, ErrExpired},
		{"after expiry", exp.Add(time.Millisecond), ErrExpired},
		{"long after", exp.Add(time.Hour), ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.SetTime(tt.now)
			_, err := s.Verify(tok, sale, sku, user)
			if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

// TestExpiryTooFarAhead: a token minted by a pod whose clock runs ahead
// carries an expiry that this pod would honour for longer than a TTL, and a
// token key in Redis that expires with the token would be gone before it.
// A genuine token whose expiry lies more than TTL + MaxClockSkew ahead is
// refused; within that, small skews between pods are tolerated. An expired
// or too-far-ahead token still yields its claims, for looking up what it
// already bought.
func TestExpiryTooFarAhead(t *testing.T) {
	issuer, issuerClk := newSigner(t, keyA)
	verifier, _ := newSigner(t, keyA) // its clock reads t0
	for _, tt := range []struct {
		ahead time.Duration
		want  error
	}{
		{0, nil},
		{MaxClockSkew, nil},
		{MaxClockSkew + time.Millisecond, ErrTooFarAhead},
		{time.Minute, ErrTooFarAhead},
		{-time.Second, nil}, // the issuer's clock is behind: the token lives shorter
	} {
		issuerClk.SetTime(t0.Add(tt.ahead))
		tok := mustIssue(t, issuer, sale, sku, user)
		c, err := verifier.Verify(tok, sale, sku, user)
		if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("issuer %v ahead: err %v, want %v", tt.ahead, err, tt.want)
		}
		// Genuine, so its claims come back even when refused: the token
		// may have bought on the pod that minted it.
		if c.NonceString() != strings.Split(tok, ".")[3] {
			t.Errorf("issuer %v ahead: claims %+v lack the token's nonce", tt.ahead, c)
		}
		if tt.want != nil && Reason(err) != "too_far_ahead" {
			t.Errorf("issuer %v ahead: reason %q", tt.ahead, Reason(err))
		}
	}
	// A forged token with a far expiry is a bad signature, not "too far".
	issuerClk.SetTime(t0.Add(time.Hour))
	forged := []byte(mustIssue(t, issuer, sale, sku, user))
	forged[len(forged)-2] ^= 1
	if _, err := verifier.Verify(string(forged), sale, sku, user); !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
		t.Errorf("forged far token: %v", err)
	}

	issuerClk.SetTime(t0.Add(-DefaultTTL))
	tok := mustIssue(t, issuer, sale, sku, user)
	c, err := verifier.Verify(tok, sale, sku, user)
	if !errors.Is(err, ErrExpired) || c.NonceString() != strings.Split(tok, ".")[3] || !c.ExpiresAt.Equal(t0) {
		t.Fatalf("expired token: %+v %v, want its claims with ErrExpired", c, err)
	}
}

func TestWrongBinding(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tok := mustIssue(t, s, sale, sku, user)
	tests := []struct {
		name            string
		sale, sku, user string
	}{
		{"other user", sale, sku, "user-43@example.com"},
		{"other sku (replay)", sale, "1002", user},
		{"other sale", "shop/winter-sale", sku, user},
		{"other namespace", "shop2/summer-sale", sku, user},
		// field-boundary shifts must not collide
		{"shift sale/sku", sale + "1", "001", user},
		{"shift sku/user", sale, "1001u", "ser-42@example.com"},
		{"empty user", sale, sku, ""},
		{"huge user", sale, sku, strings.Repeat("u", 10000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Verify(tok, tt.sale, tt.sku, tt.user)
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("err %v, want ErrBadSignature", err)
			}
		})
	}
	// and the genuine binding still verifies
	if _, err := s.Verify(tok, sale, sku, user); err != nil {
		t.Fatal(err)
	}
}

func TestReplayOnAnotherSKU(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tok1 := mustIssue(t, s, sale, "1001", user)
	tok2 := mustIssue(t, s, sale, "1002", user)
	if _, err := s.Verify(tok1, sale, "1002", user); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tok for 1001 used on 1002: %v", err)
	}
	// splice: mac of tok1 with the rest of tok2
	p1, p2 := strings.Split(tok1, "."), strings.Split(tok2, ".")
	p2[4] = p1[4]
	if _, err := s.Verify(strings.Join(p2, "."), sale, "1002", user); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("spliced: %v", err)
	}
}

// flip changes one character of s at i to another character of the same
// alphabet class, so the result stays well-formed where possible.
func flip(s string, i int) string {
	b := []byte(s)
	switch c := b[i]; {
	case c >= '0' && c <= '8', c >= 'a' && c <= 'y', c >= 'A' && c <= 'Y':
		b[i] = c + 1
	case c == '9':
		b[i] = '0'
	case c == 'z':
		b[i] = 'a'
	case c == 'Z':
		b[i] = 'A'
	case c == '-':
		b[i] = '_'
	case c == '_':
		b[i] = '-'
	}
	return string(b)
}

func TestForgedTokenEveryByte(t *testing.T) {
	s, _ := newSigner(t, keyA, keyB)
	tok := mustIssue(t, s, sale, sku, user)
	parts := strings.Split(tok, ".")
	off := 0
	for pi, p := range parts {
		for i := range p {
			forged := flip(tok, off+i)
			if forged == tok {
				t.Fatalf("flip did not change part %d byte %d", pi, i)
			}
			_, err := s.Verify(forged, sale, sku, user)
			if err == nil {
				t.Fatalf("part %d byte %d: forged token %q verified", pi, i, forged)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("part %d byte %d: error %v does not match ErrInvalid", pi, i, err)
			}
			// Within the MAC-covered parts (exp, nonce, mac) a well-formed
			// change must be a signature failure.
			if pi >= 2 && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("part %d byte %d: %v", pi, i, err)
			}
		}
		off += len(p) + 1
	}
}

func TestUnknownKeyID(t *testing.T) {
	sA, _ := newSigner(t, keyA)
	sC, _ := newSigner(t, keyC)
	tok := mustIssue(t, sA, sale, sku, user)
	if _, err := sC.Verify(tok, sale, sku, user); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err %v, want ErrUnknownKey", err)
	}
	// kid rewritten to a key the verifier has: signature fails
	forged := strings.Replace(tok, KeyID(keyA), KeyID(keyC), 1)
	if _, err := sC.Verify(forged, sale, sku, user); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err %v, want ErrBadSignature", err)
	}
}

func TestKeyRotation(t *testing.T) {
	s, _ := newSigner(t, keyA)
	old := mustIssue(t, s, sale, sku, user)

	s.SetKeyRing(mustRing(t, keyB, keyA)) // new current, old accepted
	if _, err := s.Verify(old, sale, sku, user); err != nil {
		t.Fatalf("old token after rotation: %v", err)
	}
	fresh := mustIssue(t, s, sale, sku, user)
	if !strings.HasPrefix(fresh, "v1."+KeyID(keyB)+".") {
		t.Fatalf("new token not signed with new key: %q", fresh)
	}
	c, err := s.Verify(fresh, sale, sku, user)
	if err != nil || c.KeyID != KeyID(keyB) {
		t.Fatalf("fresh: %v %+v", err, c)
	}

	s.SetKeyRing(mustRing(t, keyB)) // old dropped
	if _, err := s.Verify(old, sale, sku, user); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old token after drop: %v, want ErrUnknownKey", err)
	}
	if _, err := s.Verify(fresh, sale, sku, user); err != nil {
		t.Fatalf("fresh after drop: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tok := mustIssue(t, s, sale, sku, user)
	p := strings.Split(tok, ".")
	join := func(parts ...string) string { return strings.Join(parts, ".") }
	tests := []struct {
		name, tok string
	}{
		{"empty", ""},
		{"too long", tok + strings.Repeat("A", MaxTokenLen)},
		{"just over max", strings.Repeat("a", MaxTokenLen+1)},
		{"garbage", "hello"},
		{"4 parts", join(p[0], p[1], p[2], p[3])},
		{"6 parts", join(p[0], p[1], p[2], p[3], p[4], "x")},
		{"trailing dot", tok + "."},
		{"leading dot", "." + tok},
		{"empty part", join(p[0], p[1], "", p[3], p[4])},
		{"bad version", join("v2", p[1], p[2], p[3], p[4])},
		{"kid upper", join(p[0], strings.ToUpper(p[1]), p[2], p[3], p[4])},
		{"kid short", join(p[0], p[1][:6], p[2], p[3], p[4])},
		{"kid non hex", join(p[0], "zzzzzzzz", p[2], p[3], p[4])},
		{"exp signed", join(p[0], p[1], "+"+p[2], p[3], p[4])},
		{"exp leading zero", join(p[0], p[1], "0"+p[2], p[3], p[4])},
		{"exp upper", join(p[0], p[1], strings.ToUpper(p[2]), p[3], p[4])},
		{"exp too long", join(p[0], p[1], "zzzzzzzzzzzzz", p[3], p[4])},
		{"nonce short", join(p[0], p[1], p[2], p[3][1:], p[4])},
		{"nonce bad b64", join(p[0], p[1], p[2], "!"+p[3][1:], p[4])},
		{"nonce std alphabet", join(p[0], p[1], p[2], "+"+p[3][1:], p[4])},
		{"nonce padded", join(p[0], p[1], p[2], p[3][:20]+"==", p[4])},
		{"nonce newline", join(p[0], p[1], p[2], p[3][:10]+"\n"+p[3][11:], p[4])},
		{"mac short", join(p[0], p[1], p[2], p[3], p[4][1:])},
		{"mac bad b64", join(p[0], p[1], p[2], p[3], p[4][:42]+"*")},
		{"mac non-canonical tail bits", join(p[0], p[1], p[2], p[3], p[4][:42]+nonCanonical(p[4][42]))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Verify(tt.tok, sale, sku, user)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
			if !errors.Is(err, ErrInvalid) || Reason(err) != "malformed" {
				t.Fatalf("classification: %v %q", errors.Is(err, ErrInvalid), Reason(err))
			}
		})
	}
}

// nonCanonical returns a last character that decodes to the same bytes as c
// but with non-zero padding bits (43 chars = 32 bytes + 2 spare bits).
func nonCanonical(c byte) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alpha, c)
	return string(alpha[i^1])
}

func TestErrorClassification(t *testing.T) {
	for _, e := range []error{ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrExpired, ErrTooFarAhead} {
		if !errors.Is(e, ErrInvalid) {
			t.Errorf("%v is not ErrInvalid", e)
		}
	}
	if errors.Is(ErrExpired, ErrMalformed) {
		t.Error("ErrExpired matches ErrMalformed")
	}
	if Reason(ErrExpired) != "expired" || Reason(nil) != "" || Reason(errors.New("x")) != "other" {
		t.Error("Reason")
	}
}

func TestConcurrentVerifyDuringRotation(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tok := mustIssue(t, s, sale, sku, user)
	done := make(chan struct{})
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				if _, err := s.Verify(tok, sale, sku, user); err != nil {
					errs <- err
					return
				}
				if _, _, err := s.Issue(sale, sku, user); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if i%2 == 0 {
			s.SetKeyRing(mustRing(t, keyB, keyA))
		} else {
			s.SetKeyRing(mustRing(t, keyA, keyB))
		}
	}
	close(done)
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
