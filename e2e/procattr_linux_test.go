//go:build linux

package e2e

import "syscall"

// childAttr makes the kernel kill a serve subprocess if the test binary dies first (a panic, a
// timeout), so no scimflow process outlives the suite.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
