package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scimflow/scimflow/events"
)

// BarrierMax bounds one barrier answer; the asking login gives up sooner (login_catch_up_timeout).
const BarrierMax = 30 * time.Second

// BarrierFunc computes the answer to one read-your-writes barrier request for idp: the stream
// sequence that covers what the asker must see.
type BarrierFunc func(ctx context.Context, idp string, req events.BarrierRequest) (uint64, error)

// ServeBarrier answers the login barrier's requests on subjects (events.BarrierSCIMSubjects or
// events.BarrierIdentitySubjects) with answer until ctx ends. Each request is answered in its own
// goroutine within BarrierMax, so one IdP's backlog never delays another IdP's logins. It is the one
// responder scim-ingest and identity-store share; what each waits for is its answer function.
func ServeBarrier(ctx context.Context, nc *nats.Conn, subjects string, answer BarrierFunc) error {
	sub, err := nc.Subscribe(subjects, func(m *nats.Msg) {
		go func() {
			ctx, cancel := context.WithTimeout(ctx, BarrierMax)
			defer cancel()
			var rep events.BarrierReply
			var req events.BarrierRequest
			if len(m.Data) > 0 {
				if err := json.Unmarshal(m.Data, &req); err != nil {
					rep.Error = "barrier: bad request: " + err.Error()
				}
			}
			if rep.Error == "" {
				if idp := events.BarrierIdP(m.Subject); idp == "" {
					rep.Error = "barrier: no IdP in the subject"
				} else if seq, err := answer(ctx, idp, req); err != nil {
					rep.Error = err.Error()
				} else {
					rep.Seq = seq
				}
			}
			b, _ := json.Marshal(rep)
			_ = m.Respond(b) // a failed respond means the asker is gone (timed out); it failed closed already
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subjects, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe() // the connection may be closing; nothing is left to clean up
	return nil
}
