package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// TestLoginVerifyAndIdentity is the happy path: login with PKCE (O23: S256 in the authorise URL),
// a session cookie, /verify headers, an app token that verifies against /certs, /get-identity with
// Cloudflare's field names, and a LoggedIn event on the AUTH stream.
func TestLoginVerifyAndIdentity(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-a", "https://app.example.com/dash?x=1")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://app.example.com/dash?x=1" {
		t.Fatalf("callback = %d %q %s, want 302 to the app", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	ar := h.op.LastAuthorizeRequest()
	if ar.Get("code_challenge_method") != "S256" || len(ar.Get("code_challenge")) < 43 || ar.Get("nonce") == "" || ar.Get("state") == "" {
		t.Errorf("authorize request = %v, want S256 PKCE, nonce and state", ar)
	}
	if got := ar.Get("redirect_uri"); got != h.r.url+"/callback" {
		t.Errorf("redirect_uri = %q, want %q", got, h.r.url+"/callback")
	}
	tok := b.cookie(h.r.url, h.r.srv.sessionName)
	if tok == "" {
		t.Fatal("no session cookie after login")
	}

	v := verify(t, h.r, tok, map[string]string{"X-Forwarded-Host": "app.example.com"})
	if v.StatusCode != http.StatusOK {
		t.Fatalf("verify = %d, want 200", v.StatusCode)
	}
	wantID := events.UserID("idp-a", aliceEmail)
	if got := v.Header.Get(HeaderUserID); got != wantID {
		t.Errorf("%s = %q, want %q", HeaderUserID, got, wantID)
	}
	if got := v.Header.Get(HeaderEmail); got != aliceEmail {
		t.Errorf("%s = %q, want %q", HeaderEmail, got, aliceEmail)
	}
	if got := v.Header.Get(HeaderGroups); got != "eng,ops" {
		t.Errorf("%s = %q, want eng,ops", HeaderGroups, got)
	}
	// The app token verifies against /certs with go-oidc, like Cloudflare's sample does.
	ctx := context.Background()
	ks := oidc.NewRemoteKeySet(ctx, h.r.url+"/certs")
	ver := oidc.NewVerifier(h.r.srv.issuer, ks, &oidc.Config{ClientID: "scimflow", SupportedSigningAlgs: []string{"ES256"}})
	at, err := ver.Verify(ctx, v.Header.Get(HeaderJWTAssertion))
	if err != nil {
		t.Fatalf("app token does not verify against /certs: %v", err)
	}
	var ac appClaims
	at.Claims(&ac)
	if ac.Email != aliceEmail || ac.Subject != wantID || ac.Type != "app" || !slices.Equal(ac.Groups, []string{"eng", "ops"}) {
		t.Errorf("app token claims = %+v", ac)
	}
	if ttl := time.Unix(ac.Expiry, 0).Sub(time.Unix(ac.IssuedAt, 0)); ttl > 5*time.Minute {
		t.Errorf("app token lifetime = %s, want ≤ 5m", ttl)
	}

	resp, body = b.get(t, h.r.url+"/get-identity")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get-identity = %d %s", resp.StatusCode, body)
	}
	var gi map[string]any
	json.Unmarshal([]byte(body), &gi)
	want := map[string]any{
		"email": aliceEmail, "user_uuid": wantID, "id": wantID, "name": "Alice",
		"idp":         map[string]any{"id": "idp-a", "type": "oidc"},
		"groups":      []any{map[string]any{"id": "eng", "name": "eng"}, map[string]any{"id": "ops", "name": "ops"}},
		"oidc_fields": map[string]any{"department": "R&D", "roles": []any{"admin", "dev"}},
		"version":     float64(2),
	}
	for k, w := range want {
		if diff := cmp.Diff(w, gi[k]); diff != "" {
			t.Errorf("get-identity %s (-want +got):\n%s", k, diff)
		}
	}
	if _, ok := gi["iat"].(float64); !ok {
		t.Errorf("get-identity has no iat: %v", gi)
	}

	waitFor(t, "logged_in event", 10*time.Second, func() error {
		for _, e := range h.n.streamEvents(t, events.StreamAuth) {
			if li, ok := e.Data.(events.LoggedIn); ok {
				if li.UserID != wantID || li.Email != aliceEmail || li.SessionIDHash == "" || li.SCIMEnabled ||
					!slices.Equal(li.Groups, []string{"eng", "ops"}) || li.OIDCFields["department"] != "R&D" {
					t.Fatalf("LoggedIn = %+v", li)
				}
				return nil
			}
		}
		return errNotYet
	})
	if got := metricValue(t, h.r.reg, "scimflow_auth_sessions_issued_total", map[string]string{"idp": "idp-a"}); got != 1 {
		t.Errorf("sessions issued = %v, want 1", got)
	}
	if got := metricValue(t, h.r.reg, "scimflow_auth_logins_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("successful logins = %v, want 1", got)
	}
}

var errNotYet = errNotYetT{}

type errNotYetT struct{}

func (errNotYetT) Error() string { return "not yet" }

// TestSigningAlgorithmsAccepted: each of the six allow-listed algorithms logs in.
func TestSigningAlgorithmsAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, alg := range oidctest.SupportedAlgs() {
		if err := h.op.SetAlg(alg); err != nil {
			t.Fatal(err)
		}
		b := newBrowser()
		resp, body := h.login(b, h.r, "idp-a", "")
		if resp.StatusCode != http.StatusFound || b.cookie(h.r.url, h.r.srv.sessionName) == "" {
			t.Errorf("login with %s = %d %s, want 302 and a session", alg, resp.StatusCode, body)
		}
	}
	if got, want := SupportedSigningAlgs(), oidctest.SupportedAlgs(); !slices.Equal(got, want) {
		t.Errorf("SupportedSigningAlgs() = %v, want %v", got, want)
	}
}

