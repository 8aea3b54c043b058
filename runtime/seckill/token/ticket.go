package token

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
)

// A queue ticket proves that a user joined the waiting room of a sale:
//
//	q1.<kid: 8 hex>.<mac: 43 b64url>
//
// The MAC is HMAC-SHA256(key, "ticket" | kid | sale | user), every field
// length-prefixed like the path token's. A ticket carries no expiry and no
// nonce: it is deterministic per (sale, user, signing key), so joining again
// hands the buyer the same ticket, and it needs no storage to verify. Whether
// the ticket's holder may buy is decided by the queue in Redis, not by the
// ticket; the ticket only stops a user from presenting someone else's place.
const (
	ticketVersion = "q1"
	ticketDomain  = "ticket" // separates ticket MACs from path-token MACs
	// TicketLen is the exact length of a ticket string.
	TicketLen = len(ticketVersion) + 1 + kidLen + 1 + macB64
)

// Ticket returns the queue ticket of user in sale ("namespace/name"), signed
// with the current key. Each id must be non-empty and at most MaxFieldLen
// bytes.
func (s *Signer) Ticket(sale, user string) (string, error) {
	if sale == "" || user == "" {
		return "", errors.New("token: empty sale or user")
	}
	if len(sale) > MaxFieldLen || len(user) > MaxFieldLen {
		return "", errors.New("token: sale or user id too long")
	}
	k := s.ring.Load().keys[0]
	st := k.get()
	defer k.put(st)
	mac := st.computeTicket(k.id, sale, user)
	b := make([]byte, 0, TicketLen)
	b = append(b, ticketVersion...)
	b = append(b, '.')
	b = append(b, k.id...)
	b = append(b, '.')
	b = b64.AppendEncode(b, mac)
	return string(b), nil
}

// VerifyTicket checks that ticket was issued for (sale, user) by a key of the
// ring (current or previous, so tickets survive a rotation until the old key
// leaves the ring). The error, if any, is ErrMalformed, ErrUnknownKey or
// ErrBadSignature (all match errors.Is(err, ErrInvalid)); a genuine ticket of
// another user or sale is ErrBadSignature.
func (s *Signer) VerifyTicket(ticket, sale, user string) error {
	if len(ticket) != TicketLen || ticket[len(ticketVersion)] != '.' || ticket[len(ticketVersion)+1+kidLen] != '.' ||
		ticket[:len(ticketVersion)] != ticketVersion {
		return ErrMalformed
	}
	kid := ticket[len(ticketVersion)+1 : len(ticketVersion)+1+kidLen]
	macText := ticket[len(ticketVersion)+1+kidLen+1:]
	if !isLowerHex(kid) {
		return ErrMalformed
	}
	k := s.ring.Load().lookup(kid)
	if k == nil {
		return ErrUnknownKey
	}
	st := k.get()
	defer k.put(st)
	// Strict decoding of an exact length keeps the text form canonical.
	st.buf = append(st.buf[:0], macText...)
	if n, err := b64.Decode(st.mac[:], st.buf); err != nil || n != macLen {
		return ErrMalformed
	}
	if sale == "" || user == "" || len(sale) > MaxFieldLen || len(user) > MaxFieldLen {
		return ErrBadSignature // could not have been issued
	}
	if !hmac.Equal(st.computeTicket(k.id, sale, user), st.mac[:]) {
		return ErrBadSignature
	}
	return nil
}

// computeTicket returns HMAC(key, msg) in st.sum, msg being the
// length-prefixed (uvarint) fields "ticket", kid, sale, user. A path token's
// message starts with the 2-byte field "v1", so the two can never collide.
func (st *macState) computeTicket(kid, sale, user string) []byte {
	m := st.msg[:0]
	for _, f := range [...]string{ticketDomain, kid, sale, user} {
		m = binary.AppendUvarint(m, uint64(len(f)))
		m = append(m, f...)
	}
	st.msg = m
	st.h.Reset()
	st.h.Write(m)
	st.sum = st.h.Sum(st.sum[:0])
	return st.sum
}
