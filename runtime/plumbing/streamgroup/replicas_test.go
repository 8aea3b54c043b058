package streamgroup_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/backoff"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/streamgroup"
	tu "github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestLoopWaitsForReplicas: a private primary and its replica, linked
// through a proxy. With WaitReplicas=1 the loop hands entries on while the
// replica keeps up; once the link is cut, new entries stay in hand (pending
// in the group, counted held back) however long, and reach the handler only
// after the replica is back and has them.
func TestLoopWaitsForReplicas(t *testing.T) {
	t.Parallel()
	primary := tu.StartRedisServer(t)
	link := tu.TCPProxy(t, primary.Addr)
	host, port, _ := net.SplitHostPort(link.Addr())
	tu.StartRedisServer(t, "--replicaof", host, port)
	tu.WaitReplicaOnline(t, primary, 1)
	rdb := primary.Client(t)
	s := &stream{t: t, rdb: rdb, key: "{s}:stream", dlq: "{s}:dlq"}
	m := streamgroup.NewReplicaMetrics(prometheus.NewRegistry())
	var got seen
	l := &streamgroup.Loop{
		Reader: streamgroup.Reader{RDB: rdb, Stream: s.key, Group: group, Consumer: "c1", Block: 100 * time.Millisecond,
			MinIdle: 2 * time.Second, WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond, Replication: m},
		DeadLetters: s.dlq, Handle: got.ackAll, Backoff: backoff.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond},
	}
	start(t, l)

	s.add(5)
	tu.Eventually(t, 10*time.Second, "5 entries handed on while the replica keeps up", func() bool { return len(got.get()) == 5 })

	link.Cut()
	tu.Eventually(t, 10*time.Second, "the primary to see its replica gone", func() bool {
		info, err := rdb.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:0")
	})
	held := s.add(4)
	// The loop holds the batch it read (not necessarily all 4) and reads no
	// more until the replica has it.
	tu.Eventually(t, 10*time.Second, "entries held back", func() bool { return value(m.Held) > 0 })
	// Held longer than MinIdle, the entries stay this consumer's: another
	// finds none idle enough to claim.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		m, _, err := rdb.XAutoClaim(context.Background(), &redis.XAutoClaimArgs{Stream: s.key, Group: group, Consumer: "c2",
			MinIdle: 2 * time.Second, Start: "0-0", Count: 100}).Result()
		if err != nil || len(m) > 0 {
			t.Fatalf("another consumer claimed %d held entries (err %v)", len(m), err)
		}
	}
	if n := len(got.get()); n != 5 {
		t.Fatalf("%d entries handed on while no replica had them, want 5", n)
	}
	if length, _ := s.left(); length != 4 {
		t.Errorf("%d entries left in the stream while held back, want 4", length)
	}
	if value(m.Waits.WithLabelValues("short")) == 0 {
		t.Error("no short WAIT counted")
	}

	link.Restore()
	tu.Eventually(t, 20*time.Second, "the held entries handed on once the replica is back", func() bool { return len(got.get()) == 9 })
	if g := got.get(); strings.Join(g[5:], ",") != strings.Join(held, ",") {
		t.Errorf("handed on %v after the replica came back, want %v", g[5:], held)
	}
	if v := value(m.Held); v != 0 {
		t.Errorf("held back gauge %v after the release, want 0", v)
	}
}

// TestReaderWaitsAfterReconnecting: entries read and held on a connection
// that then breaks are not handed on by the next one without a WAIT of its
// own: the reader reads them again from its own pending entries on a new
// connection and waits for the replica there.
func TestReaderWaitsAfterReconnecting(t *testing.T) {
	t.Parallel()
	primary := tu.StartRedisServer(t)
	link := tu.TCPProxy(t, primary.Addr)
	host, port, _ := net.SplitHostPort(link.Addr())
	tu.StartRedisServer(t, "--replicaof", host, port)
	tu.WaitReplicaOnline(t, primary, 1)
	front := tu.TCPProxy(t, primary.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: front.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	s := &stream{t: t, rdb: primary.Client(t), key: "{s}:stream", dlq: "{s}:dlq"}
	r := &streamgroup.Reader{RDB: rdb, Stream: s.key, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
		WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond}
	t.Cleanup(r.Close)
	ctx := context.Background()
	link.Cut()
	tu.Eventually(t, 10*time.Second, "the primary to see its replica gone", func() bool {
		info, err := s.rdb.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:0")
	})
	s.add(3)
	if msgs, err := r.Next(ctx); len(msgs) != 0 || err == nil {
		t.Fatalf("Next handed on %d entries no replica has (err %v)", len(msgs), err)
	}
	front.Cut() // the reader's connection breaks
	front.Restore()
	for range 5 {
		msgs, err := r.Next(ctx)
		if len(msgs) != 0 {
			t.Fatalf("after reconnecting, Next handed on %d entries no replica has (err %v)", len(msgs), err)
		}
	}
	link.Restore()
	var msgs []redis.XMessage
	tu.Eventually(t, 20*time.Second, "the entries handed on once the replica has them", func() bool {
		m, _ := r.Next(ctx)
		msgs = append(msgs, m...)
		return len(msgs) >= 3
	})
	if len(msgs) != 3 {
		t.Errorf("handed on %d entries, want 3", len(msgs))
	}
}

// value is the value of the one gauge or counter c.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}
