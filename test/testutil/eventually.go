package testutil

import (
	"testing"
	"time"
)

// Eventually fails the test unless cond holds within d; it polls every 10 ms.
// what says what was awaited, for the failure message.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
