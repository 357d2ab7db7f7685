package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/scimflow/scimflow/testkit/scenario"
)

// TestForwardAuth checks /verify as nginx (auth_request), Traefik (ForwardAuth) and Caddy
// (forward_auth) call it, per docs/reverse-proxies.md: 200 with the X-Scimflow-* headers and an app
// token that verifies against /certs for a valid session; without one, 401 for nginx's subrequest
// and API callers and a 302 to /login back to the original URL for browsers; 401 after logout.
func TestForwardAuth(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "fwd", scenario.Okta, "automatic", true, false)
	ctx := tn.ctx
	carol := tn.person("carol", "Carol", "White")
	tn.must(tn.scim.CreateUser(ctx, carol.User))
	ops := &scenario.SCIMGroup{DisplayName: "Ops, On-call"} // a comma must survive the header
	tn.must(tn.scim.CreateGroup(ctx, ops))
	tn.must(tn.scim.AddMembers(ctx, ops, carol.User))
	u := tn.user("carol in Ops", carol.User.UserName, func(u scenario.User) error {
		return groupsAre(u.Identity.GroupNames(), "Ops, On-call")
	})
	b := tn.loginWithGroups(carol, "Ops%2C On-call")

	keys := oidc.NewRemoteKeySet(ctx, e.srv.ep.Auth+"/certs")
	verifier := oidc.NewVerifier(e.srv.ep.Auth, keys, &oidc.Config{ClientID: "scimflow",
		SupportedSigningAlgs: []string{"RS256", "RS512", "PS512", "ES256", "ES384", "ES512"}})

	for _, p := range []scenario.Proxy{scenario.Nginx, scenario.Traefik, scenario.Caddy} {
		v, err := b.Verify(ctx, p, appURL)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != http.StatusOK {
			t.Errorf("%s: /verify with a session = %d, want 200", p, v.Status)
			continue
		}
		for h, want := range map[string]string{
			"X-Scimflow-User-Id": u.ID, "X-Scimflow-Email": carol.User.UserName, "X-Scimflow-Groups": "Ops%2C On-call",
		} {
			if got := v.Header.Get(h); got != want {
				t.Errorf("%s: %s = %q, want %q", p, h, got, want)
			}
		}
		tok, err := verifier.Verify(ctx, v.Header.Get("X-Scimflow-Jwt-Assertion"))
		if err != nil {
			t.Errorf("%s: app token does not verify against /certs: %v", p, err)
			continue
		}
		var claims struct {
			Email  string   `json:"email"`
			Groups []string `json:"groups"`
		}
		tok.Claims(&claims)
		if tok.Subject != u.ID || claims.Email != carol.User.UserName || len(claims.Groups) != 1 || claims.Groups[0] != "Ops, On-call" {
			t.Errorf("%s: app token sub %q claims %+v, want %s / %s / [Ops, On-call]", p, tok.Subject, claims, u.ID, carol.User.UserName)
		}
	}

	// No session.
	checkUnauthenticated(t, ctx, e.srv.ep.Auth, "")
	// A forged cookie is no session either.
	checkUnauthenticated(t, ctx, e.srv.ep.Auth, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")

	// Logout ends the session everywhere it is checked.
	sess := b.Session()
	if err := b.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	tn.eventually("logged-out session refused", func() error {
		v, err := scenario.Verify(ctx, nil, e.srv.ep.Auth, sess, "", scenario.Nginx, appURL)
		if err != nil {
			return err
		}
		if v.Status != http.StatusUnauthorized {
			return errorf("/verify = %d, want 401", v.Status)
		}
		return nil
	})
	checkUnauthenticated(t, ctx, e.srv.ep.Auth, sess)

	// Operators watch logins and verifications on auth's /metrics.
	resp, err := httpClient.Get(e.srv.ep.Auth + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"scimflow_auth_logins_total", "scimflow_auth_sessions_issued_total"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("auth /metrics has no %s", m)
		}
	}
}

// checkUnauthenticated checks /verify's answers for a request without a valid session.
func checkUnauthenticated(t *testing.T, ctx context.Context, authURL, session string) {
	t.Helper()
	for _, c := range []struct {
		p          scenario.Proxy
		want       int
		toOriginal bool
	}{
		{scenario.Nginx, http.StatusUnauthorized, false}, // subrequest with ?redirect=false
		{scenario.API, http.StatusUnauthorized, false},   // scripts and XHR
		{scenario.NginxLogin, http.StatusFound, true},    // nginx's @scimflow_login location
		{scenario.Traefik, http.StatusFound, true},       // browser via ForwardAuth
		{scenario.Caddy, http.StatusFound, true},         // browser via forward_auth
	} {
		v, err := scenario.Verify(ctx, nil, authURL, session, "", c.p, appURL)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status != c.want {
			t.Errorf("%s without a valid session: /verify = %d, want %d", c.p, v.Status, c.want)
			continue
		}
		if v.Header.Get("X-Scimflow-User-Id") != "" || v.Header.Get("X-Scimflow-Jwt-Assertion") != "" {
			t.Errorf("%s without a valid session: identity headers set: %v", c.p, v.Header)
		}
		if !c.toOriginal {
			continue
		}
		loc, err := url.Parse(v.Header.Get("Location"))
		if err != nil || loc.Path != "/login" || loc.Query().Get("redirect_url") != appURL {
			t.Errorf("%s without a valid session: Location = %q, want %s/login?redirect_url=%s", c.p, v.Header.Get("Location"), authURL, appURL)
		}
	}
}
