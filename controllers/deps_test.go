package controllers

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestConnPoolShares: sales on the same endpoints share one set of
// connections, closed when the last of them lets go.
func TestConnPoolShares(t *testing.T) {
	var p connPool
	now := time.Now()
	newConns := func(fp string) (*conns, *redis.Client) {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
		return &conns{fingerprint: fp, rdb: rdb}, rdb
	}
	a, rdbA := newConns("fp1")
	if got := p.bind("ns/a", a, now, 1); got != a {
		t.Fatal("first bind did not keep its connections")
	}
	if p.shared("fp1") != a {
		t.Fatal("connections not shared by fingerprint")
	}
	// A second sale that dialled the same endpoints concurrently gets the
	// pool's connections; its own are closed.
	dup, rdbDup := newConns("fp1")
	if got := p.bind("ns/b", dup, now, 1); got != a {
		t.Fatal("second sale did not get the shared connections")
	}
	if rdbDup.Ping(t.Context()).Err() != redis.ErrClosed {
		t.Fatal("the duplicate connections were not closed")
	}
	p.drop("ns/a")
	if p.shared("fp1") != a || rdbA.Ping(t.Context()).Err() == redis.ErrClosed {
		t.Fatal("connections closed while another sale uses them")
	}
	// Rebinding to other endpoints releases the old ones.
	other, _ := newConns("fp2")
	p.bind("ns/b", other, now, 2)
	if p.shared("fp1") != nil || rdbA.Ping(t.Context()).Err() != redis.ErrClosed {
		t.Fatal("connections of no sale left open")
	}
	p.closeAll()
	if p.get("ns/b") != nil {
		t.Fatal("closeAll kept a binding")
	}
}
