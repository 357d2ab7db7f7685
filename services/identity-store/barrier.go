package identitystore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/outbox"
)

// barrierPoll is how often a barrier looks at the SCIM cursor and the outbox while it waits.
const barrierPoll = time.Millisecond

// barrier answers auth's read-your-writes request for idp (broker.ServeBarrier on
// events.BarrierIdentitySubjects): once the SCIM consumer has applied the requested SCIM sequence,
// the IDENTITY events of that IdP it derived were appended to the outbox in the same transactions;
// once the relay has published them, the IDENTITY stream's last sequence covers them.
func (s *service) barrier(ctx context.Context, idp string, req events.BarrierRequest) (uint64, error) {
	scimSeq := req.SCIMSeq
	t := time.NewTimer(0)
	defer t.Stop()
	for s.scim.Cursor() < scimSeq {
		if err := s.scim.Halted(); err != nil {
			return 0, fmt.Errorf("barrier: SCIM consumer halted: %w", err)
		}
		t.Reset(barrierPoll)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("barrier: SCIM stream applied to %d of %d: %w", s.scim.Cursor(), scimSeq, ctx.Err())
		case <-t.C:
		}
	}
	mine := func(subject string) bool {
		return strings.HasPrefix(strings.TrimPrefix(subject, events.PriorityPrefix), "identity.") && events.SubjectIdP(subject) == idp
	}
	for _, bucket := range []string{outbox.Bucket, outbox.PriorityBucket} {
		if err := outbox.WaitMatchingPublished(ctx, s.db, bucket, mine, barrierPoll); err != nil {
			return 0, fmt.Errorf("barrier: outbox not published: %w", err)
		}
	}
	st, err := s.d.JS.Stream(ctx, events.StreamIdentity)
	if err != nil {
		return 0, fmt.Errorf("barrier: IDENTITY stream info: %w", err)
	}
	return st.CachedInfo().State.LastSeq, nil
}
