package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestLogFiltersAndRelogin checks that a refused SCIM request is logged as an ERROR row with its
// status and reason (what an operator looks for when an IdP reports provisioning errors), that the
// log and user filters take an email in any case, and that logging in again in the same browser
// replaces the session (the old one stops working: session fixation, R9).
func TestLogFiltersAndRelogin(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "logs", scenario.Okta, "automatic", true, false)
	ctx := tn.ctx
	p := tn.person("max", "Max", "Logs")
	tn.must(tn.scim.CreateUser(ctx, p.User))
	upper := strings.ToUpper(p.User.UserName)
	dup := tn.must(tn.scim.Do(ctx, http.MethodPost, "/Users", map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": upper, "active": true}))
	if dup.Status != http.StatusConflict {
		t.Fatalf("duplicate userName in another case = %d %s, want 409", dup.Status, dup.Body)
	}
	tn.eventually("the refused request is an ERROR row", func() error {
		rows, err := e.admin.SCIMLogs(ctx, url.Values{"idp_id": {tn.idp.ID}, "status": {"ERROR"}})
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.RequestID == dup.RequestID {
				if r.HTTPStatus != http.StatusConflict || r.ErrorDescription == "" || r.RequestMethod != "POST" {
					t.Errorf("error row = %+v, want POST, 409 and a description", r)
				}
				return nil
			}
		}
		return fmt.Errorf("not among %d ERROR rows", len(rows))
	})
	rows, err := e.admin.SCIMLogs(ctx, url.Values{"idp_id": {tn.idp.ID}, "resource_user_email": {upper}})
	if err != nil || len(rows) < 2 {
		t.Errorf("log rows for %s = %d (%v), want the create and the refused duplicate", upper, len(rows), err)
	}
	if us, err := e.admin.Users(ctx, upper, tn.idp.ID); err != nil || len(us) != 1 {
		t.Errorf("users with email %s = %d (%v), want 1", upper, len(us), err)
	}

	b := tn.login(p)
	first := b.Session()
	if r, err := b.Login(ctx, tn.idp.ID, p.Sub); err != nil || !r.OK() {
		t.Fatalf("second login in the same browser = %d %v", r.Status, err)
	}
	if b.Session() == first {
		t.Fatal("the second login kept the session token")
	}
	tn.waitVerify("new session", b, http.StatusOK)
	v, err := scenario.Verify(ctx, nil, e.srv.ep.Auth, first, "", scenario.Nginx, appURL)
	if err != nil || v.Status != http.StatusUnauthorized {
		t.Errorf("the replaced session at /verify = %d %v, want 401", v.Status, err)
	}
}
