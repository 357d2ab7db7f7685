//go:build !linux

package e2e

import "syscall"

// childAttr is the default elsewhere: TestMain and cleanups stop the subprocesses.
func childAttr() *syscall.SysProcAttr { return nil }
