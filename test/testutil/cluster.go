package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterMasters is the number of masters of a test cluster (no replicas).
	clusterMasters = 3
	// clusterStartTimeout bounds one attempt to start a cluster: nodes answering,
	// `redis-cli --cluster create`, and every node agreeing the cluster is ok.
	clusterStartTimeout = 30 * time.Second
	// clusterAttempts is how many times RedisCluster retries with new ports
	// when a node could not bind its port (another process took it first).
	clusterAttempts = 5
	// clusterPortMin and clusterPortMax bound the client ports of cluster nodes.
	// A node also binds port+10000 for the cluster bus; with these bounds both
	// stay below Linux's default ephemeral range (32768-60999), so outgoing
	// connections of other tests rarely take them, and below the Kubernetes
	// NodePort range (30000-32767).
	clusterPortMin   = 15000
	clusterPortMax   = 20000
	clusterBusOffset = 10000
)

// errPortClash means a node could not bind its port; another attempt with
// other ports may succeed.
var errPortClash = errors.New("port already in use")

// Cluster is a local Redis Cluster of three masters and no replicas, made of
// redis-server processes started by RedisCluster in a t.TempDir(), without
// persistence. The processes are killed at cleanup, whether or not the test
// passed.
type Cluster struct {
	// Addrs holds the "127.0.0.1:port" address of every master.
	Addrs []string

	nodes []*clusterNode
}

// clusterNode is one redis-server process of a Cluster.
type clusterNode struct {
	port int
	dir  string
	cmd  *exec.Cmd
	out  *os.File
	done chan struct{} // closed when the process has exited and been waited for
	stop sync.Once
}

// RedisCluster starts a Redis Cluster of three masters on free ports of
// 127.0.0.1 (each node also needs port+10000 free for the cluster bus), joins
// them with `redis-cli --cluster create ... --cluster-yes` and waits until
// every node reports cluster_state:ok with all 16384 slots served. It retries
// with other ports when a port was taken in between, and fails the test with
// the output of redis-cli and the nodes' logs when the cluster does not come
// up within about 30 s. The processes are killed and waited for at cleanup.
//
// Starting a cluster takes a second or two; share one Cluster between the
// subtests of a test rather than starting one per subtest.
func RedisCluster(t testing.TB) *Cluster {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testutil: redis-server not found in PATH (%v); install it with `apt-get install -y redis-server` or run `bash hack/services.sh`", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("testutil: redis-cli not found in PATH (%v); install it with `apt-get install -y redis-server` (it ships redis-cli) or run `bash hack/services.sh`", err)
	}
	base := t.TempDir() // registered before the nodes' cleanups, so removed after they are killed
	var errs []error
	for attempt := 1; attempt <= clusterAttempts; attempt++ {
		c, err := startCluster(t, server, cli, filepath.Join(base, "attempt-"+strconv.Itoa(attempt)))
		if err == nil {
			return c
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
		if !errors.Is(err, errPortClash) {
			break
		}
	}
	t.Fatalf("testutil: could not start a local Redis Cluster:\n%v", errors.Join(errs...))
	return nil
}

// Client returns a cluster client connected to c. It is closed at cleanup,
// before the cluster's processes are stopped.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:       c.Addrs,
		DialTimeout: 2 * time.Second,
	})
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		return node.Ping(ctx).Err()
	}); err != nil {
		t.Fatalf("testutil: cluster client for %v cannot reach every node: %v", c.Addrs, err)
	}
	return cc
}

// startCluster makes one attempt at starting a cluster in dir. On error every
// process it started has been stopped, and the error carries the nodes' logs.
func startCluster(t testing.TB, server, cli, dir string) (c *Cluster, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()

	ports, err := pickClusterPorts(clusterMasters)
	if err != nil {
		return nil, err
	}
	c = &Cluster{}
	defer func() {
		if err != nil {
			for _, n := range c.nodes {
				n.kill()
			}
			err = fmt.Errorf("%w\n%s", err, c.logs())
		}
	}()
	for _, port := range ports {
		n, err := startNode(server, filepath.Join(dir, strconv.Itoa(port)), port)
		if err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, n)
		c.Addrs = append(c.Addrs, n.addr())
		t.Cleanup(n.kill)
	}
	for _, n := range c.nodes {
		if err := n.waitReady(ctx); err != nil {
			return c, err
		}
	}

	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	create := exec.CommandContext(ctx, cli, args...)
	out, err := create.CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitConverged(ctx); err != nil {
		return c, fmt.Errorf("%w\nredis-cli --cluster create said:\n%s", err, out)
	}
	return c, nil
}

