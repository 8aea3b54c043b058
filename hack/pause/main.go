// Command pause is the sandbox ("pause") container of the local cluster
// (hack/local-cluster.sh): it holds a pod's namespaces open by blocking until
// it is told to stop, and, as PID 1 of pods that share their process
// namespace, reaps the orphaned children re-parented to it.
//
// hack/local-cluster.sh builds it with CGO_ENABLED=0, packs it with
// `go run ./hack/image --binary … --tag …` and imports it into containerd as
// its sandbox_image, since the machine reaches no image registry.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "pause: takes no arguments; it blocks until SIGINT or SIGTERM and reaps children")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap waits for every child that has exited, without blocking: one SIGCHLD
// can stand for several exits.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
