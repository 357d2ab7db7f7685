package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestReauthIgnoresNoops: in reauth mode only a change of the user's own membership revokes. Okta
// re-pushes groups (a full replace with the same members, a path-less rename to the same name) on
// every cycle, and other people's memberships change all day: none of that may log anyone out.
// Deleting a group the user is in does change their membership, and revokes.
func TestReauthIgnoresNoops(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "reauth-noop", scenario.Okta, "reauth", true, false)
	ctx := tn.ctx
	p := tn.person("ola", "Ola", "Noop")
	q := tn.person("quin", "Quin", "Other")
	tn.must(tn.scim.CreateUser(ctx, p.User))
	tn.must(tn.scim.CreateUser(ctx, q.User))
	g := &scenario.SCIMGroup{DisplayName: "Ops"}
	tn.must(tn.scim.CreateGroup(ctx, g))
	added := tn.must(tn.scim.AddMembers(ctx, g, p.User))
	tn.logRow(added.RequestID) // applied before the login (a login racing it is a known bug)
	b := tn.login(p)
	tn.eventually("session in Ops", func() error { return groupsAre(headerGroups(tn.verify(b)), "Ops") })
	// identity-store has applied the login (a login applied after a later membership change is the
	// known bug TestReauthRevokesWhenLoginAppliedLate).
	tn.user("login applied", p.User.UserName, func(u scenario.User) error {
		if u.Status != "active" {
			return fmt.Errorf("status %s", u.Status)
		}
		return nil
	})

	patch := func(ops ...any) scenario.Result {
		t.Helper()
		res := tn.must(tn.scim.Do(ctx, http.MethodPatch, "/Groups/"+g.ID, map[string]any{
			"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"}, "Operations": ops}))
		if res.Status/100 != 2 {
			t.Fatalf("PATCH group = %d %s", res.Status, res.Body)
		}
		return res
	}
	for _, c := range []struct {
		what string
		do   func() scenario.Result
	}{
		{"Okta full push with the same members", func() scenario.Result {
			return patch(map[string]any{"op": "replace", "path": "members",
				"value": []any{map[string]any{"value": p.User.ID, "display": p.User.UserName}}})
		}},
		{"Okta path-less rename to the same name", func() scenario.Result {
			return patch(map[string]any{"op": "replace", "value": map[string]any{"id": g.ID, "displayName": "Ops"}})
		}},
		{"another user added to the group", func() scenario.Result { return tn.must(tn.scim.AddMembers(ctx, g, q.User)) }},
	} {
		res := c.do()
		tn.logRow(res.RequestID) // identity-store has applied it
		u := tn.user("registry", p.User.UserName, nil)
		for _, h := range u.History {
			if h.Cause == res.RequestID && hasNote(h, "revoked") {
				t.Errorf("reauth: %s revoked the sessions: %+v", c.what, h)
			}
		}
		tn.wantVerify("reauth after "+c.what, b, http.StatusOK)
	}
	res := tn.must(tn.scim.Do(ctx, http.MethodDelete, "/Groups/"+g.ID, nil))
	tn.checkLog(res, "GROUP", "", "Ops")
	tn.waitVerify("reauth: deleting the user's group revokes", b, http.StatusUnauthorized)
}
