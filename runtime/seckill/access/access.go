// Package access holds the seckill API's block and allow lists of users and
// client IPs, the client IP extraction behind trusted proxies, and the user
// id syntax check.
//
// Block lists win: a request whose user or IP is on a block list is
// Blocked even if the other (or the same) is on an allow list. Otherwise a
// request whose user or IP is on an allow list is Allowed, and the caller
// bypasses rate limits and risk checks for it. Everything else is Neutral.
//
// Lookups cost O(1) for users (a map) and O(number of distinct prefix
// lengths) for IPs, whatever the size of the lists: prefixes are grouped by
// length, and an address is masked to each length present and looked up in
// a map (at most 33 lookups for IPv4 and 129 for IPv6, in practice a few).
// Check does not allocate.
package access

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Verdict is the result of List.Check.
type Verdict uint8

const (
	// Neutral means on no list: apply the usual limits and checks.
	Neutral Verdict = iota
	// Allowed means on an allow list and on no block list; bypass rate limits
	// and risk checks.
	Allowed
	// Blocked means on a block list; refuse.
	Blocked
)

// String returns "neutral", "allowed" or "blocked".
func (v Verdict) String() string {
	switch v {
	case Allowed:
		return "allowed"
	case Blocked:
		return "blocked"
	}
	return "neutral"
}

// List is an immutable set of allow and block lists, safe for concurrent
// use. Build a new one to change it. A nil *List answers Neutral.
type List struct {
	allowUsers, blockUsers map[string]struct{}
	allowIPs, blockIPs     prefixSet
}

// NewList builds a List. Users are exact ids; IP entries are CIDRs
// ("10.0.0.0/8", "2001:db8::/32") or single addresses ("192.0.2.7",
// "2001:db8::1"), with surrounding spaces and empty entries ignored. Host
// bits of a CIDR are masked off ("10.1.2.3/8" is 10.0.0.0/8). An entry that
// does not parse is an error naming it.
func NewList(allowUsers, blockUsers, allowCIDRs, blockCIDRs []string) (*List, error) {
	l := &List{allowUsers: userSet(allowUsers), blockUsers: userSet(blockUsers)}
	allow, err := ParsePrefixes(allowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("allow list: %w", err)
	}
	block, err := ParsePrefixes(blockCIDRs)
	if err != nil {
		return nil, fmt.Errorf("block list: %w", err)
	}
	l.allowIPs = newPrefixSet(allow)
	l.blockIPs = newPrefixSet(block)
	return l, nil
}

// Check classifies a request of user from ip. An empty user or an invalid ip
// matches no list in that dimension. IPv4-mapped IPv6 addresses are checked
// as IPv4.
func (l *List) Check(user string, ip netip.Addr) Verdict {
	if l == nil {
		return Neutral
	}
	ip = ip.Unmap()
	if user != "" {
		if _, ok := l.blockUsers[user]; ok {
			return Blocked
		}
	}
	if l.blockIPs.contains(ip) {
		return Blocked
	}
	if user != "" {
		if _, ok := l.allowUsers[user]; ok {
			return Allowed
		}
	}
	if l.allowIPs.contains(ip) {
		return Allowed
	}
	return Neutral
}

func userSet(users []string) map[string]struct{} {
	m := make(map[string]struct{}, len(users))
	for _, u := range users {
		if u = strings.TrimSpace(u); u != "" {
			m[u] = struct{}{}
		}
	}
	return m
}

// ParsePrefixes parses CIDRs or single addresses (as /32 or /128), masking
// host bits and unmapping IPv4-mapped IPv6 addresses. Empty entries are
// skipped; an entry that does not parse is an error naming it.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	if strings.IndexByte(s, '/') < 0 {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q", s)
	}
	if a := p.Addr(); a.Is4In6() {
		// ::ffff:10.0.0.0/104 is 10.0.0.0/8.
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q: IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// prefixSet answers "is this address inside any of these prefixes" with one
// map lookup per distinct prefix length.
type prefixSet struct {
	set        map[netip.Prefix]struct{}
	v4Bits     []int // distinct lengths of IPv4 prefixes, longest first
	v6Bits     []int
	hasEntries bool
}

func newPrefixSet(ps []netip.Prefix) prefixSet {
	s := prefixSet{set: make(map[netip.Prefix]struct{}, len(ps))}
	for _, p := range ps {
		s.hasEntries = true
		s.set[p] = struct{}{}
		bits := &s.v6Bits
		if p.Addr().Is4() {
			bits = &s.v4Bits
		}
		if !slices.Contains(*bits, p.Bits()) {
			*bits = append(*bits, p.Bits())
		}
	}
	slices.Sort(s.v4Bits)
	slices.Reverse(s.v4Bits)
	slices.Sort(s.v6Bits)
	slices.Reverse(s.v6Bits)
	return s
}

func (s *prefixSet) contains(ip netip.Addr) bool {
	if !s.hasEntries || !ip.IsValid() {
		return false
	}
	ip = ip.WithZone("")
	bits := s.v6Bits
	if ip.Is4() {
		bits = s.v4Bits
	}
	for _, b := range bits {
		p, err := ip.Prefix(b)
		if err != nil {
			continue
		}
		if _, ok := s.set[p]; ok {
			return true
		}
	}
	return false
}
