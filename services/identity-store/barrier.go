package identitystore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/outbox"
)

// barrierPoll is how often a barrier looks at the SCIM cursor and the outbox while it waits.
const barrierPoll = time.Millisecond

// barrierMax bounds one barrier answer; the asking login gives up sooner (login_catch_up_timeout).
const barrierMax = 30 * time.Second

// serveBarrier answers auth's read-your-writes requests (events.BarrierIdentitySubject) until ctx
// ends: once the SCIM consumer has applied the requested SCIM sequence, the IDENTITY events of that
// IdP it derived were appended to the outbox in the same transactions; once the relay has published
// them, the IDENTITY stream's last sequence covers them.
func (s *service) serveBarrier(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(events.BarrierIdentitySubjects, func(m *nats.Msg) {
		go s.answerBarrier(ctx, m)
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", events.BarrierIdentitySubjects, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe() // the connection may be closing; nothing is left to clean up
	return nil
}

func (s *service) answerBarrier(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, barrierMax)
	defer cancel()
	var rep events.BarrierReply
	var req events.BarrierRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		rep.Error = "barrier: bad request: " + err.Error()
	} else if seq, err := s.barrier(ctx, events.BarrierIdP(m.Subject), req.SCIMSeq); err != nil {
		rep.Error = err.Error()
	} else {
		rep.Seq = seq
	}
	b, _ := json.Marshal(rep)
	_ = m.Respond(b) // a failed respond means the asker is gone (timed out); it failed closed already
}

// barrier returns an IDENTITY stream sequence covering every IDENTITY event of idp derived from the
// SCIM stream up to scimSeq.
func (s *service) barrier(ctx context.Context, idp string, scimSeq uint64) (uint64, error) {
	if idp == "" {
		return 0, fmt.Errorf("barrier: no IdP in the subject")
	}
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
		var key []byte
		if err := s.db.View(func(tx *bolt.Tx) error {
			var err error
			key, err = outbox.LastKey(tx, bucket, mine)
			return err
		}); err != nil {
			return 0, err
		}
		if err := outbox.WaitPublished(ctx, s.db, bucket, key, barrierPoll); err != nil {
			return 0, fmt.Errorf("barrier: outbox not published: %w", err)
		}
	}
	st, err := s.d.JS.Stream(ctx, events.StreamIdentity)
	if err != nil {
		return 0, fmt.Errorf("barrier: IDENTITY stream info: %w", err)
	}
	return st.CachedInfo().State.LastSeq, nil
}
