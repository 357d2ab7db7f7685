package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/scimflow/scimflow/internal/scenario"
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
		for _, h := range scenario.IdentityHeaders() {
			if _, ok := v.Header[h]; !ok {
				t.Errorf("%s: /verify's 200 lacks %s, which the proxy snippets copy", p, h)
			}
		}
		for h, want := range map[string]string{
			"X-Scimflow-User-Id": u.ID, "X-Scimflow-Email": carol.User.UserName, "X-Scimflow-Groups": "Ops%2C On-call",
			"X-Scimflow-Idp": tn.idp.ID,
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

	// Operators watch logins and verifications on auth's /metrics, served on its metrics listener
	// only (docs/security.md, finding 11): the auth port, which browsers reach, does not answer it.
	if resp, err := httpClient.Get(e.srv.ep.Auth + "/metrics"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the auth port = %d, want 404", resp.StatusCode)
	}
	resp, err := httpClient.Get(e.srv.ep.Metrics[2] + "/metrics")
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

// TestProxySnippetsCopyEveryIdentityHeader: every proxy configuration in the docs copies all of
// /verify's identity headers onto the request to the application. One it leaves out is a header the
// client can set itself (docs/security.md, finding 5: X-Scimflow-Idp).
func TestProxySnippetsCopyEveryIdentityHeader(t *testing.T) {
	t.Parallel()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	rp, gs := read("reverse-proxies.md"), read("getting-started.md")
	nginx := func(doc string) []string { // the app's location: what nginx sets on the upstream request
		var out []string
		for _, l := range strings.Split(doc, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "proxy_set_header" && strings.HasPrefix(f[1], "X-Scimflow-") {
				out = append(out, f[1])
			}
		}
		return out
	}
	line := func(doc, prefix string) []string {
		for _, l := range strings.Split(doc, "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
				return strings.FieldsFunc(strings.TrimPrefix(l, prefix), func(r rune) bool { return r == ' ' || r == ',' || r == '`' })
			}
		}
		return nil
	}
	var traefik []string
	for _, l := range strings.Split(rp, "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(l), "- X-Scimflow-"); ok {
			traefik = append(traefik, "X-Scimflow-"+h)
		}
	}
	labels := line(rp, "`traefik.http.middlewares.scimflow.forwardauth.authResponseHeaders=")
	for name, got := range map[string][]string{
		"reverse-proxies.md nginx": nginx(rp), "getting-started.md nginx": nginx(gs), "reverse-proxies.md Traefik": traefik,
		"reverse-proxies.md Traefik labels": labels, "reverse-proxies.md Caddy": line(rp, "copy_headers "),
	} {
		for _, h := range scenario.IdentityHeaders() {
			if !slices.Contains(got, h) {
				t.Errorf("%s copies %v, not %s", name, got, h)
			}
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
