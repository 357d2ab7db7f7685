package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestIdPChangesApplyLive changes an IdP through the admin API while scimflow runs (docs/design.md §1:
// changes apply without restart): a new update behaviour governs the next SCIM change, a refreshed
// SCIM secret replaces the old one at once, disabling SCIM closes the endpoint, and deleting the
// IdP stops its logins.
func TestIdPChangesApplyLive(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "live", scenario.Okta, "no_action", true, false)
	ctx := tn.ctx
	p := tn.person("liv", "Liv", "Live")
	tn.must(tn.scim.CreateUser(ctx, p.User))
	b := tn.login(p)
	tn.waitVerify("session", b, http.StatusOK)

	// no_action → automatic: the next group change applies at once.
	spec := scenario.NewIdPSpec(tn.idp.Name, e.op, "", "automatic", true, false)
	if _, err := e.admin.UpdateIdP(ctx, tn.idp.ID, spec); err != nil {
		t.Fatal(err)
	}
	g := &scenario.SCIMGroup{DisplayName: "Live"}
	tn.must(tn.scim.CreateGroup(ctx, g))
	tn.eventually("automatic in force: a membership reaches the session", func() error {
		// Re-send until a change committed under the new policy applies (the policy reaches
		// scim-ingest asynchronously; a membership already present changes nothing).
		if _, err := tn.scim.RemoveMembers(ctx, g, p.User); err != nil {
			return err
		}
		if _, err := tn.scim.AddMembers(ctx, g, p.User); err != nil {
			return err
		}
		return scenario.Eventually(ctx, waitTimeout/4, func() error {
			return groupsAre(headerGroups(tn.verify(b)), "Live")
		})
	})

	// Refresh the SCIM secret: the new one works, the old one is refused (default grace 0).
	old := tn.scim.Secret
	np, err := e.admin.RefreshSCIMSecret(ctx, tn.idp.ID)
	if err != nil || np.SCIMConfig.Secret == "" || np.SCIMConfig.Secret == old {
		t.Fatalf("refresh_scim_secret = %+v, %v; want a new secret", np.SCIMConfig, err)
	}
	fresh := *tn.scim
	fresh.Secret = np.SCIMConfig.Secret
	tn.eventually("new secret accepted, old refused", func() error {
		r1, err := fresh.Do(ctx, http.MethodGet, "/Users", nil)
		if err != nil {
			return err
		}
		r2, err := tn.scim.Do(ctx, http.MethodGet, "/Users", nil)
		if err != nil {
			return err
		}
		if r1.Status != http.StatusOK || r2.Status != http.StatusUnauthorized {
			return fmt.Errorf("new secret %d, old secret %d; want 200 and 401", r1.Status, r2.Status)
		}
		return nil
	})

	// Disable SCIM: the endpoint disappears.
	spec.SCIMConfig.Enabled = false
	if _, err := e.admin.UpdateIdP(ctx, tn.idp.ID, spec); err != nil {
		t.Fatal(err)
	}
	tn.eventually("SCIM disabled: 404", func() error {
		r, err := fresh.Do(ctx, http.MethodGet, "/Users", nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusNotFound {
			return fmt.Errorf("GET /Users = %d, want 404", r.Status)
		}
		return nil
	})

	// Delete the IdP: no more logins through it.
	if err := e.admin.DeleteIdP(ctx, tn.idp.ID); err != nil {
		t.Fatal(err)
	}
	tn.eventually("deleted IdP: login refused", func() error {
		_, err := tn.browser().StartLogin(ctx, tn.idp.ID, p.Sub)
		if err == nil {
			return fmt.Errorf("login still starts")
		}
		return nil
	})
}
