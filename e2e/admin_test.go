package e2e

import (
	"errors"
	"net/http"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestAdminIdP checks what an operator sees when connecting an IdP: an absolute scim_base_url built
// from scim_ingest.base_url (pasted into Okta or Entra as the tenant URL), the SCIM secret shown on
// create only, a wrong SCIM secret refused, and seat_deprovision without user_deprovision rejected.
func TestAdminIdP(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	tn := newTenant(t, e, "admin", scenario.Okta, "automatic", false, false)
	want := e.srv.ep.SCIM + "/populations/" + tn.idp.ID + "/scim/v2"
	if got := tn.idp.SCIMConfig.SCIMBaseURL; got != want {
		t.Errorf("create: scim_config.scim_base_url = %q, want %q", got, want)
	}
	p, err := e.admin.GetIdP(tn.ctx, tn.idp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p.SCIMConfig.SCIMBaseURL != want || p.SCIMConfig.Secret != "" {
		t.Errorf("get: scim_config = %+v, want scim_base_url %q and no secret", p.SCIMConfig, want)
	}
	wrong := &scenario.SCIM{BaseURL: want, Secret: "scim_wrong", Dialect: scenario.Okta}
	if r, err := wrong.Do(tn.ctx, http.MethodGet, "/Users", nil); err != nil || r.Status != http.StatusUnauthorized {
		t.Errorf("SCIM with a wrong secret = %d %v, want 401", r.Status, err)
	}
	bad := scenario.NewIdPSpec("e2e bad policy "+scenario.RandomString(6), e.op, e.secret, "automatic", false, true)
	_, err = e.admin.CreateIdP(tn.ctx, bad)
	var ae *scenario.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("CreateIdP(seat_deprovision without user_deprovision) = %v, want 400", err)
	}
}

// TestLoginWithoutIssuer: docs/design.md §5 makes `issuer` optional in the IdP body
// (`{client_id, client_secret, auth_url, token_url, certs_url, issuer?, …}`, Cloudflare's generic OIDC
// shape), and the admin API accepts an IdP with the three URLs and no issuer, so a login at such an
// IdP must work. (Found by this suite: auth used to refuse every such login with idp_unavailable.)
func TestLoginWithoutIssuer(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	spec := scenario.NewIdPSpec("e2e no issuer "+scenario.RandomString(6), e.op, e.secret, "automatic", true, false)
	spec.Config.Issuer = ""
	idp, err := e.admin.CreateIdP(t.Context(), spec)
	if err != nil {
		t.Fatalf("CreateIdP without issuer: %v (the admin API accepts it per docs/admin-api.md)", err)
	}
	p, err := scenario.NewPerson(e.op, "dora@noissuer.example.com", "Dora", "Ng")
	if err != nil {
		t.Fatal(err)
	}
	b := scenario.NewBrowser(e.srv.ep.Auth, nil)
	if err := b.WaitIdP(t.Context(), idp.ID, waitTimeout); err != nil {
		t.Logf("auth does not offer the IdP: %v", err)
	}
	r, err := b.Login(t.Context(), idp.ID, p.Sub)
	if err != nil || !r.OK() {
		t.Fatalf("login at an IdP without issuer = %d %s (%v), want 302 with a session", r.Status, r.Body, err)
	}
}
