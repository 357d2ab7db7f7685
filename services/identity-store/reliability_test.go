package identitystore

import (
	"context"
	"errors"
	"fmt"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"

	"github.com/scimflow/scimflow/events"
)

// oracle fails the test unless the live store equals a clean replay of the streams.
func (h *harness) oracle() {
	h.t.Helper()
	h.caughtUp()
	if diff := cmp.Diff(readable(h.replayDump()), readable(h.dump())); diff != "" {
		h.t.Errorf("live store differs from a clean replay (-replay +live):\n%s", diff)
	}
}

// workload is a mixed stream for several users of one IdP: provisioning, groups (with a chunked
// replacement), logins, attribute changes, deprovisioning and reactivation, logs.
func workload(g *gen, users int) []events.Event {
	p := pol(events.UpdateReauth, true, true)
	var out []events.Event
	out = append(out, g.ev(events.SCIMGroupUpserted{GroupID: "eng", DisplayName: "Eng", Created: true, ResourceVersion: 1, Policy: p}))
	var ids []string
	for i := range users {
		id := fmt.Sprintf("u%03d", i)
		ids = append(ids, id)
		email := id + "@example.com"
		out = append(out, g.ev(scimUser(id, email, "User "+id, true, 1, p)))
		out = append(out, g.ev(events.SCIMLog{RequestID: "r" + id, Method: "POST", Path: "/Users", ResourceType: "USER", ResourceID: id, ResourceUserEmail: email, Status: events.LogSuccess, HTTPStatus: 201}))
	}
	for _, m := range events.Chunk("eng", "Eng", true, ids, nil, 2) {
		m.Policy = p
		out = append(out, g.ev(m))
	}
	for _, id := range ids {
		out = append(out, g.login(id+"@example.com", "User "+id, "s-"+id, true))
	}
	for i, id := range ids {
		email := id + "@example.com"
		if i%3 == 0 {
			out = append(out, g.ev(scimUser(id, email, "Renamed "+id, true, 2, p)))
		}
		if i%4 == 0 {
			u := scimUser(id, email, "User "+id, false, 3, p)
			u.Changed = []string{"active"}
			out = append(out, g.ev(u))
		}
		if i%8 == 0 {
			out = append(out, g.ev(scimUser(id, email, "User "+id, true, 4, p)))
		}
	}
	m := events.Chunk("eng", "Eng", false, nil, ids[:users/2], 3)[0]
	m.Policy = p
	out = append(out, g.ev(m))
	return out
}

// TestRestartMidStream stops the service in the middle of a stream, restarts it on the same file,
// and checks the caught-up store equals a clean replay; cursors equal the streams' last sequences.
func TestRestartMidStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	g := h.gen("okta")
	for _, phase := range phases(workload(g, 40)) {
		h.publish(phase...)
		s := h.start()
		eventually(t, "some events applied", func() bool { return s.scim.Cursor()+s.auth.Cursor() > 0 })
		h.stop() // somewhere in the middle of the phase, or after it
		s = h.start()
		h.caughtUp()
		h.stop()
	}
	s := h.start()
	h.oracle()
	if got, want := s.scim.Cursor(), h.lastSeq(events.StreamSCIM); got != want {
		t.Errorf("scim cursor = %d, want stream last sequence %d", got, want)
	}
	if got, want := s.auth.Cursor(), h.lastSeq(events.StreamAuth); got != want {
		t.Errorf("auth cursor = %d, want stream last sequence %d", got, want)
	}
}

// phases splits events into runs of one stream. Within a run, order is the stream's; between runs,
// tests wait for the first to be applied before publishing the next. The live store applies streams
// in arrival order and Replay merges them by event time: the two agree when a SCIM change and a login
// of the same user are not in flight at the same moment (docs: cross-stream order).
func phases(evs []events.Event) [][]events.Event {
	var out [][]events.Event
	for i, e := range evs {
		if i == 0 || prefix(e) != prefix(evs[i-1]) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], e)
	}
	return out
}

func prefix(e events.Event) string {
	if p := strings.SplitN(e.Subject, ".", 2)[0]; p != "scimlog" {
		return p
	}
	return "scim"
}

// publishPhased publishes evs one stream-run at a time, waiting for each run to be applied.
func (h *harness) publishPhased(evs []events.Event) {
	h.t.Helper()
	for _, p := range phases(evs) {
		h.publish(p...)
		h.caughtUp()
	}
}

