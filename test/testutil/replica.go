package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a private standalone redis-server process of one test, on a
// free port of 127.0.0.1, with its data and log in a t.TempDir(): for tests
// that kill, restart or replicate a server, which the shared Redis must never
// suffer. The process is SIGKILLed and waited for at cleanup.
type RedisServer struct {
	// Addr is "127.0.0.1:port"; it stays the same across Restart.
	Addr string
	// Dir holds the server's files (AOF, RDB, redis.log).
	Dir string

	t      testing.TB
	server string
	port   int
	args   []string
	node   *clusterNode
}

// StartRedisServer starts a private redis-server with the given extra
// arguments (for example "--appendonly", "yes"). Without them it persists
// nothing (--save "" --appendonly no). It fails the test when the server does
// not answer within 10 s.
func StartRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testutil: redis-server not found in PATH (%v); install it with `apt-get install -y redis-server`", err)
	}
	base := t.TempDir()
	var errs []error
	for attempt := 1; attempt <= clusterAttempts; attempt++ {
		s := &RedisServer{t: t, server: server, port: FreePort(t), args: args}
		s.Addr = "127.0.0.1:" + strconv.Itoa(s.port)
		s.Dir = filepath.Join(base, "attempt-"+strconv.Itoa(attempt))
		err := s.start()
		if err == nil {
			return s
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
		if !errors.Is(err, errPortClash) {
			break
		}
	}
	t.Fatalf("testutil: could not start a private redis-server:\n%v", errors.Join(errs...))
	return nil
}

// StartReplica starts a private redis-server replicating primary (and the
// extra args) and waits until its link to the primary is up and the primary
// lists it online.
func StartReplica(t testing.TB, primary *RedisServer, args ...string) *RedisServer {
	t.Helper()
	host, port, _ := net.SplitHostPort(primary.Addr)
	r := StartRedisServer(t, append([]string{"--replicaof", host, port}, args...)...)
	WaitReplicaOnline(t, primary, 1)
	return r
}

// WaitReplicaOnline waits (10 s at most) until primary lists n replicas online.
func WaitReplicaOnline(t testing.TB, primary *RedisServer, n int) {
	t.Helper()
	c := primary.Client(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && strings.Count(info, "state=online") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testutil: %d replica(s) of %s not online within 10s: %v\n%s", n, primary.Addr, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *RedisServer) start() error {
	if err := os.MkdirAll(s.Dir, 0o750); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(s.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis.log"), "--daemonize", "no",
	}
	args = append(args, s.args...) // later arguments win
	cmd := exec.Command(s.server, args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return fmt.Errorf("starting %s: %w", s.server, err)
	}
	n := &clusterNode{port: s.port, dir: s.Dir, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
		close(n.done)
	}()
	s.node = n
	s.t.Cleanup(n.kill)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.waitReady(ctx); err != nil {
		n.kill()
		return fmt.Errorf("%w\n%s", err, n.readLogs())
	}
	return nil
}

// Kill SIGKILLs the server (nothing is flushed) and waits for it to exit.
func (s *RedisServer) Kill() { s.node.kill() }

// Restart starts the server again on the same port, directory and arguments
// (after Kill): with appendonly yes it reloads its AOF.
func (s *RedisServer) Restart() {
	s.t.Helper()
	var err error
	for range 50 { // the port may linger for a moment after the kill
		if err = s.start(); err == nil || !errors.Is(err, errPortClash) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("testutil: restart redis-server on %s: %v", s.Addr, err)
	}
}

// Logs returns the server's log, for failure messages.
func (s *RedisServer) Logs() string { return string(s.node.readLogs()) }

// Client returns a client of the server, closed at cleanup.
func (s *RedisServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TCPProxyOn starts a proxy to target on addr, a port of a proxy that was
// Cut: clients of the old proxy reconnect to the same address and reach the
// new target (a promoted replica, say). It is closed at cleanup.
func TCPProxyOn(t testing.TB, addr, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, addr: addr, conns: map[net.Conn]struct{}{}}
	p.Restore()
	t.Cleanup(func() {
		p.Cut()
		p.wg.Wait()
	})
	return p
}
