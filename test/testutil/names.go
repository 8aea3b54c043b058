package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"strconv"
	"testing"
)

// randomHex returns 2*n lowercase hex characters from crypto/rand.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testutil: reading crypto/rand: %v", err)
	}
	return hex.EncodeToString(b)
}

// UniqueName returns a short, unique, lowercase DNS-1123 label such as
// "t-1a2b3c4d5e" (40 random bits from crypto/rand).
//
// Tests use it as the namespace of their sale: the project's key format puts
// "<namespace>/<name>" inside every Redis key, so all keys of one test carry
// the name and can be removed with CleanupKeys(t, c, "*"+name+"/*").
func UniqueName(t testing.TB) string {
	t.Helper()
	return "t-" + randomHex(t, 5)
}

// FreePort returns a TCP port on 127.0.0.1 that was free when it was checked.
// Another process may take it before the caller binds it: prefer listening on
// "127.0.0.1:0" when the code under test accepts a listener.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testutil: finding a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testutil: closing probe listener: %v", err)
	}
	return port
}

// portFree reports whether port can be bound on 127.0.0.1 right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
