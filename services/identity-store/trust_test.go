package identitystore

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
)

// seedOkta configures the IdP "okta" as a config seed, so admin calls on it find it.
func seedOkta(t *testing.T, h *harness) {
	t.Helper()
	b := validIdP("Okta")
	b["id"] = "okta"
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.IdentityProviders = []json.RawMessage{raw}
}

// loginAs is a LoggedIn of email with the given OIDC sub and session, at time at.
func (g *gen) loginAs(at time.Time, email, sub, name, sess string) events.Event {
	li := login(events.UserID(g.idp, email), email, name, sess, false, at)
	li.Sub = sub
	return g.evAt(at, li)
}

func notes(d userDetail) string {
	var out []string
	for _, h := range d.History {
		out = append(out, h.Notes...)
	}
	return strings.Join(out, "\n")
}

// TestSubBindingFirstLoginWins (docs/security.md, finding 9): the first login applied for (IdP, person) binds
// its OIDC sub; a later login with another sub and the same verified email (another account at the
// IdP, let through by an auth replica that had not learnt the binding) does not become the person:
// its session is revoked through IDENTITY and the registry identity is untouched. An admin reset for
// the person or for the whole IdP lets the next login bind afresh, and a replay rebuilds the bindings.
func TestSubBindingFirstLoginWins(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seedOkta(t, h)
	s := h.start()
	a := newAPI(t, s)
	g := h.gen("okta")
	uid := events.UserID("okta", "alice@example.com")

	l1 := g.loginAs(g.next(), "alice@example.com", "sub-alice", "Alice", "sess-a")
	h.publishPhased([]events.Event{l1})
	if got := h.causedBy(l1.ID); !slices.Contains(got, events.TypeSubBound) {
		t.Errorf("first login caused %v, want a %s", got, events.TypeSubBound)
	}
	l2 := g.loginAs(g.next(), "ALICE@example.com", "sub-mallory", "Mallory", "sess-m")
	h.publishPhased([]events.Event{l2})
	var revoked *events.SessionRevoked
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if p, ok := e.Data.(events.SessionRevoked); ok && e.CausationID == l2.ID {
			revoked = &p
		}
	}
	if revoked == nil || revoked.SessionIDHash != "sess-m" || revoked.UserID != uid || revoked.Reason != events.ReasonSubMismatch {
		t.Errorf("session_revoked for the other sub's login = %+v, want sess-m of %s, reason %s", revoked, uid, events.ReasonSubMismatch)
	}
	// A possible account hijack: a copy of the revocation travels on IDENTITY_PRIORITY, so it does not
	// wait behind a backlog on IDENTITY, with an id of its own (JetStream's dedupe and auth's
	// consumer_seen would otherwise drop one of the two).
	var ordered, prio []events.Event
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if _, ok := e.Data.(events.SessionRevoked); ok && e.CausationID == l2.ID {
			ordered = append(ordered, e)
		}
	}
	eventually(t, "priority copy of the sub_mismatch revocation", func() bool {
		prio = prio[:0]
		for _, e := range h.streamEvents(events.StreamIdentityPriority) {
			if _, ok := e.Data.(events.SessionRevoked); ok && e.CausationID == l2.ID {
				prio = append(prio, e)
			}
		}
		return len(prio) > 0
	})
	if len(ordered) != 1 || len(prio) != 1 {
		t.Fatalf("session_revoked copies for the other sub's login: %d ordered, %d priority, want 1 and 1", len(ordered), len(prio))
	}
	if prio[0].ID == ordered[0].ID {
		t.Errorf("priority copy id = ordered id %s, want a distinct id", prio[0].ID)
	}
	if diff := cmp.Diff(events.Payload(*revoked), prio[0].Data); diff != "" {
		t.Errorf("priority copy differs from the ordered one (-ordered +priority):\n%s", diff)
	}
	if !strings.HasPrefix(prio[0].Subject, "identity.") {
		t.Errorf("priority copy subject = %q, want its identity subject (published with the lane prefix)", prio[0].Subject)
	}
	var d userDetail
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.OIDCSub != "sub-alice" || d.Name != "Alice" {
		t.Errorf("after the other sub's login: oidc_sub %q name %q, want sub-alice, Alice (untouched)", d.OIDCSub, d.Name)
	}
	if len(d.ActiveSessions) != 1 || d.ActiveSessions[0].SessionIDHash != "sess-a" {
		t.Errorf("active sessions = %+v, want only sess-a", d.ActiveSessions)
	}
	if !strings.Contains(notes(d), `login refused: OIDC sub "sub-mallory"`) {
		t.Errorf("history notes %q do not record the refused login", notes(d))
	}

	// Reset for the person: the next login binds its own sub.
	var res adminActionResult
	a.call("DELETE", "/api/v1/users/"+uid+"/sub", nil, 200, &res)
	if !res.Applied || len(res.EventIDs) != 1 {
		t.Errorf("DELETE sub = %+v, want applied with one event", res)
	}
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.OIDCSub != "" {
		t.Errorf("after the reset: oidc_sub = %q, want none", d.OIDCSub)
	}
	// Admin events carry the service's clock: logins after them are stamped later.
	l3 := g.loginAs(time.Now(), "alice@example.com", "sub-mallory", "Alice M", "sess-m2")
	h.publishPhased([]events.Event{l3})
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.OIDCSub != "sub-mallory" {
		t.Errorf("login after the reset: oidc_sub = %q, want sub-mallory", d.OIDCSub)
	}

	// Reset for the whole IdP (app registration replaced): every sub changes.
	var ir idpActionResult
	a.call("POST", "/api/v1/identity_providers/okta/reset_sub_bindings", nil, 200, &ir)
	if !ir.Applied || len(ir.EventIDs) != 1 {
		t.Errorf("reset_sub_bindings = %+v, want applied with one event", ir)
	}
	a.call("POST", "/api/v1/identity_providers/nope/reset_sub_bindings", nil, 404, nil)
	a.call("DELETE", "/api/v1/users/nope/sub", nil, 404, nil)
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.OIDCSub != "" {
		t.Errorf("after the IdP reset: oidc_sub = %q, want none", d.OIDCSub)
	}
	l4 := g.loginAs(time.Now(), "alice@example.com", "sub-new-app", "Alice", "sess-n")
	h.publishPhased([]events.Event{l4})
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.OIDCSub != "sub-new-app" {
		t.Errorf("login after the IdP reset: oidc_sub = %q, want sub-new-app", d.OIDCSub)
	}
	h.oracle()
}

