package identitystore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// publishPriority puts evs on the SCIM_PRIORITY lane, as scim-ingest's relay does for security facts.
func (h *harness) publishPriority(evs ...events.Event) {
	h.t.Helper()
	for _, e := range evs {
		data, err := events.Marshal(e)
		if err != nil {
			h.t.Fatal(err)
		}
		if _, err := h.js.Publish(context.Background(), events.PriorityPrefix+e.Subject, data, jetstream.WithMsgID(e.ID)); err != nil {
			h.t.Fatal(err)
		}
	}
}

var errHeld = errors.New("held by the test")

// TestPriorityLaneAheadOfBacklog: a deactivation committed behind a backlog of upserts (300 here; the
// 50,000-event backlog is auth's TestPriorityLockAheadOfBacklog) is turned into
// a revocation and a lock on IDENTITY_PRIORITY while the ordered SCIM consumer is still held before
// the backlog; the registry changes only by the ordered apply, once, and a rebuild from the streams
// equals the live registry (history included).
func TestPriorityLaneAheadOfBacklog(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.gen("idp1")
	p := pol(events.UpdateAutomatic, true, true)
	var commit uint64
	stamp := func(e events.Event) events.Event {
		commit++
		e.Commit = commit
		return e
	}
	h.start()
	h.publish(stamp(g.ev(scimUser("s-ada", "ada@example.com", "Ada", true, 1, p))))
	h.caughtUp()
	uid := h.userByEmail("idp1", "ada@example.com").ID
	h.stop()

	for i := 0; i < 300; i++ {
		h.publish(stamp(g.ev(scimUser(fmt.Sprintf("s-%d", i), fmt.Sprintf("u%d@example.com", i), "U", true, 1, p))))
	}
	deact := stamp(g.ev(scimUser("s-ada", "ada@example.com", "Ada", false, 2, p)))
	h.publish(deact)
	h.publishPriority(deact)

	var hold atomic.Bool
	hold.Store(true)
	s := h.startWith(func(e events.Event) error {
		if hold.Load() && e.Type == events.TypeSCIMUserUpserted {
			return errHeld
		}
		return nil
	})
	eventually(t, "priority lock published", func() bool {
		return h.lastSeq(events.StreamIdentityPriority) > 0
	})
	prio := h.streamEvents(events.StreamIdentityPriority)
	var types []string
	for _, e := range prio {
		types = append(types, e.Type)
		if e.Commit != deact.Commit || e.CausationID != deact.ID {
			t.Errorf("priority event %s: commit %d cause %s, want %d %s", e.Type, e.Commit, e.CausationID, deact.Commit, deact.ID)
		}
	}
	if fmt.Sprint(types) != fmt.Sprint([]string{events.TypeSessionsRevoked, events.TypeUserLocked}) {
		t.Errorf("IDENTITY_PRIORITY = %v, want sessions_revoked, locked", types)
	}
	if u := h.user(uid); u.Deprovisioned || u.Locked {
		t.Errorf("registry user deprovisioned=%v locked=%v before the ordered apply, want false false (the lane changes no registry state)", u.Deprovisioned, u.Locked)
	}
	if c := s.scim.Cursor(); c >= h.lastSeq(events.StreamSCIM) {
		t.Fatalf("ordered cursor %d reached the stream's end while held", c)
	}

	hold.Store(false)
	// The held message comes back after its nak backoff (up to MaxBackoff); then the backlog applies.
	last := h.lastSeq(events.StreamSCIM)
	deadline := time.Now().Add(3 * time.Minute)
	for s.scim.Cursor() < last && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // poll interval, not an assertion
	}
	h.caughtUp()
	if u := h.user(uid); !u.Deprovisioned || !u.Locked {
		t.Errorf("registry user deprovisioned=%v locked=%v after the ordered apply, want true true", u.Deprovisioned, u.Locked)
	}
	if ordered := h.causedBy(deact.ID); !slices.Contains(ordered, events.TypeUserLocked) || !slices.Contains(ordered, events.TypeSessionsRevoked) {
		t.Errorf("ordered IDENTITY events of the deactivation = %v, want its revocation and lock too", ordered)
	}
	for _, e := range h.streamEvents(events.StreamIdentity) {
		for _, pe := range prio {
			if e.ID == pe.ID {
				t.Errorf("event id %s on both lanes: the ordered and priority derivations must differ", e.ID)
			}
		}
		if e.CausationID == deact.ID && e.Commit != deact.Commit {
			t.Errorf("ordered %s carries commit %d, want %d", e.Type, e.Commit, deact.Commit)
		}
	}
	// The priority copy, replayed again (a restarted priority consumer), derives nothing new: the
	// registry already applied that version.
	h.stop()
	h.publishPriority(deact) // deduplicated by Msg-Id; a second copy under another id:
	again := deact
	again.ID = events.DeriveID(deact.ID, 99)
	h.publishPriority(again)
	before := h.lastSeq(events.StreamIdentityPriority)
	h.start()
	h.caughtUp()
	h.waitSeq(h.service().prio.Cursor, h.lastSeq(events.StreamSCIMPriority))
	h.drain()
	if after := h.lastSeq(events.StreamIdentityPriority); after != before {
		t.Errorf("IDENTITY_PRIORITY grew from %d to %d for a fact already applied in order", before, after)
	}
	if diff := cmp.Diff(readable(h.replayDump()), readable(h.dump())); diff != "" {
		t.Errorf("rebuilt dump differs from the live one (-rebuilt +live):\n%s", diff)
	}
}
