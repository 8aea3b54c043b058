// Package rediscap reads what a Redis server can do (its version, its online
// replicas, whether its append-only file is on) and says, in words an SRE can
// act on, what is missing for a given use. The operator checks it at warm-up
// and the seckill at start-up, so a server that cannot keep a promise is
// refused before the first buyer rather than discovered by one.
package rediscap

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Version is a Redis version: major, minor, patch.
type Version [3]int

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// AtLeast reports whether v >= major.minor.
func (v Version) AtLeast(major, minor int) bool {
	return v[0] > major || v[0] == major && v[1] >= minor
}

// The minimum versions the sale's features need.
var (
	// MinScripts: the sale's Lua scripts start with the `#!lua` shebang
	// (Redis Functions-era script flags), which Redis 7.0 introduced.
	MinScripts = Version{7, 0, 0}
	// MinWaitAOF: WAITAOF appeared in Redis 7.2.
	MinWaitAOF = Version{7, 2, 0}
)

// Server is what one server (one master of a cluster) said about itself.
type Server struct {
	Addr    string
	Version Version
	Role    string
	// Replicas is the number of replicas in state online.
	Replicas int
	// AOF is appendonly yes (aof_enabled:1).
	AOF bool
}

// Needs is what a sale asks of its Redis.
type Needs struct {
	// Replicas that must acknowledge each purchase (WAIT).
	Replicas int
	// AOF: each purchase waits for the primary's AOF fsync (WAITAOF).
	AOF bool
}

// Kind tells the two families of problems apart: a server too old to run
// the sale at all, or one that cannot give the durability asked for.
type Kind int

// The kinds of Problem.
const (
	TooOld Kind = iota + 1
	DurabilityUnavailable
)

// Problem is a server that cannot serve the sale as configured; Msg says
// what was found and what to configure.
type Problem struct {
	Kind Kind
	Msg  string
}

func (p *Problem) Error() string { return p.Msg }

// Probe reads INFO from every master (one server for a standalone client).
// Plain INFO (no section arguments) is used because servers older than 7.0
// refuse several sections in one call, and those are the ones to name.
func Probe(ctx context.Context, rdb redis.UniversalClient) ([]Server, error) {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var (
			mu  sync.Mutex
			out []Server
		)
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			s, err := probeOne(ctx, node, node.Options().Addr)
			mu.Lock()
			out = append(out, s)
			mu.Unlock()
			return err
		})
		return out, err
	}
	addr := ""
	if c, ok := rdb.(*redis.Client); ok {
		addr = c.Options().Addr
	}
	s, err := probeOne(ctx, rdb, addr)
	return []Server{s}, err
}

func probeOne(ctx context.Context, c redis.Cmdable, addr string) (Server, error) {
	info, err := c.Info(ctx).Result()
	if err != nil {
		return Server{Addr: addr}, fmt.Errorf("INFO on redis %s: %w", addr, err)
	}
	return Parse(addr, info), nil
}

// Parse reads the fields Probe needs from the text of INFO.
func Parse(addr, info string) Server {
	s := Server{Addr: addr}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case k == "redis_version":
			s.Version = parseVersion(v)
		case k == "role":
			s.Role = v
		case k == "aof_enabled":
			s.AOF = v == "1"
		case strings.HasPrefix(k, "slave") && strings.Contains(v, "state=online"):
			// slave0:ip=…,port=…,state=online,offset=…,lag=0; connected_slaves
			// also counts replicas still syncing, which cannot acknowledge.
			if _, err := strconv.Atoi(k[len("slave"):]); err == nil {
				s.Replicas++
			}
		}
	}
	return s
}

func parseVersion(v string) Version {
	var out Version
	for i, part := range strings.SplitN(v, ".", 3) {
		n, _ := strconv.Atoi(strings.TrimFunc(part, func(r rune) bool { return r < '0' || r > '9' }))
		out[i] = n
	}
	return out
}

// Check says what the servers lack for the sale's scripts and for n; nil
// when nothing is missing. The first problem found is returned: a server
// too old comes before durability.
func Check(servers []Server, n Needs) *Problem {
	for _, s := range servers {
		if !s.Version.AtLeast(MinScripts[0], MinScripts[1]) {
			return &Problem{Kind: TooOld, Msg: fmt.Sprintf(
				"redis %s runs version %s; the sale's scripts need Redis %d.%d or later (they use the #!lua shebang): upgrade Redis",
				s.Addr, s.Version, MinScripts[0], MinScripts[1])}
		}
	}
	for _, s := range servers {
		if p := checkDurability(s, n); p != nil {
			return p
		}
	}
	return nil
}

func checkDurability(s Server, n Needs) *Problem {
	switch {
	case n.AOF && !s.Version.AtLeast(MinWaitAOF[0], MinWaitAOF[1]):
		return &Problem{Kind: DurabilityUnavailable, Msg: fmt.Sprintf(
			"spec.redis.durability.aof needs WAITAOF (Redis %d.%d or later), but redis %s runs %s: upgrade Redis, or drop durability.aof and use durability.replicas (WAIT, any version)",
			MinWaitAOF[0], MinWaitAOF[1], s.Addr, s.Version)}
	case n.AOF && !s.AOF:
		return &Problem{Kind: DurabilityUnavailable, Msg: fmt.Sprintf(
			"spec.redis.durability.aof needs the append-only file, but redis %s has appendonly no: set appendonly yes (and appendfsync always or everysec) in its configuration",
			s.Addr)}
	case n.Replicas > s.Replicas:
		return &Problem{Kind: DurabilityUnavailable, Msg: fmt.Sprintf(
			"spec.redis.durability.replicas is %d, but redis %s has %d replica(s) online: add replicas (replicaof %s) or lower durability.replicas",
			n.Replicas, s.Addr, s.Replicas, s.Addr)}
	}
	return nil
}