// TestAdminUnlock (docs/security.md, finding 2's admin side): POST /api/v1/users/{id}/unlock lifts a lock,
// recorded as an IDENTITY event and in history; sessions from before the lock stay invalid
// (revoked_before stays), and unlocking an unlocked user changes nothing.
func TestAdminUnlock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	g := h.gen("okta")
	p := pol(events.UpdateAutomatic, true, false)
	uid := events.UserID("okta", "lena@example.com")
	h.publishPhased([]events.Event{g.ev(scimUser("u1", "lena@example.com", "Lena", true, 1, p))})
	h.publishPhased([]events.Event{g.login("lena@example.com", "Lena", "sess-1", true)})
	h.publishPhased([]events.Event{g.ev(scimUser("u1", "lena@example.com", "Lena", false, 2, p))})
	var d userDetail
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if !d.Locked || d.RevokedBefore == nil {
		t.Fatalf("after deactivation locked %v revoked_before %v, want locked and set", d.Locked, d.RevokedBefore)
	}
	rb := *d.RevokedBefore

	var res adminActionResult
	a.call("POST", "/api/v1/users/"+uid+"/unlock", nil, 200, &res)
	if !res.Applied || len(res.EventIDs) != 1 || res.User == nil || res.User.Locked {
		t.Errorf("unlock = %+v, want applied, one event, user unlocked", res)
	}
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if d.Locked || d.RevokedBefore == nil || !d.RevokedBefore.Equal(rb) || len(d.ActiveSessions) != 0 {
		t.Errorf("after unlock locked %v revoked_before %v (was %v) sessions %v, want unlocked, unchanged, none", d.Locked, d.RevokedBefore, rb, d.ActiveSessions)
	}
	if len(d.History) == 0 || d.History[0].EventType != events.TypeUserUnlocked || !strings.HasPrefix(d.History[0].Cause, adminCorrelationPrefix) ||
		!slices.Contains(d.History[0].Changes, "locked") {
		t.Errorf("newest history entry = %+v, want the admin unlock changing locked", d.History[0])
	}
	var unlocks []events.UserUnlocked
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if u, ok := e.Data.(events.UserUnlocked); ok && isAdminEvent(e) {
			unlocks = append(unlocks, u)
		}
	}
	if len(unlocks) != 1 || unlocks[0].UserID != uid || unlocks[0].Reason != events.ReasonUnlocked {
		t.Errorf("admin unlock events = %+v, want one for %s with reason %s", unlocks, uid, events.ReasonUnlocked)
	}
	a.call("POST", "/api/v1/users/"+uid+"/unlock", nil, 200, &res)
	if len(res.EventIDs) != 0 {
		t.Errorf("unlocking an unlocked user published %v", res.EventIDs)
	}
	a.call("POST", "/api/v1/users/nope/unlock", nil, 404, nil)
	h.oracle()
}

