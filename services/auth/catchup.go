package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/scimflow/scimflow/events"
)

// A login reads this replica's copy of the registry (registry id, lock, current SCIM groups). The
// copy trails the IDENTITY stream by the consumer's lag, so without a barrier a change identity-store
// had already published — a removal from Admins — could miss the session it should shape
// (read-your-writes across services). The callback therefore notes the stream's last sequence when it
// begins and, before it builds the session, waits until the IDENTITY consumer has applied up to it.

// errCatchUpTimeout is the barrier's refusal when the projection did not reach the noted sequence.
var errCatchUpTimeout = errors.New("identity projection did not catch up in time")

// identityHead returns the IDENTITY stream's last sequence: what the projection must have applied
// before a login that starts now reads it.
func (s *server) identityHead(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoginCatchUpTimeout.D())
	defer cancel()
	st, err := s.d.JS.Stream(ctx, events.StreamIdentity)
	if err != nil {
		return 0, fmt.Errorf("identity stream info: %w", err)
	}
	return st.CachedInfo().State.LastSeq, nil
}

// catchUpPoll is how often the barrier looks at the consumer's cursor while it waits. The runner
// offers no notification, and the wait is rare and short (the projection is usually caught up).
const catchUpPoll = 2 * time.Millisecond

// awaitIdentity waits until the IDENTITY consumer's cursor reaches seq, at most
// login_catch_up_timeout. It measures real elapsed time (like the staleness check), not the request
// clock.
func (s *server) awaitIdentity(ctx context.Context, seq uint64) error {
	start := time.Now()
	defer func() { s.metrics.catchUpWait.Observe(time.Since(start).Seconds()) }()
	deadline := start.Add(s.cfg.LoginCatchUpTimeout.D())
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		cur := s.identityRn.Cursor()
		if cur >= seq {
			return nil
		}
		if err := s.identityRn.Halted(); err != nil {
			return fmt.Errorf("identity consumer halted: %w", err)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: applied %d of %d after %s", errCatchUpTimeout, cur, seq, s.cfg.LoginCatchUpTimeout.D())
		}
		t.Reset(min(catchUpPoll, time.Until(deadline)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
