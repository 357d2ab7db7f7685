package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scimflow/scimflow/events"
)

// A login reads this replica's copy of the registry (registry id, lock, current SCIM groups). The
// copy trails the IDENTITY stream by the consumer's lag, so without a barrier a change identity-store
// had already published — a removal from Admins — could miss the session it should shape
// (read-your-writes across services). The callback therefore notes the stream's last sequence when it
// begins and, before it builds the session, waits until the IDENTITY consumer has applied up to it.

// The IDENTITY stream's head alone is not enough: a SCIM write acknowledged just before the callback
// may still sit in scim-ingest's outbox, on the SCIM stream, or in identity-store, and a session
// built then would miss it (a reauth login revoked milliseconds later, an automatic login without its
// new group). So, for an IdP with SCIM enabled, the callback also asks scim-ingest and then
// identity-store over NATS (events.BarrierSCIMSubject) for an IDENTITY sequence covering every SCIM
// write of that IdP acknowledged before it began, alongside the code exchange, bounded by
// login_catch_up_timeout from the callback's start, and waits for that sequence too. A barrier that
// cannot answer in time fails the login closed (503 identity_catching_up), never open.

// barrierResult is the answer of the SCIM barrier: the IDENTITY sequence to wait for, or why none.
type barrierResult struct {
	seq   uint64
	cause string // "timeout" or "unavailable" when err is set
	err   error
}

// startSCIMBarrier asks for idp's barrier in the background; the channel receives one result.
func (s *server) startSCIMBarrier(ctx context.Context, idp string) <-chan barrierResult {
	ch := make(chan barrierResult, 1)
	go func() {
		start := time.Now()
		seq, err := s.scimBarrier(ctx, idp)
		s.metrics.barrierWait.Observe(time.Since(start).Seconds())
		res := barrierResult{seq: seq, err: err}
		if err != nil {
			res.cause = "unavailable"
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				res.cause = "timeout"
			}
		}
		ch <- res
	}()
	return ch
}

// scimBarrier runs the two requests of events.BarrierSCIMSubject.
func (s *server) scimBarrier(ctx context.Context, idp string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LoginCatchUpTimeout.D())
	defer cancel()
	ask := func(subject string, body []byte) (uint64, error) {
		m, err := s.d.NC.RequestWithContext(ctx, subject, body)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", subject, err)
		}
		var rep events.BarrierReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			return 0, fmt.Errorf("%s: bad reply: %w", subject, err)
		}
		if rep.Error != "" {
			return 0, fmt.Errorf("%s: %s", subject, rep.Error)
		}
		return rep.Seq, nil
	}
	scimSeq, err := ask(events.BarrierSCIMSubject(idp), nil)
	if err != nil {
		return 0, err
	}
	body, _ := json.Marshal(events.BarrierRequest{SCIMSeq: scimSeq})
	return ask(events.BarrierIdentitySubject(idp), body)
}

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
