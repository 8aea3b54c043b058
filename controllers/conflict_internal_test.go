package controllers

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

// TestSameRedisByResolvedAddress: when the servers cannot be asked who they
// are (here nothing listens), two spellings of one address are compared by
// the IP:port they resolve to: the machine's host name and 127.0.0.1 on one
// port are one Redis, on two ports two.
func TestSameRedisByResolvedAddress(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if ips, err := net.LookupHost(host); err != nil || !slices.Contains(ips, "127.0.0.1") {
		t.Skipf("the host name %q does not resolve to 127.0.0.1 here (%v, %v)", host, ips, err)
	}
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		return port
	}
	port, other := free(), free()
	r := &FlashSaleReconciler{Clock: clock.RealClock{}, DialTimeout: time.Second, ResolveEvery: time.Minute}
	mine := &redisOf{addrs: normalizeAddrs([]string{"127.0.0.1:" + port})}
	got := r.sameRedis(context.Background(), mine, &redisOf{addrs: normalizeAddrs([]string{host + ":" + port})})
	if want := "the same address 127.0.0.1:" + port; !strings.Contains(got, want) {
		t.Fatalf("sameRedis(127.0.0.1:%s, %s:%s) = %q, want it to say %q", port, host, port, got, want)
	}
	if got := r.sameRedis(context.Background(), mine, &redisOf{addrs: normalizeAddrs([]string{host + ":" + other})}); got != "" {
		t.Fatalf("sameRedis(127.0.0.1:%s, %s:%s) = %q, want none", port, host, other, got)
	}
}
