package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// TestAdminActions checks the operator's levers: revoking a user's sessions (seat kept, next login
// works) and removing a seat (sessions end, status inactive until the next login takes a seat), each
// recorded in the history with the admin request as its cause.
func TestAdminActions(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "adminops", scenario.Okta, "no_action", true, true)
	ctx := tn.ctx
	dan := tn.person("dan", "Dan", "Brown")
	tn.must(tn.scim.CreateUser(ctx, dan.User))
	b := tn.login(dan)
	u := tn.user("dan active", dan.User.UserName, func(u scenario.User) error {
		if u.Status != "active" || !u.SeatHeld {
			return fmt.Errorf("status %s seat %v", u.Status, u.SeatHeld)
		}
		return nil
	})

	if err := e.admin.RevokeUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	tn.waitVerify("admin revoke ends the session", b, http.StatusUnauthorized)
	u = tn.user("revoke keeps the seat and records the cause", dan.User.UserName, func(u scenario.User) error {
		if !u.SeatHeld || u.Locked || len(u.History) == 0 || !strings.HasPrefix(u.History[0].Cause, "admin-") {
			return fmt.Errorf("seat %v locked %v latest history %+v", u.SeatHeld, u.Locked, u.History[:min(1, len(u.History))])
		}
		return nil
	})
	b = tn.login(dan)
	tn.waitVerify("login after an admin revoke", b, http.StatusOK)

	if err := e.admin.RemoveSeat(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	tn.waitVerify("seat removal ends the session", b, http.StatusUnauthorized)
	tn.user("seat removed: inactive until the next login", dan.User.UserName, func(u scenario.User) error {
		if u.SeatHeld || u.Status != "inactive" {
			return fmt.Errorf("seat %v status %s", u.SeatHeld, u.Status)
		}
		return nil
	})
	b = tn.login(dan)
	tn.waitVerify("login after seat removal", b, http.StatusOK)
	tn.user("the login takes a seat again", dan.User.UserName, func(u scenario.User) error {
		if !u.SeatHeld || u.Status != "active" {
			return fmt.Errorf("seat %v status %s", u.SeatHeld, u.Status)
		}
		return nil
	})
}

// TestGroupsSource checks where groups come from (docs/design.md §4): with SCIM enabled, SCIM membership
// replaces the groups claim once SCIM knows the person — before that (never provisioned) the claim
// applies, as with SCIM disabled (docs/design.md §4: this used to be "none").
func TestGroupsSource(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	on := newTenant(t, e, "claims-scim", scenario.Okta, "automatic", true, false)
	email := on.email("gus")
	if err := e.op.AddUser(oidctest.User{Sub: "sub-" + email, Email: email, Name: "Gus", Groups: []string{"claim-admins"}}); err != nil {
		t.Fatal(err)
	}
	gus := &scenario.Person{Sub: "sub-" + email, User: &scenario.SCIMUser{UserName: email, GivenName: "Gus", FamilyName: "Gray", Active: true}}
	b := on.login(gus)
	v := on.waitVerify("unprovisioned user at a SCIM IdP", b, http.StatusOK)
	if g := v.Header.Get("X-Scimflow-Groups"); g != "claim-admins" {
		t.Errorf("SCIM enabled, user not provisioned: groups %q, want the claim claim-admins", g)
	}
	// Once SCIM provisions him (in no group), SCIM membership replaces the claim.
	on.must(on.scim.CreateUser(on.ctx, gus.User))
	on.eventually("a login after SCIM provisioned gus has no groups", func() error {
		v := on.verify(on.login(gus))
		if v.Status != http.StatusOK || v.Header.Get("X-Scimflow-Groups") != "" {
			return fmt.Errorf("verify = %d groups %q", v.Status, v.Header.Get("X-Scimflow-Groups"))
		}
		return nil
	})

	spec := scenario.NewIdPSpec("e2e claims only "+scenario.RandomString(6), e.op, e.secret, "automatic", false, false)
	spec.SCIMConfig.Enabled = false
	idp, err := e.admin.CreateIdP(ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	off := scenario.NewBrowser(e.srv.ep.Auth, nil)
	if err := off.WaitIdP(ctx(t), idp.ID, waitTimeout); err != nil {
		t.Fatal(err)
	}
	r, err := off.Login(ctx(t), idp.ID, gus.Sub)
	if err != nil || !r.OK() {
		t.Fatalf("login at the claims-only IdP = %d %s %v", r.Status, r.Body, err)
	}
	v, err = off.Verify(ctx(t), scenario.Traefik, appURL)
	if err != nil || v.Status != http.StatusOK || v.Header.Get("X-Scimflow-Groups") != "claim-admins" {
		t.Errorf("SCIM disabled: /verify = %d groups %q (%v), want 200 claim-admins", v.Status, v.Header.Get("X-Scimflow-Groups"), err)
	}
}
