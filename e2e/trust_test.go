package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// TestSubBindingUnlockAndIdPDeletion runs the identity findings of docs/security.md against `scimflow serve`
// through public HTTP only:
//   - finding 9: a second account at the IdP with Alice's verified email cannot log in as Alice once
//     her first login bound her sub; after an admin reset of the binding it can;
//   - finding 2 (admin side): a deactivated (locked) person logs in again only after
//     POST /api/v1/users/{id}/unlock, and the session from before the lock stays dead;
//   - finding 6: deleting the IdP through the admin API ends its live sessions.
func TestSubBindingUnlockAndIdPDeletion(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "trust", scenario.Okta, "automatic", true, false)
	ctx := tn.ctx
	alice := tn.person("alice", "Alice", "Adams")
	tn.must(tn.scim.CreateUser(ctx, alice.User))
	b := tn.login(alice)
	u := tn.user("alice's sub bound", alice.User.UserName, func(u scenario.User) error {
		if u.OIDCSub != alice.Sub {
			return errorf("oidc_sub = %q, want %q", u.OIDCSub, alice.Sub)
		}
		return nil
	})

	// Another account at the same IdP that presents alice's verified email.
	mallory := "mallory-" + scenario.RandomString(8)
	if err := e.op.AddUser(oidctest.User{Sub: mallory, Email: alice.User.UserName, Name: "Mallory"}); err != nil {
		t.Fatal(err)
	}
	tn.eventually("the other account refused", func() error {
		r, err := tn.browser().Login(ctx, tn.idp.ID, mallory)
		if err != nil {
			return err
		}
		if r.Status != http.StatusForbidden || r.Session != "" || !strings.Contains(r.Body, "sub_mismatch") {
			return errorf("login with another sub = %d %s (session %t), want 403 sub_mismatch", r.Status, r.Body, r.Session != "")
		}
		return nil
	})
	tn.wantVerify("alice's session while the other account is refused", b, http.StatusOK)

	// The admin resets the binding: the other account may now log in (and binds its sub).
	if err := e.admin.ResetSub(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	tn.eventually("the other account logs in after the reset", func() error {
		bm := tn.browser()
		r, err := bm.Login(ctx, tn.idp.ID, mallory)
		if err != nil {
			return err
		}
		if !r.OK() {
			return errorf("login = %d %s", r.Status, r.Body)
		}
		return nil
	})
	tn.user("the new sub bound", alice.User.UserName, func(u scenario.User) error {
		if u.OIDCSub != mallory {
			return errorf("oidc_sub = %q, want %q", u.OIDCSub, mallory)
		}
		return nil
	})
	if err := e.admin.ResetSub(ctx, u.ID); err != nil { // give the person back to Alice's account
		t.Fatal(err)
	}

	// Deactivation locks; the admin unlock lets Alice in again, the old session stays dead.
	tn.must(tn.scim.SetActive(ctx, alice.User, false))
	tn.waitVerify("session after deactivation", b, http.StatusUnauthorized)
	if err := e.admin.UnlockUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	b2 := tn.loginEventually(alice)
	tn.wantVerify("old session after the unlock", b, http.StatusUnauthorized)
	tn.wantVerify("new session after the unlock", b2, http.StatusOK)
	tn.user("unlock in history", alice.User.UserName, func(u scenario.User) error {
		if u.Locked || len(u.History) == 0 || !hasNoteAny(u.History, "unlocked by admin") {
			return errorf("locked %v, history %v: want unlocked and the admin unlock recorded", u.Locked, u.History)
		}
		return nil
	})

	// Deleting the IdP ends its sessions.
	if err := e.admin.DeleteIdP(ctx, tn.idp.ID); err != nil {
		t.Fatal(err)
	}
	tn.waitVerify("session after the IdP was deleted", b2, http.StatusUnauthorized)
}

func hasNoteAny(hs []scenario.HistoryEntry, sub string) bool {
	for _, h := range hs {
		if hasNote(h, sub) {
			return true
		}
	}
	return false
}
