package access

import (
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP returns the address of the client of r.
//
// It is r.RemoteAddr, unless RemoteAddr is inside one of the trusted proxy
// prefixes: then X-Forwarded-For (all its header lines, in order) is walked
// from the right, skipping addresses of trusted proxies, and the first
// address that is not trusted is the client. Entries may carry a port
// ("192.0.2.1:1234", "[2001:db8::1]:443").
//
// Only the part of the header appended by trusted proxies is believed:
//   - a garbage entry (not an address, e.g. "unknown" or an obfuscated
//     identifier) stops the walk, and the last trusted hop seen is returned,
//     because anything to its left may have been written by the client;
//   - if every entry is trusted, the leftmost one is returned (a client
//     inside the trusted network);
//   - without X-Forwarded-For, the trusted RemoteAddr itself is returned.
//
// IPv4-mapped IPv6 addresses are returned as IPv4 and zones are dropped. The
// zero Addr is returned only when RemoteAddr does not parse. Allocation-free
// except for what net/http already holds.
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	remote, ok := parseHostPort(r.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if !isTrusted(remote, trusted) {
		return remote
	}
	lines := r.Header.Values("X-Forwarded-For")
	last := remote
	for i := len(lines) - 1; i >= 0; i-- {
		rest := lines[i]
		for rest != "" {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, rest = rest, ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a, ok := parseHostPort(entry)
			if !ok {
				return last
			}
			if !isTrusted(a, trusted) {
				return a
			}
			last = a
		}
	}
	return last
}

// parseHostPort parses "addr", "addr:port" or "[addr]:port", unmapping
// IPv4-mapped addresses and dropping zones.
func parseHostPort(s string) (netip.Addr, bool) {
	// Pick the parser by syntax: a failed parse allocates its error.
	var a netip.Addr
	if s != "" && (s[0] == '[' || strings.Count(s, ":") == 1) {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	} else {
		var err error
		if a, err = netip.ParseAddr(s); err != nil {
			return netip.Addr{}, false
		}
	}
	return a.Unmap().WithZone(""), true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
