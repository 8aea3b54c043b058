//go:build !linux

package testutil

import "syscall"

// childProcAttr returns nil: parent-death signals are Linux-only.
func childProcAttr() *syscall.SysProcAttr { return nil }
