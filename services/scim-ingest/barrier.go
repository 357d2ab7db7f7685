package scimingest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/outbox"
)

// barrierPoll is how often a barrier looks at the outbox while it waits for the relay.
const barrierPoll = time.Millisecond

// barrier answers auth's read-your-writes request for idp (broker.ServeBarrier on
// events.BarrierSCIMSubjects). A SCIM write is acknowledged to the IdP after its outbox records
// committed, so every write of the IdP acknowledged before the request has its records in the outbox
// now or already published: the answer waits until the newest of them is published and then gives
// the SCIM stream's last sequence, which covers it.
func (s *server) barrier(ctx context.Context, idp string, _ events.BarrierRequest) (uint64, error) {
	mine := func(subject string) bool {
		return strings.HasPrefix(subject, "scim.") && events.SubjectIdP(subject) == idp
	}
	if err := outbox.WaitMatchingPublished(ctx, s.db, outbox.Bucket, mine, barrierPoll); err != nil {
		return 0, fmt.Errorf("barrier: outbox not published: %w", err)
	}
	st, err := s.js.Stream(ctx, events.StreamSCIM)
	if err != nil {
		return 0, fmt.Errorf("barrier: SCIM stream info: %w", err)
	}
	return st.CachedInfo().State.LastSeq, nil
}