// TestTestEndpointShowsIdentity: /test?idp_id= shows the identity with oidc_fields and makes no session.
func TestTestEndpointShowsIdentity(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	b := newBrowser()
	resp, body := b.get(t, h.r.url+"/test?idp_id=idp-a")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/test = %d %s", resp.StatusCode, body)
	}
	resp, _ = b.get(t, resp.Header.Get("Location"))
	resp, body = b.get(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/test callback = %d %s, want 200", resp.StatusCode, body)
	}
	var got map[string]any
	json.Unmarshal([]byte(body), &got)
	if got["email"] != aliceEmail || cmp.Diff(map[string]any{"department": "R&D", "roles": []any{"admin", "dev"}}, got["oidc_fields"]) != "" {
		t.Errorf("/test identity = %v", got)
	}
	if c := b.cookie(h.r.url, h.r.srv.sessionName); c != "" {
		t.Errorf("/test made a session cookie")
	}
}

// TestIdPConfigAppliesWithoutRestart: an IdP added, then changed, in idp_config is used at once.
func TestIdPConfigAppliesWithoutRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opB := newOP(t, h.clock, "idp-b", func(i *events.IdP) { i.Config.Claims = nil })
	if err := opB.AddUser(oidctest.User{Sub: "bob", Claims: map[string]any{"mail": "Bob@Example.com", "Groups": []string{"Admins"}}}); err != nil {
		t.Fatal(err)
	}
	opB.SetDefaultUser("bob")
	opB.idp.Config.EmailClaimName = "mail"
	h.n.putIdP(t, opB.idp)
	var tok string
	waitFor(t, "idp-b usable", 10*time.Second, func() error {
		b := newBrowser()
		resp, _ := b.get(t, h.r.url+"/login?idp_id=idp-b")
		if resp.StatusCode != http.StatusFound {
			return errNotYet
		}
		tok = h.mustLogin(b, h.r, "idp-b")
		return nil
	})
	v := verify(t, h.r, tok, nil)
	if v.Header.Get(HeaderEmail) != "bob@example.com" || v.Header.Get(HeaderGroups) != "Admins" {
		t.Errorf("verify headers = %v, want email from the mail claim and groups from a Groups claim", v.Header)
	}
	// Change the claims copied into oidc_fields: the next login uses the new configuration.
	opB.idp.Config.Claims = []string{"mail"}
	h.n.putIdP(t, opB.idp)
	waitFor(t, "new claims config", 10*time.Second, func() error {
		b := newBrowser()
		h.mustLogin(b, h.r, "idp-b")
		_, body := b.get(t, h.r.url+"/get-identity")
		var gi getIdentityResponse
		json.Unmarshal([]byte(body), &gi)
		if gi.OIDCFields["mail"] != "Bob@Example.com" {
			return errNotYet
		}
		return nil
	})
}

// TestForwardAuthUnauthenticated: browsers are sent to /login with the original URL rebuilt from
// X-Forwarded-*; API callers and nginx (redirect=false) get 401.
func TestForwardAuthUnauthenticated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	fwd := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/a/b?c=d",
		"Accept": "text/html,application/xhtml+xml"}
	resp := verify(t, h.r, "", fwd)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("browser verify = %d, want 302", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Path != "/login" || loc.Query().Get("redirect_url") != "https://app.example.com/a/b?c=d" {
		t.Errorf("Location = %s, want /login with redirect_url=https://app.example.com/a/b?c=d", loc)
	}
	for name, hdr := range map[string]map[string]string{
		"xhr":      {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
		"api":      {"Accept": "application/json"},
		"bearer":   {"Accept": "text/html", "Authorization": "Bearer x"},
		"no-acc":   {},
		"garbage":  {"Accept": "text/html", "Cookie": h.r.srv.sessionName + "=not-a-token"},
		"original": {"X-Original-URL": "https://app.example.com/x"},
	} {
		if resp := verify(t, h.r, "", hdr); resp.StatusCode != http.StatusUnauthorized && name != "garbage" {
			t.Errorf("%s: verify = %d, want 401", name, resp.StatusCode)
		} else if name == "garbage" && resp.StatusCode != http.StatusFound {
			t.Errorf("%s: verify = %d, want 302 (browser with an invalid cookie)", name, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, h.r.url+"/verify?redirect=false", nil)
	req.Header.Set("Accept", "text/html")
	r2, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusUnauthorized {
		t.Errorf("verify?redirect=false = %d, want 401", r2.StatusCode)
	}
}

// TestLoginChooser: /login without idp_id lists the IdPs when there are several.
func TestLoginChooser(t *testing.T) {
	t.Parallel()
	h, _ := mixUpHarness(t)
	b := newBrowser()
	resp, body := b.do(t, http.MethodGet, h.r.url+"/login?redirect_url=/x", http.Header{"Accept": {"text/html"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "idp_id=idp-a&amp;redirect_url=%2Fx") || !strings.Contains(body, "idp_id=idp-b") {
		t.Errorf("chooser = %d %s", resp.StatusCode, body)
	}
	resp, body = b.get(t, h.r.url+"/login")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "idp-b") {
		t.Errorf("chooser (API) = %d %s, want 400 listing the IdPs", resp.StatusCode, body)
	}
}
