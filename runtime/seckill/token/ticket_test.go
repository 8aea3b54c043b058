package token

import (
	"errors"
	"strings"
	"testing"
)

func mustTicket(t *testing.T, s *Signer, sale, user string) string {
	t.Helper()
	tk, err := s.Ticket(sale, user)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTicketRoundTripAndDeterministic(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tk := mustTicket(t, s, sale, user)
	if len(tk) != TicketLen || !strings.HasPrefix(tk, "q1."+KeyID(keyA)+".") || strings.ContainsAny(tk, "+/= ") {
		t.Fatalf("ticket shape %q (len %d)", tk, len(tk))
	}
	if err := s.VerifyTicket(tk, sale, user); err != nil {
		t.Fatalf("VerifyTicket: %v", err)
	}
	// Joining again hands out the same ticket.
	if again := mustTicket(t, s, sale, user); again != tk {
		t.Fatalf("second ticket %q differs from %q", again, tk)
	}
	// Another pod with the same keys issues the same ticket.
	other, _ := newSigner(t, keyA)
	if got := mustTicket(t, other, sale, user); got != tk {
		t.Fatalf("other signer's ticket %q differs from %q", got, tk)
	}
}

func TestTicketCannotBeBorrowed(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tk := mustTicket(t, s, sale, user)
	for _, c := range []struct{ sale, user string }{
		{sale, "user-43@example.com"},
		{"shop/other-sale", user},
		{"shop/summer-sal", "e" + user}, // fields are length-prefixed: no shifting between them
		{"", user},
		{sale, ""},
		{sale, strings.Repeat("u", MaxFieldLen+1)},
	} {
		if err := s.VerifyTicket(tk, c.sale, c.user); !errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ticket of %q/%q verified for %q/%q: %v, want bad_signature", sale, user, c.sale, c.user, err)
		}
	}
	// Another key (another cluster, or a forger) cannot produce a valid one.
	forger, _ := newSigner(t, keyC, keyA) // signs with C; knows A only to verify
	if err := s.VerifyTicket(mustTicket(t, forger, sale, user), sale, user); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("ticket of an unknown key: %v, want unknown_key", err)
	}
}

func TestTicketIsNotAPathToken(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tok := mustIssue(t, s, sale, sku, user)
	if err := s.VerifyTicket(tok, sale, user); !errors.Is(err, ErrMalformed) {
		t.Fatalf("path token as ticket: %v, want malformed", err)
	}
	tk := mustTicket(t, s, sale, user)
	if _, err := s.Verify(tk, sale, sku, user); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ticket as path token: %v, want malformed", err)
	}
}

func TestTicketSurvivesRotation(t *testing.T) {
	s, _ := newSigner(t, keyA)
	old := mustTicket(t, s, sale, user)
	s.SetKeyRing(mustRing(t, keyB, keyA)) // B current, A previous
	if err := s.VerifyTicket(old, sale, user); err != nil {
		t.Fatalf("ticket of the previous key: %v", err)
	}
	fresh := mustTicket(t, s, sale, user)
	if fresh == old || !strings.HasPrefix(fresh, "q1."+KeyID(keyB)+".") {
		t.Fatalf("ticket after rotation %q (old %q)", fresh, old)
	}
	s.SetKeyRing(mustRing(t, keyB)) // A retired
	if err := s.VerifyTicket(old, sale, user); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("ticket of a retired key: %v, want unknown_key", err)
	}
	if err := s.VerifyTicket(fresh, sale, user); err != nil {
		t.Fatalf("current ticket: %v", err)
	}
}

func TestTicketMalformed(t *testing.T) {
	s, _ := newSigner(t, keyA)
	tk := mustTicket(t, s, sale, user)
	lastFlipped := tk[:len(tk)-1] + string(rune(tk[len(tk)-1]^1)) // non-canonical or wrong MAC
	for name, bad := range map[string]string{
		"empty":          "",
		"short":          tk[:len(tk)-1],
		"long":           tk + "A",
		"version":        "v1" + tk[2:],
		"upper kid":      tk[:3] + strings.ToUpper(tk[3:11]) + tk[11:],
		"missing dot":    tk[:11] + "x" + tk[12:],
		"bad base64":     tk[:12] + "!" + tk[13:],
		"padding":        tk[:len(tk)-1] + "=",
		"non-hex kid":    tk[:3] + "zzzzzzzz" + tk[11:],
		"ticket+garbage": tk[:TicketLen-2] + "..",
	} {
		if err := s.VerifyTicket(bad, sale, user); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %q: %v, want malformed", name, bad, err)
		}
	}
	if err := s.VerifyTicket(lastFlipped, sale, user); !errors.Is(err, ErrInvalid) {
		t.Errorf("flipped last char %q verified", lastFlipped)
	}
	if _, err := s.Ticket("", user); err == nil {
		t.Error("Ticket with empty sale: no error")
	}
	if _, err := s.Ticket(sale, strings.Repeat("u", MaxFieldLen+1)); err == nil {
		t.Error("Ticket with an oversized user: no error")
	}
}
