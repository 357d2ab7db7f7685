//go:build proxies && unix

package e2e

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// proxyAttr starts a proxy in a process group of its own (and, on Linux, killed with the test
// binary), so that stopProxyGroup reaches the worker processes nginx forks: killing only the
// master left `nginx: worker process` orphans (ppid 1) behind after every run.
func proxyAttr() *syscall.SysProcAttr {
	a := childAttr()
	if a == nil {
		a = &syscall.SysProcAttr{}
	}
	a.Setpgid = true
	return a
}

// stopProxyGroup ends the proxy whose process group is pgid, and everything it forked: SIGQUIT to
// the group first (nginx's graceful stop: the master stops its workers, waits for them and exits;
// Caddy exits), SIGKILL to whatever of the group is left once the leader exited or after 10 s,
// then it waits until the group is empty. exited is closed once the leader has been reaped. It
// returns an error when a member of the group is still there 10 s after the SIGKILL.
func stopProxyGroup(pgid int, exited <-chan struct{}) error {
	syscall.Kill(-pgid, syscall.SIGQUIT)
	select {
	case <-exited:
	case <-time.After(10 * time.Second): // a proxy that ignores SIGQUIT
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Signal 0 reports whether any process of the group is left (a zombie orphan counts
		// until init reaps it).
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process group %d still has processes 10s after SIGKILL (kill -0: %v)", pgid, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval; the deadline bounds the wait
	}
}