// pickClusterPorts returns n distinct ports p in [clusterPortMin, clusterPortMax)
// such that p and p+clusterBusOffset are both free right now.
func pickClusterPorts(n int) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no free port pair (p, p+%d) found in [%d, %d): %w", clusterBusOffset, clusterPortMin, clusterPortMax, errPortClash)
		}
		r, err := rand.Int(rand.Reader, big.NewInt(clusterPortMax-clusterPortMin))
		if err != nil {
			return nil, err
		}
		p := clusterPortMin + int(r.Int64())
		if seen[p] || !portFree(p) || !portFree(p+clusterBusOffset) {
			continue
		}
		seen[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

// startNode starts one cluster-enabled redis-server on port, with its config,
// log and output in dir.
func startNode(server, dir string, port int) (*clusterNode, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(server,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--cluster-node-timeout", "5000",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
		"--daemonize", "no",
	)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("starting %s: %w", server, err)
	}
	n := &clusterNode{port: port, dir: dir, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
		close(n.done)
	}()
	return n, nil
}

func (n *clusterNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// exited reports whether the process has already exited.
func (n *clusterNode) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// kill stops the process (SIGKILL: nothing is persisted) and waits for it. It
// is safe to call more than once.
func (n *clusterNode) kill() {
	n.stop.Do(func() {
		_ = n.cmd.Process.Kill()
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// waitReady waits until this node's own process answers on its port. Seeing
// an answer from another process on the same port, or the process exiting
// because the port was taken, gives errPortClash.
func (n *clusterNode) waitReady(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: n.addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	want := strconv.Itoa(n.cmd.Process.Pid)
	for {
		if n.exited() {
			if bytes.Contains(n.readLogs(), []byte("Address already in use")) {
				return fmt.Errorf("node %s exited: %w", n.addr(), errPortClash)
			}
			return fmt.Errorf("node %s exited during startup: %s", n.addr(), n.cmd.ProcessState)
		}
		info, err := c.Info(ctx, "server").Result()
		if err == nil {
			if infoField(info, "process_id") != want {
				return fmt.Errorf("another process answers on %s: %w", n.addr(), errPortClash)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s did not answer: %w (last error: %v)", n.addr(), ctx.Err(), err)
		case <-n.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitConverged waits until every node sees the whole cluster: state ok, all
// slots assigned and served, all masters known.
func (c *Cluster) waitConverged(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.addr(), DialTimeout: time.Second, MaxRetries: -1})
	}
	defer func() {
		for _, cl := range clients {
			_ = cl.Close()
		}
	}()
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": "16384",
		"cluster_slots_ok":       "16384",
		"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
	}
	var last string
	for {
		ok := true
		for i, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				ok, last = false, fmt.Sprintf("%s: CLUSTER INFO: %v", c.nodes[i].addr(), err)
				break
			}
			for k, v := range want {
				if got := infoField(info, k); got != v {
					ok, last = false, fmt.Sprintf("%s: %s is %q, want %q\n%s", c.nodes[i].addr(), k, got, v, info)
					break
				}
			}
			if !ok {
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster did not converge: %w; last seen: %s", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// infoField returns the value of key in the output of INFO or CLUSTER INFO.
func infoField(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}

// readLogs returns the node's log file and captured output.
func (n *clusterNode) readLogs() []byte {
	var b bytes.Buffer
	for _, name := range []string{"redis.log", "stdout.log"} {
		data, err := os.ReadFile(filepath.Join(n.dir, name))
		if err == nil {
			b.Write(data)
		}
	}
	return b.Bytes()
}

// logs returns the last lines of every node's log, for failure messages.
func (c *Cluster) logs() string {
	var b strings.Builder
	for _, n := range c.nodes {
		lines := strings.Split(strings.TrimRight(string(n.readLogs()), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&b, "--- log of node %s (%s):\n%s\n", n.addr(), n.dir, strings.Join(lines, "\n"))
	}
	return b.String()
}
