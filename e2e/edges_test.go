package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// TestIdentityEdges covers what the §4 table implies beyond its cells, in automatic mode: users are
// keyed by the lower-cased email (a mixed-case SCIM userName meets the OIDC email claim), a SCIM
// email change keeps the registry id and reaches the session, group renames and group deletions
// reach the registry and the session, and a user deleted then re-created by the IdP (Entra's
// restore) is unlocked while sessions from before the lock stay invalid.
func TestIdentityEdges(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "edges", scenario.Entra, "automatic", true, false)
	ctx := tn.ctx

	// Mixed-case userName at the IdP, lower-case email claim at login.
	lower := tn.email("erin.kim")
	sub := "sub-" + lower
	if err := e.op.AddUser(oidctest.User{Sub: sub, Email: lower, Name: "Erin Kim"}); err != nil {
		t.Fatal(err)
	}
	erin := &scenario.Person{Sub: sub, User: &scenario.SCIMUser{UserName: strings.Replace(lower, "erin.kim", "Erin.Kim", 1), GivenName: "Erin", FamilyName: "Kim", Active: true}}
	tn.must(tn.scim.CreateUser(ctx, erin.User))
	g := &scenario.SCIMGroup{DisplayName: "Platform"}
	tn.must(tn.scim.CreateGroup(ctx, g))
	tn.must(tn.scim.AddMembers(ctx, g, erin.User))
	u := tn.user("erin provisioned under her lower-cased email", lower, func(u scenario.User) error {
		return groupsAre(u.Identity.GroupNames(), "Platform")
	})
	b := tn.loginWithGroups(erin, "Platform")
	if v := tn.verify(b); v.Header.Get("X-Scimflow-User-Id") != u.ID {
		t.Errorf("erin's session: user id %q, want %q (the provisioned user)", v.Header.Get("X-Scimflow-User-Id"), u.ID)
	}
	if list, err := e.admin.Users(ctx, "", tn.idp.ID); err != nil || len(list) != 1 {
		t.Errorf("users of the IdP = %d (%v), want 1: the login must not create a second user", len(list), err)
	}

	// Group rename reaches the session.
	res := tn.must(tn.scim.Do(ctx, http.MethodPatch, "/Groups/"+g.ID, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "Replace", "path": "displayName", "value": "Platform Team"}}}))
	if res.Status/100 != 2 {
		t.Fatalf("rename group = %d %s", res.Status, res.Body)
	}
	tn.eventually("group rename reaches /verify", func() error { return groupsAre(headerGroups(tn.verify(b)), "Platform Team") })

	// Group deletion removes it.
	res = tn.must(tn.scim.Do(ctx, http.MethodDelete, "/Groups/"+g.ID, nil))
	if res.Status != http.StatusNoContent {
		t.Fatalf("delete group = %d %s", res.Status, res.Body)
	}
	tn.eventually("group deletion reaches /verify", func() error { return groupsAre(headerGroups(tn.verify(b))) })

	// Email change: same registry id, new email on the session.
	newEmail := tn.email("erin.park")
	res = tn.must(tn.scim.Do(ctx, http.MethodPatch, "/Users/"+erin.User.ID, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{
			map[string]any{"op": "Replace", "path": "userName", "value": newEmail},
			map[string]any{"op": "Replace", "path": `emails[type eq "work"].value`, "value": newEmail},
		}}))
	if res.Status/100 != 2 {
		t.Fatalf("email change = %d %s", res.Status, res.Body)
	}
	erin.User.UserName = newEmail
	tn.eventually("email change reaches /verify", func() error {
		v := tn.verify(b)
		if v.Status != http.StatusOK || v.Header.Get("X-Scimflow-Email") != newEmail || v.Header.Get("X-Scimflow-User-Id") != u.ID {
			return fmt.Errorf("/verify = %d email %q id %q, want 200 %s %s", v.Status, v.Header.Get("X-Scimflow-Email"), v.Header.Get("X-Scimflow-User-Id"), newEmail, u.ID)
		}
		return nil
	})
	// The IdP account now has the new email too; a login maps to the same registry user.
	if err := e.op.AddUser(oidctest.User{Sub: sub, Email: newEmail, Name: "Erin Park"}); err != nil {
		t.Fatal(err)
	}
	b2 := tn.login(erin)
	tn.eventually("login with the new email is the same user", func() error {
		v := tn.verify(b2)
		if v.Header.Get("X-Scimflow-User-Id") != u.ID {
			return fmt.Errorf("user id %q, want %q", v.Header.Get("X-Scimflow-User-Id"), u.ID)
		}
		return nil
	})

	// Delete, then the IdP restores the user with a new SCIM resource (Entra's restore).
	tn.must(tn.scim.DeleteUser(ctx, erin.User))
	tn.waitVerify("deleted: session revoked", b2, http.StatusUnauthorized)
	restored := &scenario.SCIMUser{UserName: newEmail, GivenName: "Erin", FamilyName: "Park", Active: true}
	tn.must(tn.scim.CreateUser(ctx, restored))
	tn.user("restored user unlocked, same registry id", newEmail, func(v scenario.User) error {
		if v.Locked || v.ID != u.ID {
			return fmt.Errorf("locked %v id %s, want unlocked %s", v.Locked, v.ID, u.ID)
		}
		return nil
	})
	b3 := tn.loginEventually(erin)
	tn.waitVerify("login after restore", b3, http.StatusOK)
	tn.wantVerify("session from before the delete stays invalid", b2, http.StatusUnauthorized)
}
