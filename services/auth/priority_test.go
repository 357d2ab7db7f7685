package auth

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// publishBatch puts evs on their stream as one batch message, the way a relay groups the events of
// one transaction; prio sends it on the priority lane.
func (n *natsEnv) publishBatch(t testing.TB, evs []events.Event, prio bool) {
	t.Helper()
	b, err := events.MarshalBatch(evs)
	if err != nil {
		t.Fatal(err)
	}
	subj := evs[0].Subject
	if prio {
		subj = events.PriorityPrefix + subj
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.js.Publish(ctx, subj, b, jetstream.WithMsgID(fmt.Sprintf("%s+%d", evs[0].ID, len(evs)))); err != nil {
		t.Fatalf("publish %s: %v", subj, err)
	}
}

func withCommit(e events.Event, c uint64) events.Event {
	e.Commit = c
	return e
}

// TestPriorityLockAheadOfBacklog: a deprovisioning committed behind 50,000 queued identity changes
// reaches auth by the priority lane before the IDENTITY stream gets to it. The replica starts fresh
// after the backlog is in place, so its ordered consumer has all 50,000 events to apply first; the
// user is fenced (locked) while the ordered cursor is still short of the backlog's end, and the
// revocation counts as a priority revocation (the priority lane moved revoked_before first).
func TestPriorityLockAheadOfBacklog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	h.mustLogin(newBrowser(), h.r, "idp-a")
	h.r.stop()

	const backlog = 50000
	at := h.clock.Now()
	var batch []events.Event
	for i := 1; i <= backlog; i++ {
		id := fmt.Sprintf("bulk-%d", i)
		email := id + "@example.com"
		if i%1000 == 0 {
			id, email = uid, aliceEmail // older snapshots of alice in the backlog: not locked
		}
		batch = append(batch, withCommit(identityEvent("idp-a", at, events.Identity{UserID: id, Email: email, Status: events.StatusActive}), uint64(i)))
		if len(batch) == 256 {
			h.n.publishBatch(t, batch, false)
			batch = nil
		}
	}
	revoke := events.New("idp-a", h.clock.Now(), "scim-req", "", events.SessionsRevoked{UserID: uid, Email: aliceEmail, RevokedBefore: h.clock.Now(), Reason: events.ReasonDeprovisioned})
	lock := events.New("idp-a", revoke.OccurredAt, "scim-req", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: events.ReasonDeprovisioned})
	revoke, lock = withCommit(revoke, backlog+1), withCommit(lock, backlog+1)
	h.n.publishBatch(t, append(batch, revoke, lock), false)
	h.n.publishBatch(t, []events.Event{revoke, lock}, true)
	last := h.n.lastSeq(t, events.StreamIdentity)

	// Not waiting for readiness: /readyz (and /verify, fail closed) wait for the whole backlog.
	ext := h.r.srv.cfg.ExternalURL
	r2 := h.startReplicaWait("r2", func(c *Config) { c.ExternalURL = ext }, false)
	var cursor uint64
	waitFor(t, "priority lock applied", 60*time.Second, func() error {
		cursor = r2.srv.identityRn.Cursor()
		if u, _ := r2.srv.state.user(uid); u.FenceCommit != backlog+1 {
			return errNotYet
		}
		return nil
	})
	if cursor >= last {
		t.Errorf("IDENTITY cursor %d reached the backlog's end %d before the priority lock was applied", cursor, last)
	}
	u, _ := r2.srv.state.user(uid)
	if !r2.srv.state.locked(u) || u.RevokedBefore.IsZero() {
		t.Errorf("after the priority lock: locked %v, revoked_before %v; want locked and revoked", r2.srv.state.locked(u), u.RevokedBefore)
	}
	if got := metricValue(t, r2.reg, "scimflow_auth_priority_revocations_total", nil); got != 1 {
		t.Errorf("priority revocations = %v, want 1", got)
	}
}

// TestOldSnapshotAfterPriorityLockStaysLocked: an older snapshot (not locked) applied after a newer
// priority lock leaves the user locked — sessions and logins refused — until the IDENTITY stream
// reaches the lock's commit; a later reactivation (newer commit) then unlocks as usual.
func TestOldSnapshotAfterPriorityLockStaysLocked(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	old := h.mustLogin(newBrowser(), h.r, "idp-a")
	at := h.clock.Now()
	lock := withCommit(events.New("idp-a", at, "scim-req", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: events.ReasonDeprovisioned}), 10)
	h.n.publishBatch(t, []events.Event{lock}, true)
	waitVerify(t, h.r, old, http.StatusUnauthorized)

	// An upsert committed before the deprovisioning arrives afterwards on the ordered lane.
	stale := withCommit(identityEvent("idp-a", at.Add(-time.Second), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive}), 5)
	h.n.publish(t, stale)
	waitFor(t, "stale snapshot applied", 10*time.Second, func() error {
		if u, _ := h.r.srv.state.user(uid); u.OrderedCommit != 5 {
			return errNotYet
		}
		return nil
	})
	if v := verify(t, h.r, old, nil); v.StatusCode != http.StatusUnauthorized {
		t.Errorf("verify after the stale snapshot = %d, want 401", v.StatusCode)
	}
	if resp, _ := h.login(newBrowser(), h.r, "idp-a", ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login after the stale snapshot = %d, want 403 (locked)", resp.StatusCode)
	}

	// The ordered lane delivers the lock itself, then a reactivation committed later.
	h.n.publish(t, withCommit(events.New("idp-a", at, "scim-req", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: events.ReasonDeprovisioned}), 10))
	h.n.publish(t, withCommit(events.New("idp-a", h.clock.Now(), "scim-req-2", "", events.UserUnlocked{UserID: uid, Email: aliceEmail, Reason: "reactivated"}), 11))
	waitFor(t, "reactivation applied", 10*time.Second, func() error {
		if u, _ := h.r.srv.state.user(uid); u.OrderedCommit != 11 {
			return errNotYet
		}
		return nil
	})
	h.clock.Advance(time.Second)
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	if v := verify(t, h.r, fresh, nil); v.StatusCode != http.StatusOK {
		t.Errorf("verify(new session after reactivation) = %d, want 200", v.StatusCode)
	}
	if v := verify(t, h.r, old, nil); v.StatusCode != http.StatusUnauthorized {
		t.Errorf("verify(session from before the lock) = %d, want 401 forever", v.StatusCode)
	}
}

