package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestAccessGroupRemoval: an access application allows the SCIM group "Engineering" on appURL's
// host. The IdP removes a person from the group: in automatic mode the same session is denied at
// once (403 no_policy, the session's groups follow SCIM); in reauth mode the session is revoked
// (401) and the next login carries the groups without Engineering, so it is denied (403). The
// decisions reach the access log. It runs on its own serve process: an access application makes
// every other host of the shared one answer no_application.
func TestAccessGroupRemoval(t *testing.T) {
	t.Parallel()
	e := ownEnv(t)
	e.dumpOnFailure(t)
	host := mustHost(t, appURL)
	pol, _ := json.Marshal(map[string]any{"name": "engineering", "decision": "allow", "precedence": 1,
		"include": []any{map[string]any{"group": map[string]string{"name": "Engineering"}}}})
	ctx := context.Background()
	app, err := e.admin.CreateAccessApp(ctx, scenario.AccessApp{Name: "App", Domain: host, Policies: []json.RawMessage{pol}})
	if err != nil {
		t.Fatal(err)
	}
	for _, beh := range []string{"automatic", "reauth"} {
		t.Run(beh, func(t *testing.T) {
			tn := newTenant(t, e, "access-"+beh, scenario.Okta, beh, true, false)
			ctx := tn.ctx
			p := tn.person("gina", "Gina", "Group")
			tn.must(tn.scim.CreateUser(ctx, p.User))
			g := &scenario.SCIMGroup{DisplayName: "Engineering"}
			tn.must(tn.scim.CreateGroup(ctx, g))
			tn.logRow(tn.must(tn.scim.AddMembers(ctx, g, p.User)).RequestID)
			b := tn.login(p)
			// auth learns the app asynchronously: wait until /verify names it.
			tn.eventually("allowed by the app while in Engineering", func() error {
				v := tn.verify(b)
				if v.Status != http.StatusOK || v.Header.Get("X-Scimflow-App") != app.ID {
					return fmt.Errorf("/verify = %d app %q, want 200 app %s", v.Status, v.Header.Get("X-Scimflow-App"), app.ID)
				}
				return nil
			})
			tn.logRow(tn.must(tn.scim.RemoveMembers(ctx, g, p.User)).RequestID)
			switch beh {
			case "automatic":
				v := tn.waitVerify("denied after the removal", b, http.StatusForbidden)
				if r := v.Header.Get("X-Scimflow-Deny-Reason"); r != "no_policy" {
					t.Errorf("deny reason = %q, want no_policy", r)
				}
			case "reauth":
				tn.waitVerify("session revoked by the removal", b, http.StatusUnauthorized)
				b2 := tn.login(p)
				if v := tn.verify(b2); v.Status != http.StatusForbidden || v.Header.Get("X-Scimflow-Deny-Reason") != "no_policy" {
					t.Errorf("the next login's first /verify = %d %q, want 403 no_policy", v.Status, v.Header.Get("X-Scimflow-Deny-Reason"))
				}
			}
			tn.eventually("the access log has the allow and the deny", func() error {
				rows, err := e.admin.AccessLogs(ctx, url.Values{"app_id": {app.ID}, "email": {p.User.UserName}})
				if err != nil {
					return err
				}
				seen := map[string]bool{}
				for _, r := range rows {
					seen[r.Decision+" "+r.Reason] = true
				}
				if !seen["allow engineering"] || !seen["deny no_policy"] {
					return fmt.Errorf("access log rows %+v", rows)
				}
				return nil
			})
		})
	}
	// The tester sees both people denied now (neither is in Engineering any more).
	rep, err := e.admin.TestAccessApp(ctx, app.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Summary.Users != 2 || rep.Summary.Denied != 2 {
		t.Errorf("tester summary = %+v, want 2 users denied", rep.Summary)
	}
}

func mustHost(t *testing.T, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(pu.Hostname())
}
