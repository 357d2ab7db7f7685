package scenario

import (
	"context"
	"fmt"
	"time"
)

// Eventually calls check until it returns nil, ctx ends or timeout passes, and returns the last
// error then. It is how every caller waits for the asynchronous pipeline: a deadline, never a
// fixed sleep.
func Eventually(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not true after %s: %w", timeout, err)
		case <-t.C:
		}
	}
}