// TestDuplicatesAndOutOfOrder republishes events under new message ids (beyond the dedup window)
// and sends stale versions after newer ones: the state equals the one without them, and the replay.
func TestDuplicatesAndOutOfOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("entra")
	p := pol(events.UpdateAutomatic, true, false)
	v1 := g.ev(scimUser("u1", "bob@example.com", "Bob", true, 1, p))
	v3 := g.ev(scimUser("u1", "bob@example.com", "Bob Three", true, 3, p))
	v2 := g.ev(scimUser("u1", "bob@example.com", "Bob Two", true, 2, p))
	li := g.login("bob@example.com", "Bob Three", "s1", true)
	del := g.ev(events.SCIMUserDeleted{UserID: "u1", UserName: "bob@example.com", Email: "bob@example.com", ResourceVersion: 5, Policy: p})
	late := g.ev(scimUser("u1", "bob@example.com", "Bob Four", true, 4, p))
	h.publishPhased([]events.Event{v1, v3, v2, li})
	u := h.userByEmail("entra", "bob@example.com")
	if u.Name != "Bob Three" || u.SCIM.Version != 3 {
		t.Fatalf("after v1, v3, v2: name=%q version=%d, want Bob Three v3 (v2 is stale)", u.Name, u.SCIM.Version)
	}
	before := h.dump()
	// The same events again under other message ids (as after the dedup window): stored twice in
	// the stream, applied once.
	for _, e := range []events.Event{v1, v3, v2, li} {
		data, _ := events.Marshal(e)
		if _, err := h.js.Publish(context.Background(), e.Subject, data, jetstream.WithMsgID(e.ID+"-again")); err != nil {
			t.Fatal(err)
		}
	}
	h.caughtUp()
	if diff := cmp.Diff(readable(before), readable(h.dump())); diff != "" {
		t.Errorf("duplicates changed the state (-before +after):\n%s", diff)
	}
	// Delete, then a late update with a lower version: stays deleted, no resurrection.
	h.publish(del, late)
	h.caughtUp()
	u = h.userByEmail("entra", "bob@example.com")
	if u == nil || !u.Deprovisioned || !u.Locked || u.Name != "Bob Three" {
		t.Errorf("after delete then late v4: %+v, want deprovisioned, locked, name unchanged", u)
	}
	h.oracle()
}

// TestRedelivery fails the first delivery of some events transiently: the runner naks, the events
// come back, and each is applied exactly once.
func TestRedelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var failed atomic.Int64
	seen := map[string]bool{}
	var applied atomic.Int64
	h.startWith(func(e events.Event) error {
		if li, ok := e.Data.(events.LoggedIn); ok && strings.HasSuffix(li.Email, "5@example.com") && !seen[e.ID] {
			seen[e.ID] = true // the runner calls handlers one at a time
			failed.Add(1)
			return errors.New("injected transient failure")
		}
		applied.Add(1)
		return nil
	})
	g := h.gen("okta")
	h.publishPhased(workload(g, 20))
	h.oracle()
	if failed.Load() == 0 {
		t.Fatal("no delivery failed; the test injected nothing")
	}
	for _, u := range []string{"u000", "u005", "u011", "u015"} {
		var n int
		h.view(func(tx *bolt.Tx) error {
			return prefixScan(tx, bkSessions, key(events.UserID("okta", u+"@example.com"), ""), func(_, _ []byte) error { n++; return nil })
		})
		if n != 1 {
			t.Errorf("user %s has %d sessions after redelivery, want 1", u, n)
		}
	}
}

// TestPoisonEvent publishes an undecodable message and an event the projection refuses: both are
// termed, recorded and counted, and the events after them are applied.
func TestPoisonEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("okta")
	h.publish(g.ev(scimUser("u1", "carol@example.com", "Carol", true, 1, pol(events.UpdateAutomatic, true, false))))
	h.publishRaw("scim.okta.user.u2.upserted", []byte(`{"not":"an event"}`))
	bad := scimUser("u3", "", "No Email", true, 1, pol(events.UpdateAutomatic, true, false))
	h.publish(g.ev(bad))
	h.publish(g.ev(scimUser("u4", "dave@example.com", "Dave", true, 1, pol(events.UpdateAutomatic, true, false))))
	h.caughtUp()
	if h.userByEmail("okta", "dave@example.com") == nil {
		t.Fatal("the event after the poison ones was not applied")
	}
	if got := h.metric("scimflow_identity_store_consumer_poison_total", "consumer", DurableSCIM); got != 2 {
		t.Errorf("poison_total = %v, want 2", got)
	}
	h.oracle()
}

// metric returns the value of the series of name whose label lname equals lvalue.
func (h *harness) metric(name, lname, lvalue string) float64 {
	h.t.Helper()
	h.mu.Lock()
	reg := h.reg
	h.mu.Unlock()
	mfs, err := reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if hasLabel(m, lname, lvalue) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				}
			}
		}
	}
	return -1
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return name == ""
}

// TestMetricsExported checks the registry-derived metrics after a deprovisioning.
func TestMetricsExported(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("okta")
	p := pol(events.UpdateAutomatic, true, true)
	h.publishPhased([]events.Event{g.ev(scimUser("u1", "ola@example.com", "Ola", true, 1, p)), g.ev(scimUser("u2", "pia@example.com", "Pia", true, 1, p))})
	h.publishPhased([]events.Event{g.login("ola@example.com", "Ola", "s1", true)})
	d := scimUser("u1", "ola@example.com", "Ola", false, 2, p)
	h.publishPhased([]events.Event{g.ev(d)})
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"scimflow_identity_store_users", "status", "inactive", 1},
		{"scimflow_identity_store_users", "status", "provisioned", 1},
		{"scimflow_identity_store_users", "status", "active", 0},
		{"scimflow_identity_store_seats", "idp_id", "okta", 0},
		{"scimflow_identity_store_revocations_total", "reason", "deprovisioned", 1},
		{"scimflow_identity_store_inactive_transitions_total", "idp_id", "okta", 1},
		{"scimflow_identity_store_consumer_events_applied_total", "type", events.TypeLoggedIn, 1},
	} {
		if got := h.metric(c.name, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
}
