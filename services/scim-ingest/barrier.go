package scimingest

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

// barrierPoll is how often a barrier looks at the outbox while it waits for the relay.
const barrierPoll = time.Millisecond

// barrierMax bounds one barrier answer; the asking login gives up sooner (login_catch_up_timeout).
const barrierMax = 30 * time.Second

// serveBarrier answers auth's read-your-writes requests (events.BarrierSCIMSubject) until ctx ends.
// A SCIM write is acknowledged to the IdP after its outbox records committed, so every write of the
// IdP acknowledged before the request has its records in the outbox now or already published: the
// answer waits until the newest of them is published and then gives the SCIM stream's last
// sequence, which covers it.
func (s *server) serveBarrier(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(events.BarrierSCIMSubjects, func(m *nats.Msg) {
		go s.answerBarrier(ctx, m)
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", events.BarrierSCIMSubjects, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe() // the connection may be closing; nothing is left to clean up
	return nil
}

func (s *server) answerBarrier(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, barrierMax)
	defer cancel()
	var rep events.BarrierReply
	if seq, err := s.barrier(ctx, events.BarrierIdP(m.Subject)); err != nil {
		rep.Error = err.Error()
	} else {
		rep.Seq = seq
	}
	b, _ := json.Marshal(rep)
	// A failed respond means the asker is gone (timed out); it has failed closed already.
	_ = m.Respond(b)
}

// barrier returns a SCIM stream sequence covering every write of idp committed so far.
func (s *server) barrier(ctx context.Context, idp string) (uint64, error) {
	if idp == "" {
		return 0, fmt.Errorf("barrier: no IdP in the subject")
	}
	var key []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		key, err = outbox.LastKey(tx, outbox.Bucket, func(subject string) bool {
			return strings.HasPrefix(subject, "scim.") && events.SubjectIdP(subject) == idp
		})
		return err
	})
	if err != nil {
		return 0, err
	}
	if err := outbox.WaitPublished(ctx, s.db, outbox.Bucket, key, barrierPoll); err != nil {
		return 0, fmt.Errorf("barrier: outbox not published: %w", err)
	}
	st, err := s.js.Stream(ctx, events.StreamSCIM)
	if err != nil {
		return 0, fmt.Errorf("barrier: SCIM stream info: %w", err)
	}
	return st.CachedInfo().State.LastSeq, nil
}
