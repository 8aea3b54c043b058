package ratelimit

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

// saleRates are the example sale of DESIGN.md with the global limit raised
// out of the way, so the benchmarks measure the full allowed path.
var saleRates = Rates{RequestsPerSecond: 1e12, PerUserPerSecond: 2, PerIPPerSecond: 20}

func keys(prefix string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return s
}

// BenchmarkAllowDistinctUsers: many users from many IPs, in parallel.
func BenchmarkAllowDistinctUsers(b *testing.B) {
	const n = 1 << 18
	users, ips := keys("user-", n), keys("10.1.", n)
	l := New(saleRates, clock.RealClock{})
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1 << 12)
		for pb.Next() {
			i++
			l.Allow(users[i%n], ips[(i*7)%n])
		}
	})
}

// BenchmarkAllowSameUser: one user hammering (refused by its own limit
// after the burst), serial and in parallel.
func BenchmarkAllowSameUser(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		l := New(saleRates, clock.RealClock{})
		b.ReportAllocs()
		for b.Loop() {
			l.Allow("alice", "192.0.2.1")
		}
	})
	b.Run("parallel", func(b *testing.B) {
		l := New(saleRates, clock.RealClock{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow("alice", "192.0.2.1")
			}
		})
	})
}

func BenchmarkAllowAddrDistinct(b *testing.B) {
	const n = 1 << 16
	users := keys("user-", n)
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
	}
	l := New(saleRates, clock.RealClock{})
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1 << 12)
		for pb.Next() {
			i++
			l.AllowAddr(users[i%n], addrs[(i*7)%n])
		}
	})
}

// BenchmarkGlobal compares the lock-free GCRA global bucket with
// golang.org/x/time/rate.Limiter under parallel load (the justification for
// not using rate.Limiter for the global bucket).
func BenchmarkGlobal(b *testing.B) {
	b.Run("gcra", func(b *testing.B) {
		var g gcra
		d := computeDim(1e12, 0, 1, 1)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				g.take(time.Now().UnixNano(), d)
			}
		})
	})
	b.Run("x-time-rate", func(b *testing.B) {
		rl := rate.NewLimiter(rate.Limit(1e12), 1e9)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				rl.AllowN(time.Now(), 1)
			}
		})
	})
}
