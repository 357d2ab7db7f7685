package identitystore

import (
	"encoding/json"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
)

func groupNames(u *user) []string {
	out := []string{}
	for _, g := range u.Groups {
		out = append(out, g.Name)
	}
	return out
}

// TestPreProvisionedAndMembershipFirst: membership arrives before the user, the user is provisioned
// before their first login (no seat), and the first login takes a seat and already carries the SCIM
// groups. With SCIM disabled at login, the groups claim is used instead.
func TestPreProvisionedAndMembershipFirst(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("okta")
	p := pol(events.UpdateNoAction, true, false)
	m := events.Chunk("g1", "Engineering", false, []string{"u1", "u2"}, nil, 1)[0]
	m.Policy = p
	h.publishPhased([]events.Event{
		g.ev(m), // members before the group and the users
		g.ev(events.SCIMGroupUpserted{GroupID: "g1", DisplayName: "Engineering", Created: true, ResourceVersion: 1, Policy: p}),
		g.ev(scimUser("u1", "Erin@Example.com", "Erin", true, 1, p)),
		g.ev(scimUser("u2", "frank@example.com", "Frank", true, 1, p)),
	})
	erin := h.userByEmail("okta", "erin@example.com")
	if erin == nil || erin.status() != events.StatusProvisioned || erin.seatHeld() {
		t.Fatalf("pre-provisioned user = %+v, want provisioned without a seat", erin)
	}
	if erin.ID != events.UserID("okta", "erin@example.com") {
		t.Errorf("registry id = %s, want the default id of the lower-cased email", erin.ID)
	}
	if got := groupNames(erin); !cmp.Equal(got, []string{"Engineering"}) {
		t.Errorf("provisioned groups = %v, want [Engineering] (membership before user resolved)", got)
	}
	h.publishPhased([]events.Event{
		g.login("erin@example.com", "Erin E.", "s1", true, "claim-group"),
		g.login("frank@example.com", "Frank F.", "s2", false, "Claim-Group", "other"),
	})
	erin = h.userByEmail("okta", "erin@example.com")
	if erin.status() != events.StatusActive || !erin.seatHeld() || !cmp.Equal(groupNames(erin), []string{"Engineering"}) || erin.Name != "Erin E." {
		t.Errorf("after first login: status=%s seat=%v groups=%v name=%q, want active, seat, [Engineering], name from the claims", erin.status(), erin.seatHeld(), groupNames(erin), erin.Name)
	}
	frank := h.userByEmail("okta", "frank@example.com")
	if got := groupNames(frank); !cmp.Equal(got, []string{"Claim-Group", "other"}) {
		t.Errorf("SCIM disabled at login: groups = %v, want the claim's", got)
	}
	if got := h.metric("scimflow_identity_store_seats", "idp_id", "okta"); got != 2 {
		t.Errorf("seats metric = %v, want 2", got)
	}
	h.oracle()
}

// TestEmailChange: the registry id stays stable when the SCIM email changes, and a login with the new
// email (auth sends the default id of the new email) finds the same user; the old email no longer does.
func TestEmailChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("entra")
	p := pol(events.UpdateAutomatic, true, false)
	h.publishPhased([]events.Event{g.login("gina@old.example", "Gina", "s1", true)})
	uid := events.UserID("entra", "gina@old.example")
	// SCIM links to the user who logged in first, by email.
	h.publishPhased([]events.Event{g.ev(scimUser("u9", "gina@old.example", "Gina", true, 1, p))})
	if u := h.user(uid); u == nil || u.SCIMUserID != "u9" {
		t.Fatalf("SCIM user not linked to the logged-in user: %+v", u)
	}
	u := scimUser("u9", "gina@new.example", "Gina", true, 2, p)
	u.Changed = []string{"userName", "emails"}
	h.publishPhased([]events.Event{g.ev(u)})
	if got := h.user(uid); got.Email != "gina@new.example" {
		t.Errorf("after SCIM email change (automatic): email %q, want gina@new.example", got.Email)
	}
	h.publishPhased([]events.Event{g.login("gina@new.example", "Gina", "s2", true)})
	if got := h.userByEmail("entra", "gina@new.example"); got == nil || got.ID != uid {
		t.Errorf("login with the new email found %+v, want registry id %s", got, uid)
	}
	if h.user(events.UserID("entra", "gina@new.example")) != nil {
		t.Error("a second user was created for the new email")
	}
	if got := h.userByEmail("entra", "gina@old.example"); got != nil {
		t.Errorf("old email still leads to %s", got.ID)
	}
	// Deleted and created again under a new SCIM id: same registry user, old sessions stay invalid.
	h.publishPhased([]events.Event{g.ev(events.SCIMUserDeleted{UserID: "u9", Email: "gina@new.example", ResourceVersion: 3, Policy: p})})
	h.publishPhased([]events.Event{g.ev(scimUser("u10", "gina@new.example", "Gina", true, 1, p))})
	got := h.user(uid)
	if got.SCIMUserID != "u10" || got.Locked || got.RevokedBefore.IsZero() {
		t.Errorf("re-created user: scim=%s locked=%v revoked_before=%v, want u10, unlocked, revoked_before kept", got.SCIMUserID, got.Locked, got.RevokedBefore)
	}
	if s := h.sessions(uid); len(s) != 0 {
		t.Errorf("sessions from before the deletion are valid again: %v", s)
	}
	h.oracle()
}