// TestDeleteIdPRevokesSessions (docs/security.md, finding 6, identity-store's side): deleting an IdP through
// the admin API publishes the revocation of its sessions to IDENTITY before removing it; the
// registry no longer lists them as active, and neither after the IdP is seeded again at the next
// start nor in a replay.
func TestDeleteIdPRevokesSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	seedOkta(t, h)
	s := h.start()
	a := newAPI(t, s)
	g := h.gen("okta")
	uid := events.UserID("okta", "carol@example.com")
	h.publishPhased([]events.Event{g.loginAs(g.next(), "carol@example.com", "sub-c", "Carol", "sess-c")})
	var d userDetail
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if len(d.ActiveSessions) != 1 {
		t.Fatalf("active sessions = %v, want one", d.ActiveSessions)
	}
	var res idpActionResult
	a.call("DELETE", "/api/v1/identity_providers/okta", nil, 200, &res)
	if res.ID != "okta" || !res.Applied || len(res.EventIDs) != 2 {
		t.Errorf("DELETE idp = %+v, want okta, applied, two events (before and after the removal)", res)
	}
	var found bool
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if p, ok := e.Data.(events.IdPSessionsRevoked); ok && e.IdPID == "okta" && p.Reason == events.ReasonIdPDeleted {
			found = true
		}
	}
	if !found {
		t.Error("no sessions_revoked for the deleted IdP on IDENTITY")
	}
	a.call("GET", "/api/v1/identity_providers/okta", nil, 404, nil)
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if len(d.ActiveSessions) != 0 {
		t.Errorf("after deleting the IdP: active sessions = %v, want none", d.ActiveSessions)
	}
	// The next start seeds the IdP again from the config: the old session stays revoked.
	h.stop()
	s = h.start()
	a = newAPI(t, s)
	eventually(t, "IdP seeded again", func() bool { return a.do("GET", "/api/v1/identity_providers/okta", testToken, nil).Status == 200 })
	d = userDetail{}
	a.call("GET", "/api/v1/users/"+uid, nil, 200, &d)
	if len(d.ActiveSessions) != 0 {
		t.Errorf("after the IdP was seeded again: active sessions = %v, want none", d.ActiveSessions)
	}
	h.oracle()
}
