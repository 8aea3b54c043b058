package rediscap_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/rediscap"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestCheck: the version and durability rules, on INFO texts of servers
// this machine cannot run (6.2, 7.2).
func TestCheck(t *testing.T) {
	info := func(version string, aof int, online, syncing int) string {
		var b strings.Builder
		b.WriteString("# Server\r\nredis_version:" + version + "\r\n# Replication\r\nrole:master\r\n")
		b.WriteString("connected_slaves:" + string(rune('0'+online+syncing)) + "\r\n")
		for i := range online {
			b.WriteString("slave" + string(rune('0'+i)) + ":ip=127.0.0.1,port=7001,state=online,offset=1,lag=0\r\n")
		}
		for i := range syncing {
			b.WriteString("slave" + string(rune('0'+online+i)) + ":ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n")
		}
		b.WriteString("# Persistence\r\naof_enabled:" + string(rune('0'+aof)) + "\r\n")
		return b.String()
	}
	cases := []struct {
		name  string
		info  string
		needs rediscap.Needs
		kind  rediscap.Kind // 0: no problem
		want  string
	}{
		{"6.2 is too old for the scripts", info("6.2.14", 1, 1, 0), rediscap.Needs{}, rediscap.TooOld, "version 6.2.14; the sale's scripts need Redis 7.0 or later"},
		{"7.0 runs the scripts", info("7.0.15", 0, 0, 0), rediscap.Needs{}, 0, ""},
		{"aof on 7.0 has no WAITAOF", info("7.0.15", 1, 0, 0), rediscap.Needs{AOF: true}, rediscap.DurabilityUnavailable, "WAITAOF (Redis 7.2 or later)"},
		{"aof on 7.2 without appendonly", info("7.2.4", 0, 0, 0), rediscap.Needs{AOF: true}, rediscap.DurabilityUnavailable, "appendonly yes"},
		{"aof on 7.2 with appendonly", info("7.2.4", 1, 0, 0), rediscap.Needs{AOF: true}, 0, ""},
		{"a syncing replica cannot acknowledge", info("7.0.15", 0, 0, 1), rediscap.Needs{Replicas: 1}, rediscap.DurabilityUnavailable, "has 0 replica(s) online"},
		{"an online replica", info("7.0.15", 0, 1, 1), rediscap.Needs{Replicas: 1}, 0, ""},
		{"too old wins over durability", info("6.0.9", 0, 0, 0), rediscap.Needs{Replicas: 2}, rediscap.TooOld, "upgrade Redis"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := rediscap.Check([]rediscap.Server{rediscap.Parse("r:6379", tc.info)}, tc.needs)
			switch {
			case tc.kind == 0 && p != nil:
				t.Fatalf("unexpected problem: %v", p)
			case tc.kind != 0 && p == nil:
				t.Fatalf("no problem found, want %q", tc.want)
			case p != nil && (p.Kind != tc.kind || !strings.Contains(p.Msg, tc.want)):
				t.Fatalf("problem %d %q, want %d containing %q", p.Kind, p.Msg, tc.kind, tc.want)
			}
		})
	}
}

// TestProbe reads a real server: this one, and a private one with a replica.
func TestProbe(t *testing.T) {
	primary := testutil.StartRedisServer(t, "--appendonly", "yes")
	testutil.StartReplica(t, primary)
	servers, err := rediscap.Probe(context.Background(), primary.Client(t))
	if err != nil {
		t.Fatal(err)
	}
	s := servers[0]
	if len(servers) != 1 || s.Addr != primary.Addr || s.Role != "master" || s.Replicas != 1 || !s.AOF || !s.Version.AtLeast(7, 0) {
		t.Fatalf("Probe = %+v", servers)
	}
	if p := rediscap.Check(servers, rediscap.Needs{Replicas: 1}); p != nil {
		t.Fatalf("Check: %v", p)
	}
}