// TestChunkedReplaceReauth: a full membership replacement split in chunks revokes only the users
// whose membership really changed (reauth), not those removed by chunk 0 and re-added by chunk 1.
func TestChunkedReplaceReauth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("jc")
	p := pol(events.UpdateReauth, true, false)
	var setup []events.Event
	setup = append(setup, g.ev(events.SCIMGroupUpserted{GroupID: "g", DisplayName: "Staff", Created: true, ResourceVersion: 1, Policy: p}))
	for _, id := range []string{"a", "b", "c"} {
		setup = append(setup, g.ev(scimUser(id, id+"@example.com", id, true, 1, p)))
	}
	m := events.Chunk("g", "Staff", false, []string{"a", "b"}, nil, 2)[0]
	m.Policy = p
	me := g.ev(m)
	setup = append(setup, me)
	h.publishPhased(setup)
	var logins []events.Event
	for _, id := range []string{"a", "b", "c"} {
		logins = append(logins, g.login(id+"@example.com", id, "s-"+id, true))
	}
	h.publishPhased(logins)
	// Replace with {b, c} in two chunks: chunk 0 = [c], chunk 1 = [b].
	c0 := events.SCIMGroupMembers{GroupID: "g", DisplayName: "Staff", Replace: true, Added: []string{"c"}, Removed: []string{}, Chunk: 0, Chunks: 2, ResourceVersion: 3, Policy: p}
	c1 := events.SCIMGroupMembers{GroupID: "g", DisplayName: "Staff", Added: []string{"b"}, Removed: []string{}, Chunk: 1, Chunks: 2, ResourceVersion: 3, Policy: p}
	e0, e1 := g.ev(c0), g.ev(c1)
	h.publishPhased([]events.Event{e0, e1})
	for id, want := range map[string]bool{"a": true, "b": false, "c": true} {
		u := h.userByEmail("jc", id+"@example.com")
		// The setup's membership change already revoked a and b (reauth revokes on every membership
		// change, logged in or not); only a revocation after it counts here.
		if got := u.RevokedBefore.After(me.OccurredAt); got != want {
			t.Errorf("user %s revoked by the replacement = %v, want %v (revoked_before %v)", id, got, want, u.RevokedBefore)
		}
	}
	h.oracle()
}

// TestLoginRacingDeprovision: a login stamped after a deprovisioning (an auth replica had not yet seen
// the lock) gets no valid session and no seat, whichever of the two identity-store applies first.
func TestLoginRacingDeprovision(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	for _, loginFirst := range []bool{false, true} {
		idp := fmt.Sprintf("race%v", loginFirst)
		g := h.gen(idp)
		p := pol(events.UpdateAutomatic, true, true)
		h.publishPhased([]events.Event{g.ev(scimUser("u1", "quinn@example.com", "Quinn", true, 1, p))})
		h.publishPhased([]events.Event{g.login("quinn@example.com", "Quinn", "s1", true)})
		d := scimUser("u1", "quinn@example.com", "Quinn", false, 2, p)
		dep := g.ev(d)
		li := g.login("quinn@example.com", "Quinn", "s2", true)
		if loginFirst {
			h.publishPhased([]events.Event{li, dep})
		} else {
			h.publishPhased([]events.Event{dep, li})
		}
		uid := events.UserID(idp, "quinn@example.com")
		u := h.user(uid)
		if u.seatHeld() || !u.Locked || u.status() != events.StatusInactive {
			t.Errorf("login first=%v: seat=%v locked=%v status=%s, want no seat, locked, inactive", loginFirst, u.seatHeld(), u.Locked, u.status())
		}
		if s := h.sessions(uid); len(s) != 0 {
			t.Errorf("login first=%v: active sessions %v, want none", loginFirst, s)
		}
		// The identity at any time after the deprovisioning is locked and inactive, even though the
		// newest history entry by event time is the late login.
		var det userDetail
		newAPI(t, h.service()).call("GET", "/api/v1/users/"+uid+"?at="+li.OccurredAt.Add(time.Hour).Format(time.RFC3339), nil, 200, &det)
		if det.IdentityAt == nil || !det.IdentityAt.Locked || det.IdentityAt.Status != events.StatusInactive {
			t.Errorf("login first=%v: identity_at after both = %+v, want locked and inactive", loginFirst, det.IdentityAt)
		}
	}
}

