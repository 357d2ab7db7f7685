package auth

import (
	"net/http"
	"testing"
	"time"

	"github.com/scimflow/scimflow/events"
)

// TestFactsAppliedAfterSession: an IDENTITY fact that auth applies after a session was built is
// newer than that session, even when its event time is earlier than the session's issue time (a
// SCIM change acknowledged just before a login that raced it; projection.go, Ordering). A snapshot
// shapes the session's identity, a revocation or lock invalidates it for good; a session built after
// auth applied the revocation stays valid. Every replica agrees, since the order is the stream's.
func TestFactsAppliedAfterSession(t *testing.T) {
	t.Parallel()
	// automatic: the one mode in which a snapshot reaches live sessions.
	h := newHarness(t, harnessOpts{idpMut: func(i *events.IdP) {
		i.SCIMConfig.Enabled, i.SCIMConfig.IdentityUpdateBehavior = true, events.UpdateAutomatic
	}})
	r2 := h.secondReplica()
	uid := "registry-id-1"
	admins := []events.Group{{ID: "g1", Name: "Admins"}}
	snapshot := func(at time.Time, groups []events.Group) events.Event {
		return identityEvent("idp-a", at, events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive, Groups: groups, SCIMGroups: groups})
	}
	h.n.publish(t, snapshot(h.clock.Now(), admins))
	waitFor(t, "snapshot applied", 10*time.Second, func() error {
		if _, ok := h.r.srv.state.userIDByEmail("idp-a", aliceEmail); !ok {
			return errNotYet
		}
		return nil
	})

	// Group removal committed before the login, applied after the session was built.
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	if g := verify(t, h.r, tok, nil).Header.Get(HeaderGroups); g != "Admins" {
		t.Fatalf("verify groups = %q, want Admins", g)
	}
	h.n.publish(t, snapshot(h.clock.Now().Add(-time.Minute), nil))
	for _, r := range []*replica{h.r, r2} {
		waitFor(t, "the removal reaches the session", 10*time.Second, func() error {
			if v := verify(t, r, tok, nil); v.StatusCode != http.StatusOK || v.Header.Get(HeaderGroups) != "" {
				return errNotYet
			}
			return nil
		})
	}

	// Group addition, likewise.
	h.n.publish(t, snapshot(h.clock.Now().Add(-time.Minute), admins))
	waitFor(t, "the addition reaches the session", 10*time.Second, func() error {
		if verify(t, h.r, tok, nil).Header.Get(HeaderGroups) != "Admins" {
			return errNotYet
		}
		return nil
	})

	// A revocation stamped before the session's issue time, applied after the session was built.
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "c", "", events.SessionsRevoked{UserID: uid, Email: aliceEmail,
		RevokedBefore: h.clock.Now().Add(-time.Minute), Reason: events.ReasonGroupsChanged}))
	waitVerify(t, h.r, tok, http.StatusUnauthorized)
	waitVerify(t, r2, tok, http.StatusUnauthorized)

	// A session built after auth applied the revocation is valid on every replica.
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	for _, r := range []*replica{h.r, r2} {
		v := waitVerify(t, r, fresh, http.StatusOK)
		if g := v.Header.Get(HeaderGroups); g != "Admins" {
			t.Errorf("verify(session after the revocation) groups = %q, want Admins", g)
		}
	}

	// A lock stamped before the session, applied after it: lifting the lock does not revive it.
	h.n.publish(t, events.New("idp-a", h.clock.Now().Add(-time.Minute), "c", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: events.ReasonDeprovisioned}))
	waitVerify(t, h.r, fresh, http.StatusUnauthorized)
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "c", "", events.UserUnlocked{UserID: uid, Email: aliceEmail, Reason: "active"}))
	waitFor(t, "unlock applied", 10*time.Second, func() error {
		if u, _ := r2.srv.state.user(uid); u.Locked {
			return errNotYet
		}
		if u, _ := h.r.srv.state.user(uid); u.Locked {
			return errNotYet
		}
		return nil
	})
	for _, r := range []*replica{h.r, r2} {
		if v := verify(t, r, fresh, nil); v.StatusCode != http.StatusUnauthorized {
			t.Errorf("verify(session built before the lock, after unlock) = %d, want 401", v.StatusCode)
		}
	}
	after := h.mustLogin(newBrowser(), h.r, "idp-a")
	if v := waitVerify(t, r2, after, http.StatusOK); v.Header.Get(HeaderGroups) != "Admins" {
		t.Errorf("verify(session after unlock) groups = %q, want Admins", v.Header.Get(HeaderGroups))
	}
}

// TestSessionWithoutIdentitySeq: a session token minted before the sequence claim existed keeps the
// event-time rules: a snapshot older than it is ignored, a revocation older than it spares it.
func TestSessionWithoutIdentitySeq(t *testing.T) {
	t.Parallel()
	issued := time.Unix(1_800_000_000, 0)
	c := &sessionClaims{Subject: "u", IssuedNano: issued.UnixNano()}
	older := userRecord{UserID: "u", Identity: &events.Identity{UserID: "u"}, IdentityAt: issued.Add(-time.Second), IdentitySeq: 9,
		RevokedBefore: issued.Add(-time.Second), RevokedSeq: 9}
	if snapshotNewer(&older, c) {
		t.Errorf("snapshotNewer(older snapshot, token without id_seq) = true, want false")
	}
	if why := userCheck(&older, nil, 0, "", issued, nil); why != "" {
		t.Errorf("userCheck(older revocation, token without id_seq) = %q, want valid", why)
	}
	seq := uint64(5)
	c.IdentitySeq = &seq
	if !snapshotNewer(&older, c) {
		t.Errorf("snapshotNewer(snapshot at 9, session at 5) = false, want true")
	}
	if why := userCheck(&older, nil, 0, "", issued, &seq); why != "revoked" {
		t.Errorf("userCheck(revocation at 9, session at 5) = %q, want revoked", why)
	}
	seq = 9
	if snapshotNewer(&older, c) || userCheck(&older, nil, 0, "", issued, &seq) != "" {
		t.Errorf("session at 9: snapshot at 9 used or revocation at 9 applied, want neither (the session saw both)")
	}
}
