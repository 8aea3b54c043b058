package testutil

import "syscall"

// childProcAttr makes the kernel kill a child process when the test binary
// dies (for instance on a `go test -timeout` panic), so that no redis-server
// outlives its test even when t.Cleanup cannot run.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
