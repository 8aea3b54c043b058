// Command localdeps makes the host's dependencies reachable from the pods of
// the local cluster (hack/local-cluster.sh starts and stops it). It runs
//
//   - a Kafka-protocol broker (github.com/twmb/franz-go/pkg/kfake, in memory)
//     listening on --kafka and advertising that same address, so that clients
//     in pods and on the host both reach the broker the metadata names;
//   - TCP forwarders (--forward LISTEN=TARGET, repeatable) from an address
//     pods can route to (the node IP) to services that listen only on
//     127.0.0.1, such as the Redis and MariaDB of hack/services.sh.
//
// For example:
//
//	go run ./hack/localdeps --kafka 192.0.2.2:19092 \
//	    --forward 192.0.2.2:16379=127.0.0.1:6379 --forward 192.0.2.2:13306=127.0.0.1:3306
//
// It prints one line per listener, then "ready", and runs until SIGINT or
// SIGTERM. The broker keeps its topics and offsets in memory only: they are
// gone when it stops.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// dialTimeout bounds how long a forwarder waits for its target.
const dialTimeout = 5 * time.Second

// forwardFlag collects the repeatable --forward LISTEN=TARGET flag.
type forwardFlag []forward

type forward struct{ listen, target string }

func (f *forwardFlag) String() string {
	parts := make([]string, 0, len(*f))
	for _, fw := range *f {
		parts = append(parts, fw.listen+"="+fw.target)
	}
	return strings.Join(parts, ",")
}

func (f *forwardFlag) Set(s string) error {
	listen, target, ok := strings.Cut(s, "=")
	if !ok || listen == "" || target == "" {
		return fmt.Errorf("%q: want LISTEN=TARGET, e.g. 192.0.2.2:16379=127.0.0.1:6379", s)
	}
	for _, a := range []string{listen, target} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("%q: %w", a, err)
		}
	}
	*f = append(*f, forward{listen: listen, target: target})
	return nil
}

func main() {
	var (
		kafkaAddr  string
		autoCreate bool
		partitions int
		forwards   forwardFlag
	)
	flag.StringVar(&kafkaAddr, "kafka", "", "HOST:PORT the Kafka broker listens on and advertises (empty: no broker)")
	flag.BoolVar(&autoCreate, "kafka-auto-create-topics", false, "let the broker create a topic a client asks metadata for (auto.create.topics.enable)")
	flag.IntVar(&partitions, "kafka-default-partitions", 0, "partitions of a topic created without a count (0: kfake's default)")
	flag.Var(&forwards, "forward", "LISTEN=TARGET: forward TCP connections to LISTEN to TARGET (repeatable)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("localdeps: ")
	if flag.NArg() > 0 || (kafkaAddr == "" && len(forwards) == 0) {
		fmt.Fprintln(os.Stderr, "usage: localdeps [--kafka HOST:PORT] [--forward LISTEN=TARGET]...")
		flag.PrintDefaults()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, kafkaAddr, autoCreate, partitions, forwards)
	stop()
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// run starts everything, then waits for ctx to be done and closes it all.
func run(ctx context.Context, kafkaAddr string, autoCreate bool, partitions int, forwards []forward) error {
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	if kafkaAddr != "" {
		c, err := startKafka(kafkaAddr, autoCreate, partitions)
		if err != nil {
			return err
		}
		closers = append(closers, c.Close)
		log.Printf("kafka broker listening on %s (advertised as the same address)", strings.Join(c.ListenAddrs(), ","))
	}

	var wg sync.WaitGroup
	for _, fw := range forwards {
		ln, err := net.Listen("tcp", fw.listen)
		if err != nil {
			return fmt.Errorf("forward %s=%s: %w", fw.listen, fw.target, err)
		}
		closers = append(closers, func() { _ = ln.Close() })
		log.Printf("forwarding %s to %s", ln.Addr(), fw.target)
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(ln, fw.target)
		}()
	}
	log.Print("ready")

	<-ctx.Done()
	log.Print("stopping")
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	closers = nil
	wg.Wait()
	return nil
}

// startKafka starts a one-broker kfake cluster on addr. kfake always asks
// for 127.0.0.1:PORT; the listen function keeps the port and swaps the host,
// and the broker advertises the address it actually listens on.
func startKafka(addr string, autoCreate bool, partitions int) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--kafka %q: %w", addr, err)
	}
	var port int
	if _, err := fmt.Sscan(portStr, &port); err != nil {
		return nil, fmt.Errorf("--kafka %q: bad port: %w", addr, err)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ClusterID("flashsale-local"),
		kfake.WithLogger(kfake.BasicLogger(os.Stderr, kfake.LogLevelWarn)),
		kfake.ListenFn(func(network, asked string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(asked)
			if err != nil {
				return nil, err
			}
			return net.Listen(network, net.JoinHostPort(host, p))
		}),
	}
	if autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(partitions))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka broker on %s: %w", addr, err)
	}
	return c, nil
}

// serve accepts connections on ln until it is closed and forwards each one
// to target. Connections still open then end with the process.
func serve(ln net.Listener, target string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Printf("accept on %s: %v", ln.Addr(), err)
			}
			return
		}
		go pipe(conn, target)
	}
}

// pipe copies both ways between client and a new connection to target,
// passing a half-close on, until both directions are done.
func pipe(client net.Conn, target string) {
	defer client.Close()
	upstream, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		log.Printf("%s -> %s: %v", client.RemoteAddr(), target, err)
		return
	}
	defer upstream.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(upstream, client)
	go cp(client, upstream)
	<-done
	<-done
}
