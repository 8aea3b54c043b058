package access

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestNewListErrors(t *testing.T) {
	cases := []struct {
		name         string
		allow, block []string
		wantIn       string
	}{
		{"bad allow", []string{"10.0.0.0/8", "10.0.0.0/33"}, nil, `"10.0.0.0/33"`},
		{"bad block", nil, []string{"not-an-ip"}, `"not-an-ip"`},
		{"bad v6", nil, []string{"2001:db8::/129"}, `"2001:db8::/129"`},
		{"zone", []string{"fe80::1%eth0"}, nil, `"fe80::1%eth0"`},
		{"short mapped", nil, []string{"::ffff:0:0/64"}, `"::ffff:0:0/64"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewList(nil, nil, c.allow, c.block)
			if err == nil || !strings.Contains(err.Error(), c.wantIn) {
				t.Fatalf("err = %v, want one naming %s", err, c.wantIn)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	l, err := NewList(
		[]string{"vip", " tester ", "both"},
		[]string{"bot", "both"},
		[]string{"10.0.0.0/8", "192.0.2.7", "2001:db8:aaaa::/48", "", "172.16.5.9/12"},
		[]string{"10.66.0.0/16", "198.51.100.0/24", "2001:db8:aaaa:bad::/64", "2001:db8::dead"},
	)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, ip string
		want     Verdict
	}{
		{"alice", "203.0.113.1", Neutral},
		{"vip", "203.0.113.1", Allowed},
		{"tester", "203.0.113.1", Allowed}, // spaces trimmed
		{"bot", "203.0.113.1", Blocked},
		{"both", "203.0.113.1", Blocked}, // block wins over allow (same user)
		{"alice", "10.1.2.3", Allowed},
		{"alice", "10.66.1.1", Blocked}, // block prefix inside an allow prefix
		{"vip", "10.66.1.1", Blocked},   // blocked IP wins over allowed user
		{"bot", "10.1.2.3", Blocked},    // blocked user wins over allowed IP
		{"alice", "192.0.2.7", Allowed},
		{"alice", "192.0.2.8", Neutral},
		{"alice", "198.51.100.200", Blocked},
		{"alice", "::ffff:198.51.100.200", Blocked}, // mapped v4
		{"alice", "::ffff:10.9.9.9", Allowed},
		{"alice", "172.31.255.255", Allowed}, // 172.16.5.9/12 masked to 172.16.0.0/12
		{"alice", "172.32.0.1", Neutral},
		{"alice", "2001:db8:aaaa:1::1", Allowed},
		{"alice", "2001:db8:aaaa:bad::1", Blocked},
		{"alice", "2001:db8::dead", Blocked},
		{"alice", "2001:db8::beef", Neutral},
		{"alice", "fe80::1%eth0", Neutral},
		{"", "10.1.2.3", Allowed},
		{"", "203.0.113.1", Neutral},
		{"vip", "", Allowed}, // invalid address: only the user counts
		{"bot", "", Blocked},
	}
	for _, c := range cases {
		t.Run(c.user+"@"+c.ip, func(t *testing.T) {
			var ip netip.Addr
			if c.ip != "" {
				ip = netip.MustParseAddr(c.ip)
			}
			if got := l.Check(c.user, ip); got != c.want {
				t.Fatalf("Check(%q, %s) = %s, want %s", c.user, c.ip, got, c.want)
			}
		})
	}
}

func TestCheckNilAndEmpty(t *testing.T) {
	var nilList *List
	if v := nilList.Check("x", netip.MustParseAddr("1.2.3.4")); v != Neutral {
		t.Fatalf("nil list: %s", v)
	}
	l, err := NewList(nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := l.Check("x", netip.MustParseAddr("1.2.3.4")); v != Neutral {
		t.Fatalf("empty list: %s", v)
	}
	all, _ := NewList(nil, nil, nil, []string{"0.0.0.0/0"})
	if v := all.Check("x", netip.MustParseAddr("1.2.3.4")); v != Blocked {
		t.Fatalf("0.0.0.0/0: %s", v)
	}
	if v := all.Check("x", netip.MustParseAddr("2001:db8::1")); v != Neutral {
		t.Fatalf("0.0.0.0/0 must not match IPv6: %s", v)
	}
}

func TestVerdictString(t *testing.T) {
	if Neutral.String() != "neutral" || Allowed.String() != "allowed" || Blocked.String() != "blocked" {
		t.Fatal("Verdict.String")
	}
}

func TestCheckLargeListDoesNotAllocate(t *testing.T) {
	var block []string
	for i := range 100_000 {
		block = append(block, fmt.Sprintf("100.%d.%d.0/24", i>>8&255, i&255))
	}
	for i := range 1000 {
		block = append(block, fmt.Sprintf("2001:db8:%x::/48", i))
	}
	l, err := NewList(nil, nil, nil, block)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("100.7.9.1")
	if l.Check("u", ip) != Blocked {
		t.Fatal("not blocked")
	}
	if n := testing.AllocsPerRun(1000, func() { l.Check("u", ip) }); n != 0 {
		t.Fatalf("Check allocates %v", n)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.0.0.0/8", " 192.0.2.1 ", "", "2001:db8::1", "::ffff:10.0.0.0/104", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::1/128", "10.0.0.0/8", "10.1.0.0/16"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("[%d] = %s, want %s", i, got[i], want[i])
		}
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/8", "bogus/8"}); err == nil || !strings.Contains(err.Error(), `"bogus/8"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestClientIP(t *testing.T) {
	trusted, err := ParsePrefixes([]string{"10.0.0.0/8", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"direct client", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"untrusted remote ignores XFF", "203.0.113.5:4000", []string{"1.1.1.1"}, "203.0.113.5"},
		{"one proxy", "10.0.0.1:80", []string{"203.0.113.5"}, "203.0.113.5"},
		{"spoofed left part", "10.0.0.1:80", []string{"6.6.6.6, 203.0.113.5"}, "203.0.113.5"},
		{"two proxies", "10.0.0.1:80", []string{"6.6.6.6, 203.0.113.5, 10.0.0.2"}, "203.0.113.5"},
		{"spaces and empty", "10.0.0.1:80", []string{" 203.0.113.5 ,, 10.0.0.2 ,"}, "203.0.113.5"},
		{"several header lines", "10.0.0.1:80", []string{"6.6.6.6", "203.0.113.5, 10.0.0.3", "10.0.0.2"}, "203.0.113.5"},
		{"entry with port", "10.0.0.1:80", []string{"203.0.113.5:5555"}, "203.0.113.5"},
		{"v6 entry with port", "10.0.0.1:80", []string{"[2001:db8::5]:443"}, "2001:db8::5"},
		{"v6 proxy", "[fd00::1]:80", []string{"2001:db8::5, fd00::2"}, "2001:db8::5"},
		{"mapped", "[::ffff:10.0.0.1]:80", []string{"::ffff:203.0.113.5"}, "203.0.113.5"},
		{"all trusted", "10.0.0.1:80", []string{"10.0.0.9, 10.0.0.2"}, "10.0.0.9"},
		{"no XFF behind proxy", "10.0.0.1:80", nil, "10.0.0.1"},
		{"garbage stops the walk", "10.0.0.1:80", []string{"203.0.113.5, unknown, 10.0.0.2"}, "10.0.0.2"},
		{"garbage right away", "10.0.0.1:80", []string{"1.1.1.1, <script>"}, "10.0.0.1"},
		{"garbage on the far left is never reached", "10.0.0.1:80", []string{"junk, 203.0.113.5"}, "203.0.113.5"},
		{"remote without port", "203.0.113.5", nil, "203.0.113.5"},
		{"bad remote", "pipe", nil, "invalid IP"},
		{"zone dropped", "[fe80::1%eth0]:80", nil, "fe80::1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ClientIP(r, trusted).String(); got != c.want {
				t.Fatalf("ClientIP = %s, want %s", got, c.want)
			}
		})
	}
	// No trusted proxies: XFF is never read.
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.RemoteAddr = "10.0.0.1:80"
	r.Header.Set("X-Forwarded-For", "203.0.113.5")
	if got := ClientIP(r, nil).String(); got != "10.0.0.1" {
		t.Fatalf("without trusted proxies: %s", got)
	}
	r.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.5, 10.0.0.2")
	if n := testing.AllocsPerRun(100, func() { ClientIP(r, trusted) }); n != 0 {
		t.Fatalf("ClientIP allocates %v", n)
	}
}

func TestValidUserID(t *testing.T) {
	cases := map[string]bool{
		"":                          false,
		"a":                         true,
		"user-42":                   true,
		"A.b_c:d@e-f":               true,
		"alice@example.com":         true,
		strings.Repeat("x", 64):     true,
		strings.Repeat("x", 65):     false,
		"with space":                false,
		"semi;colon":                false,
		"slash/":                    false,
		"é":                         false,
		"tab\t":                     false,
		"nul\x00":                   false,
		"plus+":                     false,
		"0123456789":                true,
		"ZZ":                        true,
		strings.Repeat("é", 10):     false,
		"urn:user:1234-abcd.EFG@x_": true,
	}
	for s, want := range cases {
		if got := ValidUserID(s); got != want {
			t.Errorf("ValidUserID(%q) = %v, want %v", s, got, want)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	var block []string
	for i := range 10_000 {
		block = append(block, fmt.Sprintf("100.%d.%d.0/24", i>>8&255, i&255))
	}
	l, err := NewList([]string{"vip"}, []string{"bot"}, []string{"10.0.0.0/8"}, append(block, "2001:db8::/32", "192.0.2.1"))
	if err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		l.Check("alice", ip)
	}
}

func BenchmarkClientIP(b *testing.B) {
	trusted, _ := ParsePrefixes([]string{"10.0.0.0/8"})
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.RemoteAddr = "10.0.0.1:80"
	r.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.5, 10.0.0.2")
	b.ReportAllocs()
	for b.Loop() {
		ClientIP(r, trusted)
	}
}

func BenchmarkValidUserID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ValidUserID("user-1234567890@example.com")
	}
}
