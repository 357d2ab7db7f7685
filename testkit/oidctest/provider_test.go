package oidctest

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/scimflow/scimflow/internal/devidp"
)

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s = %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s status = %d, want 200", u, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", u, err)
	}
}

type discoveryDoc struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	ResponseTypes         []string `json:"response_types_supported"`
	SigningAlgs           []string `json:"id_token_signing_alg_values_supported"`
	AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
	IssParameter          bool     `json:"authorization_response_iss_parameter_supported"`
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", "/realms/a"} {
		t.Run("path="+path, func(t *testing.T) {
			t.Parallel()
			p := newTestProvider(t, testOptions())
			issuer := p.Issuer() + path
			if err := p.SetIssuer(issuer); err != nil {
				t.Fatalf("SetIssuer(%q) = %v", issuer, err)
			}
			var got discoveryDoc
			getJSON(t, issuer+"/.well-known/openid-configuration", &got)
			want := discoveryDoc{
				Issuer:                issuer,
				AuthorizationEndpoint: issuer + "/authorize",
				TokenEndpoint:         issuer + "/token",
				JWKSURI:               issuer + "/jwks",
				UserinfoEndpoint:      issuer + "/userinfo",
				ResponseTypes:         []string{"code"},
				SigningAlgs:           []string{"RS256", "RS512", "PS512", "ES256", "ES384", "ES512"},
				AuthMethods:           []string{ClientSecretBasic, ClientSecretPost},
				CodeChallengeMethods:  []string{"S256"},
				IssParameter:          true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("discovery mismatch (-want +got):\n%s", diff)
			}
			op, err := oidc.NewProvider(t.Context(), issuer)
			if err != nil {
				t.Fatalf("oidc.NewProvider(%q) = %v", issuer, err)
			}
			if got, want := op.Endpoint().TokenURL, p.TokenURL(); got != want {
				t.Errorf("TokenURL = %q, want %q", got, want)
			}
			var keys jose.JSONWebKeySet
			getJSON(t, p.JWKSURL(), &keys)
			if len(keys.Keys) == 0 {
				t.Errorf("JWKS at %s has no keys", p.JWKSURL())
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	var set jose.JSONWebKeySet
	getJSON(t, p.JWKSURL(), &set)
	if got := p.JWKSFetches(); got != 1 {
		t.Errorf("JWKSFetches() = %d, want 1", got)
	}
	got := map[string]string{}
	for _, k := range set.Keys {
		if k.KeyID == "" || k.Use != "sig" || !k.Valid() || !k.IsPublic() {
			t.Errorf("key %+v: want a valid public signing key with a kid", k)
		}
		if _, dup := got[k.Algorithm]; dup {
			t.Errorf("two keys for alg %s", k.Algorithm)
		}
		got[k.Algorithm] = k.KeyID
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if !strings.HasPrefix(k.Algorithm, "RS") && !strings.HasPrefix(k.Algorithm, "PS") {
				t.Errorf("RSA key with alg %s", k.Algorithm)
			}
		case *ecdsa.PublicKey:
			want := map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[pub.Curve.Params().Name]
			if k.Algorithm != want {
				t.Errorf("curve %s with alg %s, want %s", pub.Curve.Params().Name, k.Algorithm, want)
			}
		default:
			t.Errorf("key type %T", k.Key)
		}
	}
	if diff := cmp.Diff(p.KeyIDs(), got); diff != "" {
		t.Errorf("JWKS kids mismatch KeyIDs() (-want +got):\n%s", diff)
	}
	wantAlgs := append(SupportedAlgs(), "RS384", "PS256")
	slices.Sort(wantAlgs)
	var gotAlgs []string
	for alg := range got {
		gotAlgs = append(gotAlgs, alg)
	}
	slices.Sort(gotAlgs)
	if diff := cmp.Diff(wantAlgs, gotAlgs); diff != "" {
		t.Errorf("JWKS algorithms (-want +got):\n%s", diff)
	}
}

// TestCodeFlow runs the full authorization code flow with PKCE, state and nonce through
// golang.org/x/oauth2 and go-oidc, once per supported algorithm.
func TestCodeFlow(t *testing.T) {
	t.Parallel()
	for _, alg := range SupportedAlgs() {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			opts := testOptions()
			opts.Alg = alg
			p := newTestProvider(t, opts)
			r := newRP(t, p, testClientID, testSecret)

			l, tok, raw := r.loginToken(t)
			if got := l.callback.Get("state"); got != l.state {
				t.Errorf("callback state = %q, want %q", got, l.state)
			}
			if got := l.callback.Get("iss"); got != p.Issuer() {
				t.Errorf("callback iss = %q, want %q", got, p.Issuer())
			}
			req := p.LastAuthorizeRequest()
			if got := req.Get("code_challenge_method"); got != "S256" {
				t.Errorf("LastAuthorizeRequest() code_challenge_method = %q, want S256", got)
			}

			idt, err := r.verifier.Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("Verify(%s token) = %v", alg, err)
			}
			if idt.Subject != "alice" || idt.Nonce != l.nonce {
				t.Errorf("Verify() sub, nonce = %q, %q, want alice, %q", idt.Subject, idt.Nonce, l.nonce)
			}
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Errorf("VerifyAccessToken() = %v", err)
			}
			header, _, _ := jwtParts(t, raw)
			if header["alg"] != alg || header["kid"] != p.KeyIDs()[alg] {
				t.Errorf("header alg, kid = %v, %v, want %s, %s", header["alg"], header["kid"], alg, p.KeyIDs()[alg])
			}

			type claims struct {
				Email         string         `json:"email"`
				EmailVerified bool           `json:"email_verified"`
				Name          string         `json:"name"`
				Groups        []string       `json:"groups"`
				Department    string         `json:"department"`
				Roles         []string       `json:"roles"`
				Org           map[string]any `json:"org"`
			}
			want := claims{
				Email: "alice@example.com", EmailVerified: true, Name: "Alice", Groups: []string{"eng", "Admins"},
				Department: "R&D", Roles: []string{"viewer", "editor"},
				Org: map[string]any{"unit": map[string]any{"id": float64(7), "path": []any{"a", "b"}}},
			}
			var got claims
			if err := idt.Claims(&got); err != nil {
				t.Fatalf("Claims() = %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ID token claims (-want +got):\n%s", diff)
			}

			ui, err := r.op.UserInfo(t.Context(), oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("UserInfo() = %v", err)
			}
			var gotUI claims
			if err := ui.Claims(&gotUI); err != nil {
				t.Fatalf("UserInfo.Claims() = %v", err)
			}
			if ui.Subject != idt.Subject {
				t.Errorf("UserInfo sub = %q, want %q", ui.Subject, idt.Subject)
			}
			if diff := cmp.Diff(want, gotUI); diff != "" {
				t.Errorf("userinfo claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoginHintAndDefaultUser(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	subOf := func(opts ...oauth2.AuthCodeOption) (string, string) {
		l := r.authorize(t, opts...)
		if e := l.callback.Get("error"); e != "" {
			return "", e
		}
		tok, err := r.exchange(t, l)
		if err != nil {
			t.Fatalf("Exchange = %v", err)
		}
		idt, err := r.verifier.Verify(t.Context(), tok.Extra("id_token").(string))
		if err != nil {
			t.Fatalf("Verify = %v", err)
		}
		return idt.Subject, ""
	}
	hint := func(sub string) oauth2.AuthCodeOption { return oauth2.SetAuthURLParam("login_hint", sub) }

	// Sequential: each step changes provider-wide user state.
	steps := []struct {
		name             string
		do               func() error
		opts             []oauth2.AuthCodeOption
		wantSub, wantErr string
	}{
		{"default is first user", nil, nil, "alice", ""},
		{"login_hint", nil, []oauth2.AuthCodeOption{hint("bob")}, "bob", ""},
		{"SetDefaultUser", func() error { return p.SetDefaultUser("bob") }, nil, "bob", ""},
		{"unregistered hint", nil, []oauth2.AuthCodeOption{hint("nobody")}, "", "access_denied"},
		{"denied user", nil, []oauth2.AuthCodeOption{hint("mallory")}, "", "access_denied"},
		{"allowed again", func() error { return p.AllowUser("mallory") }, []oauth2.AuthCodeOption{hint("mallory")}, "mallory", ""},
		{"denied default", func() error { return p.DenyUser("bob") }, nil, "", "access_denied"},
	}
	for _, s := range steps {
		if s.do != nil {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		sub, e := subOf(s.opts...)
		if sub != s.wantSub || e != s.wantErr {
			t.Errorf("%s: login = (%q, %q), want (%q, %q)", s.name, sub, e, s.wantSub, s.wantErr)
		}
	}
	if err := p.SetDefaultUser("nobody"); err == nil {
		t.Errorf("SetDefaultUser(nobody) = nil, want error")
	}
}

func TestAuthorizeRejects(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	valid := url.Values{
		"client_id": {testClientID}, "redirect_uri": {testRedirect}, "response_type": {"code"},
		"scope": {"openid email"}, "state": {"st"}, "nonce": {"n"},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
		"code_challenge_method": {"S256"},
	}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for k, vs := range valid {
			q[k] = append([]string(nil), vs...)
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	tests := []struct {
		name       string
		query      url.Values
		wantStatus int    // when the provider must not redirect
		wantError  string // the error parameter of the redirect; "" means a code
	}{
		{"valid", valid, http.StatusFound, ""},
		{"no client_id", with("client_id", ""), http.StatusBadRequest, ""},
		{"unknown client_id", with("client_id", "other"), http.StatusBadRequest, ""},
		{"no redirect_uri", with("redirect_uri", ""), http.StatusBadRequest, ""},
		{"unregistered redirect_uri", with("redirect_uri", testRedirect+"/x"), http.StatusBadRequest, ""},
		{"response_type token", with("response_type", "token"), http.StatusFound, "unsupported_response_type"},
		{"no openid scope", with("scope", "email"), http.StatusFound, "invalid_scope"},
		{"plain PKCE", with("code_challenge_method", "plain"), http.StatusFound, "invalid_request"},
		{"PKCE without method", with("code_challenge_method", ""), http.StatusFound, "invalid_request"},
		{"unknown login_hint", with("login_hint", "nobody"), http.StatusFound, "access_denied"},
		{"denied login_hint", with("login_hint", "mallory"), http.StatusFound, "access_denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := r.browser.Get(p.AuthURL() + "?" + tt.query.Encode())
			if err != nil {
				t.Fatalf("GET /authorize = %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET /authorize status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusFound {
				return
			}
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatalf("parse Location: %v", err)
			}
			q := loc.Query()
			if got := q.Get("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			if (q.Get("code") != "") != (tt.wantError == "") {
				t.Errorf("code = %q with error %q", q.Get("code"), q.Get("error"))
			}
			if got := q.Get("state"); got != "st" {
				t.Errorf("state = %q, want st", got)
			}
		})
	}
}

func TestClientAuthentication(t *testing.T) {
	t.Parallel()
	styles := []struct {
		style oauth2.AuthStyle
		want  string
	}{
		{oauth2.AuthStyleInHeader, ClientSecretBasic},
		{oauth2.AuthStyleInParams, ClientSecretPost},
	}
	t.Run("both methods", func(t *testing.T) {
		t.Parallel()
		p := newTestProvider(t, testOptions())
		r := newRP(t, p, testClientID, testSecret)
		// Sequential: LastClientAuthMethod is provider-wide.
		for _, s := range styles {
			r.cfg.Endpoint.AuthStyle = s.style
			r.loginToken(t)
			if got := p.LastClientAuthMethod(); got != s.want {
				t.Errorf("AuthStyle %v: LastClientAuthMethod() = %q, want %q", s.style, got, s.want)
			}
		}
	})
	for _, only := range styles {
		t.Run("only "+only.want, func(t *testing.T) {
			t.Parallel()
			opts := testOptions()
			opts.ClientAuthMethods = []string{only.want}
			p := newTestProvider(t, opts)
			r := newRP(t, p, testClientID, testSecret)
			for _, s := range styles {
				r.cfg.Endpoint.AuthStyle = s.style
				_, err := r.exchange(t, r.authorize(t))
				if wantOK := s.want == only.want; (err == nil) != wantOK {
					t.Errorf("Exchange with %s = %v, want success %v", s.want, err, wantOK)
				}
				if err != nil && oauthErrorCode(err) != "invalid_client" {
					t.Errorf("Exchange with %s error = %v, want invalid_client", s.want, err)
				}
			}
		})
	}
	t.Run("both at once", func(t *testing.T) {
		t.Parallel()
		p := newTestProvider(t, testOptions())
		r := newRP(t, p, testClientID, testSecret)
		l := r.authorize(t)
		form := url.Values{
			"grant_type": {"authorization_code"}, "code": {l.callback.Get("code")}, "redirect_uri": {testRedirect},
			"code_verifier": {l.pkce}, "client_id": {testClientID}, "client_secret": {testSecret},
		}
		req, err := http.NewRequest(http.MethodPost, p.TokenURL(), strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(testClientID, testSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /token = %v", err)
		}
		defer resp.Body.Close()
		var body struct{ Error string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if resp.StatusCode != http.StatusBadRequest || body.Error != "invalid_request" {
			t.Errorf("POST /token with two auth methods = %d %q, want 400 invalid_request", resp.StatusCode, body.Error)
		}
	})
}

func TestTokenEndpointRejects(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)

	t.Run("reused code revokes its access token", func(t *testing.T) {
		t.Parallel()
		l := r.authorize(t)
		tok, err := r.exchange(t, l)
		if err != nil {
			t.Fatalf("first Exchange = %v", err)
		}
		if _, err := r.exchange(t, l); oauthErrorCode(err) != "invalid_grant" {
			t.Errorf("second Exchange = %v, want invalid_grant", err)
		}
		if _, err := r.op.UserInfo(t.Context(), oauth2.StaticTokenSource(tok)); err == nil {
			t.Errorf("UserInfo with the replayed code's access token = nil error, want 401")
		}
	})

	tests := []struct {
		name      string
		authorize []oauth2.AuthCodeOption // replaces the PKCE challenge when non-nil
		exchange  func(l *login) []oauth2.AuthCodeOption
		cfg       func(c *oauth2.Config)
		want      string
	}{
		{name: "wrong PKCE verifier (O23)", exchange: func(l *login) []oauth2.AuthCodeOption {
			return []oauth2.AuthCodeOption{oauth2.VerifierOption(oauth2.GenerateVerifier())}
		}, want: "invalid_grant"},
		{name: "missing PKCE verifier", exchange: func(l *login) []oauth2.AuthCodeOption {
			l.pkce = ""
			return nil
		}, want: "invalid_grant"},
		{name: "verifier without challenge", authorize: []oauth2.AuthCodeOption{
			oauth2.SetAuthURLParam("code_challenge", ""), oauth2.SetAuthURLParam("code_challenge_method", ""),
		}, want: "invalid_grant"},
		{name: "wrong secret", cfg: func(c *oauth2.Config) { c.ClientSecret = "wrong" }, want: "invalid_client"},
		{name: "wrong redirect_uri", cfg: func(c *oauth2.Config) { c.RedirectURL = testRedirect + "/other" }, want: "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rr := *r
			l := rr.authorize(t, tt.authorize...)
			if tt.cfg != nil {
				tt.cfg(&rr.cfg)
			}
			var extra []oauth2.AuthCodeOption
			if tt.exchange != nil {
				extra = tt.exchange(&l)
			}
			if _, err := rr.exchange(t, l, extra...); oauthErrorCode(err) != tt.want {
				t.Errorf("Exchange = %v, want %s", err, tt.want)
			}
		})
	}

}

func TestExpiredCode(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Now()}
	opts := testOptions()
	opts.Now = clock.Now
	p := newTestProvider(t, opts)
	r := newRP(t, p, testClientID, testSecret)
	l := r.authorize(t)
	clock.Advance(devidp.CodeTTL + time.Second)
	if _, err := r.exchange(t, l); oauthErrorCode(err) != "invalid_grant" {
		t.Errorf("Exchange of an expired code = %v, want invalid_grant", err)
	}
}

// TestFlowKnobs covers the flow-level faults. Sequential: SetFlow is provider-wide.
func TestFlowKnobs(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	defer p.SetFlow(Flow{})

	p.SetFlow(Flow{State: "forged-state", Iss: "https://idp-b.example.com"})
	l := r.authorize(t)
	if got := l.callback.Get("state"); got != "forged-state" {
		t.Errorf("Flow.State: callback state = %q, want forged-state", got)
	}
	if got := l.callback.Get("iss"); got != "https://idp-b.example.com" {
		t.Errorf("Flow.Iss: callback iss = %q, want https://idp-b.example.com", got)
	}

	p.SetFlow(Flow{OmitState: true, OmitIss: true})
	l = r.authorize(t)
	if l.callback.Has("state") || l.callback.Has("iss") {
		t.Errorf("Flow.OmitState, OmitIss: callback = %v, want neither state nor iss", l.callback)
	}

	p.SetFlow(Flow{AuthorizeError: "server_error"})
	l = r.authorize(t)
	if got := l.callback.Get("error"); got != "server_error" || l.callback.Has("code") || l.callback.Get("state") != l.state {
		t.Errorf("Flow.AuthorizeError: callback = %v, want error=server_error, state, no code", l.callback)
	}

	p.SetFlow(Flow{TokenError: "temporarily_unavailable"})
	l = r.authorize(t)
	if _, err := r.exchange(t, l); oauthErrorCode(err) != "temporarily_unavailable" {
		t.Errorf("Flow.TokenError: Exchange = %v, want temporarily_unavailable", err)
	}
	p.SetFlow(Flow{OmitIDToken: true})
	tok, err := r.exchange(t, l) // the forced error did not consume the code
	if err != nil {
		t.Fatalf("Exchange after Flow.TokenError = %v", err)
	}
	if got := tok.Extra("id_token"); got != nil {
		t.Errorf("Flow.OmitIDToken: id_token = %v, want none", got)
	}

	p.SetFlow(Flow{UserinfoSub: "someone-else"})
	_, tok, raw := r.loginToken(t)
	idt, err := r.verifier.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	ui, err := r.op.UserInfo(t.Context(), oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("UserInfo = %v", err)
	}
	// O18: go-oidc does not compare the two; the RP must.
	if ui.Subject == idt.Subject {
		t.Errorf("Flow.UserinfoSub: userinfo sub = ID token sub = %q, want them to differ", ui.Subject)
	}

	p.SetFlow(Flow{DiscoveryIssuer: "https://evil.example.com"})
	_, err = oidc.NewProvider(t.Context(), p.Issuer())
	var mismatch *oidc.IssuerMismatchError
	if !errors.As(err, &mismatch) {
		t.Errorf("Flow.DiscoveryIssuer: oidc.NewProvider = %v, want IssuerMismatchError (O6)", err)
	}
}

// TestRotateKeys covers O14 and O15 as go-oidc's RemoteKeySet sees them, counting JWKS
// fetches instead of timing anything.
func TestRotateKeys(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	sign := func(f Forgery) string {
		c, err := p.ValidClaims("alice", "")
		if err != nil {
			t.Fatalf("ValidClaims = %v", err)
		}
		raw, err := p.SignIDToken(c, f)
		if err != nil {
			t.Fatalf("SignIDToken(%q) = %v", f, err)
		}
		return raw
	}
	verify := func(step, raw string, wantOK bool, wantFetches int) {
		t.Helper()
		_, err := r.verifier.Verify(t.Context(), raw)
		if (err == nil) != wantOK {
			t.Errorf("%s: Verify = %v, want success %v", step, err, wantOK)
		}
		if got := p.JWKSFetches(); got != wantFetches {
			t.Errorf("%s: JWKSFetches() = %d, want %d", step, got, wantFetches)
		}
	}
	old := sign(NoForgery)
	oldKids := p.KeyIDs()
	verify("first token", old, true, 1)
	verify("cached key", old, true, 1)
	// go-oidc has no cooldown: every unknown-kid token costs a fetch. auth must add one.
	verify("unknown kid 1", sign(ForgeryUnknownKid), false, 2)
	verify("unknown kid 2", sign(ForgeryUnknownKid), false, 3)

	if err := p.RotateKeys(); err != nil {
		t.Fatalf("RotateKeys() = %v", err)
	}
	for alg, kid := range p.KeyIDs() {
		if kid == oldKids[alg] {
			t.Errorf("RotateKeys kept kid %s for %s", kid, alg)
		}
	}
	verify("new key after rotation", sign(NoForgery), true, 4)
	verify("old key removed", old, false, 5)
}

func TestSignIDToken(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	c, err := p.ValidClaims("bob", "n-1")
	if err != nil {
		t.Fatalf("ValidClaims(bob) = %v", err)
	}
	c["x_custom"] = map[string]any{"deep": []any{1, "two", map[string]any{"three": true}}}
	raw, err := p.SignIDToken(c, NoForgery)
	if err != nil {
		t.Fatalf("SignIDToken = %v", err)
	}
	idt, err := r.verifier.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	var got struct {
		XCustom any `json:"x_custom"`
	}
	if err := idt.Claims(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"deep": []any{float64(1), "two", map[string]any{"three": true}}}
	if diff := cmp.Diff(want, got.XCustom); diff != "" {
		t.Errorf("x_custom (-want +got):\n%s", diff)
	}
	if idt.Subject != "bob" || idt.Nonce != "n-1" {
		t.Errorf("Verify() sub, nonce = %q, %q, want bob, n-1", idt.Subject, idt.Nonce)
	}

	if _, err := p.SignIDToken(map[string]any{"bad": make(chan int)}, NoForgery); err == nil {
		t.Errorf("SignIDToken(non-JSON claims) = nil error")
	}
	if _, err := p.SignIDToken(c, Forgery("bogus")); err == nil {
		t.Errorf("SignIDToken(unknown forgery) = nil error")
	}
	if _, err := p.SignIDToken(c, ForgeryMixUp); err == nil {
		t.Errorf("SignIDToken(ForgeryMixUp) without a peer = nil error")
	}
	if err := p.Forge(ForgeryForeignKey); err == nil {
		t.Errorf("Forge(ForgeryForeignKey) without a peer = nil error")
	}
	if _, err := p.ValidClaims("nobody", ""); err == nil {
		t.Errorf("ValidClaims(nobody) = nil error")
	}
}

// TestStart runs the provider on a real loopback listener, as the end-to-end suite does.
func TestStart(t *testing.T) {
	t.Parallel()
	p, err := Start(Options{ClientID: testClientID, ClientSecret: testSecret, Alg: "ES256"})
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if !strings.HasPrefix(p.Issuer(), "http://127.0.0.1:") {
		t.Errorf("Issuer() = %q, want http://127.0.0.1:port", p.Issuer())
	}
	if err := p.AddUser(User{Sub: "carol", Email: "carol@example.com"}); err != nil {
		t.Fatal(err)
	}
	r := newRP(t, p, testClientID, testSecret)
	_, _, raw := r.loginToken(t)
	if _, err := r.verifier.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify = %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if resp, err := http.Get(p.JWKSURL()); err == nil {
		resp.Body.Close()
		t.Errorf("GET after Close succeeded, want connection error")
	}
}

func TestStartAllInterfaces(t *testing.T) {
	t.Parallel()
	p, err := Start(Options{ClientID: testClientID, ClientSecret: testSecret, Addr: ":0"})
	if err != nil {
		t.Fatalf("Start(Addr :0) = %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if !strings.HasPrefix(p.Issuer(), "http://127.0.0.1:") {
		t.Errorf("Issuer() = %q, want http://127.0.0.1:port", p.Issuer())
	}
	if _, err := oidc.NewProvider(t.Context(), p.Issuer()); err != nil {
		t.Errorf("oidc.NewProvider(%q) = %v", p.Issuer(), err)
	}
}

func TestIssuerRequired(t *testing.T) {
	t.Parallel()
	p, err := New(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/jwks", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("GET /jwks before SetIssuer = %d, want 500", rec.Code)
	}
}

func TestOptionsAndUsers(t *testing.T) {
	t.Parallel()
	err := Options{Alg: "HS256", Issuer: "not a url", ClientAuthMethods: []string{"private_key_jwt"}}.Validate()
	for _, want := range []string{"client id", "client secret", "HS256", "issuer", "private_key_jwt"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	p, err := New(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddUser(User{Sub: "eve", Claims: map[string]any{"iss": "x"}}); err == nil {
		t.Errorf("AddUser with an iss claim = nil error, want refusal")
	}
	if err := p.AddUser(User{}); err == nil {
		t.Errorf("AddUser without sub = nil error")
	}
	if err := p.SetAlg("RS384"); err == nil {
		t.Errorf("SetAlg(RS384) = nil error: RS384 is forgery-only")
	}
	if err := p.SetAlg("PS512"); err != nil || p.Alg() != "PS512" {
		t.Errorf("SetAlg(PS512) = %v, Alg() = %s", err, p.Alg())
	}
}