// TestSessionsAndReadiness: logout ends a session, expired sessions are pruned at the next login (by
// event time), denied logins are recorded; /readyz reports the consumers ready.
func TestSessionsAndReadiness(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	eventually(t, "/readyz 200", func() bool {
		res, err := http.Get("http://" + h.addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	g := h.gen("okta")
	uid := events.UserID("okta", "rita@example.com")
	short := g.login("rita@example.com", "Rita", "short", false)
	d := short.Data.(events.LoggedIn)
	d.ExpiresAt = d.IssuedAt.Add(time.Second) // expires before the next login
	short.Data = d
	long := g.login("rita@example.com", "Rita", "long", false)
	other := g.login("rita@example.com", "Rita", "other", false)
	out := g.ev(events.LoggedOut{UserID: uid, Email: "rita@example.com", SessionIDHash: "other"})
	denied := g.ev(events.LoginDenied{UserID: uid, Email: "rita@example.com", Reason: "test"})
	h.publishPhased([]events.Event{short, long, other, out, denied})
	var stored []string
	h.view(func(tx *bolt.Tx) error {
		return prefixScan(tx, bkSessions, key(uid, ""), func(k, _ []byte) error {
			stored = append(stored, lastPart(k))
			return nil
		})
	})
	if !cmp.Equal(stored, []string{"long"}) {
		t.Errorf("stored sessions = %v, want [long] (short expired and pruned, other logged out)", stored)
	}
	var notes []string
	h.view(func(tx *bolt.Tx) error {
		return prefixScan(tx, bkHistory, key(uid, ""), func(_, v []byte) error {
			var e historyEntry
			json.Unmarshal(v, &e)
			notes = append(notes, e.Notes...)
			return nil
		})
	})
	if !slices.Contains(notes, "login denied: test") || !slices.Contains(notes, "logged out") {
		t.Errorf("history notes = %v, want the logout and the denied login", notes)
	}
	h.oracle()
}

// TestReauthRevokesLoginAppliedLate: in reauth mode a membership change revokes every session
// issued before it, whether identity-store applies the login first or (its AUTH consumer lagging
// behind SCIM) after the change. A login after the change keeps its session.
func TestReauthRevokesLoginAppliedLate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	for _, loginFirst := range []bool{true, false} {
		g := h.gen(fmt.Sprintf("late%v", loginFirst))
		p := pol(events.UpdateReauth, true, false)
		add := events.Chunk("g1", "Admins", false, []string{"u1"}, nil, 2)[0]
		add.Policy = p
		h.publishPhased([]events.Event{
			g.ev(events.SCIMGroupUpserted{GroupID: "g1", DisplayName: "Admins", Created: true, ResourceVersion: 1, Policy: p}),
			g.ev(scimUser("u1", "rae@example.com", "Rae", true, 1, p)),
			g.ev(add),
		})
		uid := events.UserID(g.idp, "rae@example.com")
		li := g.login("rae@example.com", "Rae", "s-before", true) // issued before the removal
		rm := events.Chunk("g1", "Admins", false, nil, []string{"u1"}, 3)[0]
		rm.Policy = p
		removal := g.ev(rm)
		if loginFirst {
			h.waitSeq(h.service().auth.Cursor, h.publish(li))
			h.waitSeq(h.service().scim.Cursor, h.publish(removal))
		} else {
			h.waitSeq(h.service().scim.Cursor, h.publish(removal))
			h.waitSeq(h.service().auth.Cursor, h.publish(li))
		}
		h.drain()
		u := h.user(uid)
		if !u.RevokedBefore.Equal(removal.OccurredAt) {
			t.Errorf("loginFirst=%v: revoked_before = %v, want the removal's time %v", loginFirst, u.RevokedBefore, removal.OccurredAt)
		}
		if got, want := h.causedBy(removal.ID), []string{tRevoked, tChanged}; !cmp.Equal(got, want) {
			t.Errorf("loginFirst=%v: IDENTITY events caused by the removal = %v, want %v", loginFirst, got, want)
		}
		if s := h.sessions(uid); len(s) != 0 {
			t.Errorf("loginFirst=%v: active sessions after the removal = %v, want none (s-before predates it)", loginFirst, s)
		}
		h.waitSeq(h.service().auth.Cursor, h.publish(g.login("rae@example.com", "Rae", "s-after", true)))
		if s := h.sessions(uid); len(s) != 1 || s[0].SessionIDHash != "s-after" {
			t.Errorf("loginFirst=%v: after a new login active sessions = %v, want only s-after", loginFirst, s)
		}
		if u := h.user(uid); len(u.Groups) != 0 {
			t.Errorf("loginFirst=%v: registry groups after the new login = %v, want none", loginFirst, names(u.Groups))
		}
	}
	// No replay oracle: the point is the live interleaving of the SCIM and AUTH streams, which a
	// replay does not reproduce (like TestLoginRacingDeprovision).
}