// TestPriorityIdPRevocation: an admin's revocation of a whole IdP that arrives on the priority lane
// (identity-store sends a copy there ahead of the IDENTITY backlog) ends the IdP's sessions at once,
// without the ordered copy (another IdP's revocation does not touch it); after the ordered copy,
// a new login works and the old session stays revoked.
func TestPriorityIdPRevocation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	old := h.mustLogin(newBrowser(), h.r, "idp-a")
	at := h.clock.Now()
	rev := events.New("idp-a", at, "admin-req", "", events.IdPSessionsRevoked{RevokedBefore: at, Reason: events.ReasonIdPDeleted})
	other := events.New("idp-other", at, "admin-req", "", events.IdPSessionsRevoked{RevokedBefore: at, Reason: events.ReasonIdPDeleted})
	h.n.publishBatch(t, []events.Event{other}, true)
	h.n.publishBatch(t, []events.Event{rev}, true)
	waitVerify(t, h.r, old, http.StatusUnauthorized)
	if c := h.r.srv.identityRn.Cursor(); c != 0 {
		t.Errorf("IDENTITY cursor = %d: the revocation came by the ordered lane, want the priority lane", c)
	}
	h.n.publish(t, rev)
	waitFor(t, "ordered copy applied", 10*time.Second, func() error {
		if h.r.srv.identityRn.Cursor() == 0 {
			return errNotYet
		}
		return nil
	})
	h.clock.Advance(time.Second)
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	if v := verify(t, h.r, fresh, nil); v.StatusCode != http.StatusOK {
		t.Errorf("verify(login after the revocation) = %d, want 200", v.StatusCode)
	}
	if v := verify(t, h.r, old, nil); v.StatusCode != http.StatusUnauthorized {
		t.Errorf("verify(session from before the revocation) = %d, want 401", v.StatusCode)
	}
}

// TestFenceRule: the fence holds while neither the user's ordered events nor the IdP's mark reached
// its commit; the user's own event from that commit lifts it, and so does the IdP's mark passing it.
func TestFenceRule(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		fence, ordered, mark uint64
		want                 bool
	}{
		{9, 8, 0, true},
		{9, 8, 9, true},
		{9, 9, 0, false},  // the user's own ordered event from the fact's commit
		{9, 8, 10, false}, // the IdP moved past the fact's commit
		{0, 0, 0, false},
	} {
		u := userRecord{FenceCommit: c.fence, OrderedCommit: c.ordered}
		if got := fenced(&u, c.mark); got != c.want {
			t.Errorf("fenced(fence %d, ordered %d, mark %d) = %v, want %v", c.fence, c.ordered, c.mark, got, c.want)
		}
	}
}

// TestPrioritySessionRevoked: identity-store's session_revoked for a login with another OIDC sub
// than the bound one (a possible account hijack) also travels on the priority lane; from that lane
// alone, ahead of the IDENTITY stream, it ends that session on every replica and leaves the person's
// other session alone, and the ordered copy arriving later changes nothing.
func TestPrioritySessionRevoked(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	r2 := h.secondReplica()
	uid := events.UserID("idp-a", aliceEmail)
	tok1 := h.mustLogin(newBrowser(), h.r, "idp-a")
	tok2 := h.mustLogin(newBrowser(), h.r, "idp-a")
	cs, _, err := h.r.srv.verifySession(t.Context(), tok1, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	rev := events.New("idp-a", h.clock.Now(), "login-x", "", events.SessionRevoked{UserID: uid, Email: aliceEmail,
		SessionIDHash: hashSID(cs.SID), ExpiresAt: cs.expires(), Reason: events.ReasonSubMismatch})
	h.n.publishBatch(t, []events.Event{rev}, true)
	waitVerify(t, h.r, tok1, http.StatusUnauthorized)
	waitVerify(t, r2, tok1, http.StatusUnauthorized)
	if c := h.r.srv.identityRn.Cursor(); c != 0 {
		t.Errorf("IDENTITY cursor = %d: the revocation came by the ordered lane, want the priority lane", c)
	}
	if got := verify(t, h.r, tok2, nil).StatusCode; got != http.StatusOK {
		t.Errorf("the other session: verify = %d, want 200", got)
	}
	ordered := events.New("idp-a", rev.OccurredAt, "login-x", "", rev.Data)
	h.n.publish(t, ordered)
	waitFor(t, "ordered copy applied", 10*time.Second, func() error {
		if h.r.srv.identityRn.Cursor() == 0 {
			return errNotYet
		}
		return nil
	})
	if got := verify(t, h.r, tok1, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("revoked session after the ordered copy: verify = %d, want 401", got)
	}
	if got := verify(t, h.r, tok2, nil).StatusCode; got != http.StatusOK {
		t.Errorf("the other session after the ordered copy: verify = %d, want 200", got)
	}
}
