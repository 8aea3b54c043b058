//go:build unix

package rollback_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/order"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderstate"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/rollback"
)

// Environment of the child process the kill test runs.
const (
	envChild = "FLASHSALE_ROLLBACK_CHILD" // "kill" or "run"
	envRedis = "FLASHSALE_ROLLBACK_CHILD_REDIS"
	envDSN   = "FLASHSALE_ROLLBACK_CHILD_DSN"
	envSale  = "FLASHSALE_ROLLBACK_CHILD_SALE"
)

// TestMain turns the test binary into a rollback process when the kill test
// re-executes it.
func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child runs one rollback pass; in "kill" mode it SIGKILLs itself right
// after its first won cancel, before the unit goes back to Redis.
func child(mode string) int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedis)})
	defer rdb.Close()
	db, err := orderdb.Open(os.Getenv(envDSN))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer db.Close()
	if mode == "kill" {
		rollback.SetAfterCancel(func(orderNo string) {
			fmt.Println(orderNo)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		})
	}
	rb, err := rollback.New(rollback.Config{SaleKey: os.Getenv(envSale), Redis: rdb, Orders: orderdb.New(db), Concurrency: 1, Logger: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	p, err := rb.RunOnce(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("cancelled=%d returned=%d finished=%d\n", p.Cancelled, p.Returned, p.Finished)
	return 0
}

func runChild(t *testing.T, f *fixture, mode string) (stdout string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$") //nolint:gosec // re-executes this very test binary
	cmd.Env = append(os.Environ(), envChild+"="+mode, envRedis+"="+f.rdb.(*redis.Client).Options().Addr, envDSN+"="+f.dsn, envSale+"="+f.fs.SaleKey())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if errOut.Len() > 0 {
		t.Logf("child %s stderr: %s", mode, errOut.String())
	}
	return out.String(), err
}

// TestKilledBetweenCancelAndReturn kills a rollback process (SIGKILL) after
// it won the cancel of an order in MySQL and before it returned the unit to
// Redis, then restarts it: every expired order ends cancelled and its unit
// comes back exactly once.
func TestKilledBetweenCancelAndReturn(t *testing.T) {
	const n = 50
	f := setup(t, n, time.Now().Add(-time.Second))
	ctx := context.Background()

	out, err := runChild(t, f, "kill")
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child was not killed: %v\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", err)
	}
	victim := strings.TrimSpace(out)
	// The crash hit the window: cancelled in MySQL, unit not back in Redis.
	c := f.counts(t)
	if c.Cancelled != 1 || c.Returning != 1 || c.Created != n-1 {
		t.Fatalf("after the kill: %+v", c)
	}
	r, err := f.store.Get(ctx, victim)
	if err != nil || r.Status != order.Cancelled || r.StockReturned {
		t.Fatalf("victim %q: %+v %v", victim, r, err)
	}
	if s := f.stock(t); s != 0 {
		t.Fatalf("stock %d after the kill, want 0", s)
	}

	// Restart: the first step finishes the victim, the second the rest.
	out, err = runChild(t, f, "run")
	if err != nil {
		t.Fatalf("restarted child: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("cancelled=%d returned=%d finished=1", n-1, n)) {
		t.Fatalf("restarted child did: %s", out)
	}
	f.checkRedis(t)
	if s := f.stock(t); s != n {
		t.Fatalf("stock %d, want %d", s, n)
	}

	// Once more, in process, and a stray release: nothing moves.
	rb, err := rollback.New(rollback.Config{SaleKey: f.fs.SaleKey(), Redis: f.rdb, Orders: f.store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := rb.RunOnce(ctx); err != nil || p != (rollback.Pass{}) {
		t.Fatalf("third pass: %+v %v", p, err)
	}
	if back, err := orderstate.Release(ctx, f.rdb, &r.Order, 1); err != nil || back {
		t.Fatalf("second release of the victim returned stock: %v %v", back, err)
	}
	if s := f.stock(t); s != n {
		t.Fatalf("stock %d, want %d", s, n)
	}
}
