package oidctest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// issued is what the relying party received for one forged login.
type issued struct {
	login  login
	tok    *oauth2.Token
	raw    string
	header map[string]any
	claims map[string]any // nil when the payload is not a JSON object
	body   []byte
	idt    *oidc.IDToken // set when go-oidc accepted the token
}

// TestForgeries issues every forgery through the real flow (Forge, then /token) and checks
// two things: the token is bad in exactly the named way, and go-oidc's verifier, configured
// as docs/design.md §8 prescribes, rejects it, or, for the checks go-oidc leaves to the relying
// party (docs/design.md §8.1), accepts it, which this test documents as work auth must do.
//
// Subtests are sequential because Forge is provider-wide state consumed by the next /token.
func TestForgeries(t *testing.T) {
	t.Parallel()
	a := newTestProvider(t, testOptions())
	b := newTestProvider(t, Options{ClientID: "b-client", ClientSecret: "b-secret"})
	a.SetMixUpPeer(b)
	ra := newRP(t, a, testClientID, testSecret)
	// An explicit style: auto-detection would retry a refused response with the same code.
	ra.cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	rb := newRP(t, b, "b-client", "b-secret")
	now := time.Now()

	claim := func(t *testing.T, got issued, name string, want any) {
		t.Helper()
		if v, ok := got.claims[name]; !ok || v != want {
			t.Errorf("claim %s = %#v (present %v), want %#v", name, v, ok, want)
		}
	}
	absent := func(t *testing.T, got issued, name string) {
		t.Helper()
		if v, ok := got.claims[name]; ok {
			t.Errorf("claim %s = %#v, want absent", name, v)
		}
	}
	headerIs := func(t *testing.T, got issued, name string, want any) {
		t.Helper()
		if got.header[name] != want {
			t.Errorf("header %s = %#v, want %#v", name, got.header[name], want)
		}
	}
	attackerSigned := func(t *testing.T, got issued) {
		t.Helper()
		for _, kid := range a.KeyIDs() {
			if got.header["kid"] == kid {
				return // same-kid forgery: the kid is genuine, the key is not
			}
		}
		if kid, _ := got.header["kid"].(string); kid != "" && !strings.HasPrefix(kid, "attacker-") && !strings.HasPrefix(kid, "unknown-") {
			t.Errorf("header kid = %q, want an attacker or unknown kid", kid)
		}
	}

	tests := []struct {
		f Forgery
		// exchangeFails: golang.org/x/oauth2 refuses the token response itself, with wantErr.
		exchangeFails bool
		// goOIDCAccepts: go-oidc's Verify accepts the token; defect then documents what the
		// relying party must check itself. Otherwise Verify must fail with wantErr in its message.
		goOIDCAccepts bool
		wantErr       string
		defect        func(t *testing.T, got issued)
	}{
		{f: ForgeryAlgNone, wantErr: "unexpected signature algorithm", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "alg", "none")
			if !strings.HasSuffix(got.raw, ".") {
				t.Errorf("alg none token %q does not end with an empty signature", got.raw)
			}
		}},
		{f: ForgeryHS256ClientSecret, wantErr: "unexpected signature algorithm", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "alg", "HS256")
			want, err := compactJWS(got.header, got.body, "HS256", []byte(testSecret))
			if err != nil || want != got.raw {
				t.Errorf("token is not a valid HS256 MAC keyed with the client secret (err %v)", err)
			}
		}},
		{f: ForgeryHS256PublicKey, wantErr: "unexpected signature algorithm", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "alg", "HS256")
			headerIs(t, got, "kid", a.KeyIDs()["RS256"])
			pemKey, err := publicKeyPEM(a.signState().keys["RS256"])
			if err != nil {
				t.Fatal(err)
			}
			if want, err := compactJWS(got.header, got.body, "HS256", pemKey); err != nil || want != got.raw {
				t.Errorf("token is not an HS256 MAC keyed with the RS256 public key PEM (err %v)", err)
			}
		}},
		{f: ForgeryBadSignature, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "kid", a.KeyIDs()["RS256"])
			claim(t, got, "sub", "alice")
		}},
		{f: ForgeryTamperedPayload, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			claim(t, got, "sub", "attacker")
		}},
		{f: ForgeryUnknownKeySameKid, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "kid", a.KeyIDs()["RS256"])
		}},
		{f: ForgeryAlgRS384, wantErr: "unexpected signature algorithm", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "alg", "RS384")
			// The control: a verifier that allows RS384 accepts it, so the alg is the only defect.
			permissive := ra.op.Verifier(&oidc.Config{ClientID: testClientID, SupportedSigningAlgs: []string{"RS384"}})
			if _, err := permissive.Verify(t.Context(), got.raw); err != nil {
				t.Errorf("RS384-allowing Verify = %v, want success", err)
			}
		}},
		{f: ForgeryAlgPS256, wantErr: "unexpected signature algorithm", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "alg", "PS256")
			permissive := ra.op.Verifier(&oidc.Config{ClientID: testClientID, SupportedSigningAlgs: []string{"PS256"}})
			if _, err := permissive.Verify(t.Context(), got.raw); err != nil {
				t.Errorf("PS256-allowing Verify = %v, want success", err)
			}
		}},
		{f: ForgeryWrongIssuer, wantErr: "issued by a different provider", defect: func(t *testing.T, got issued) {
			claim(t, got, "iss", "https://evil.example.com")
		}},
		{f: ForgeryIssuerTrailingSlash, wantErr: "issued by a different provider", defect: func(t *testing.T, got issued) {
			claim(t, got, "iss", a.Issuer()+"/")
		}},
		{f: ForgeryWrongAudience, wantErr: "expected audience", defect: func(t *testing.T, got issued) {
			claim(t, got, "aud", "another-client")
		}},
		{f: ForgeryAudienceMissing, wantErr: "expected audience", defect: func(t *testing.T, got issued) {
			absent(t, got, "aud")
		}},
		{f: ForgeryMultiAudienceNoAZP, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must reject: several audiences and no azp.
			if diff := slices.Compare(got.idt.Audience, []string{testClientID, "another-client"}); diff != 0 {
				t.Errorf("aud = %v, want [%s another-client]", got.idt.Audience, testClientID)
			}
			absent(t, got, "azp")
		}},
		{f: ForgeryMultiAudienceWrongAZP, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must reject: azp is not the client.
			if len(got.idt.Audience) != 2 {
				t.Errorf("aud = %v, want two audiences", got.idt.Audience)
			}
			claim(t, got, "azp", "another-client")
		}},
		{f: ForgeryWrongAZP, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must reject: azp present and not the client.
			claim(t, got, "aud", testClientID)
			claim(t, got, "azp", "another-client")
		}},
		{f: ForgerySubMissing, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must reject an empty subject (go-oidc #495).
			absent(t, got, "sub")
			if got.idt.Subject != "" {
				t.Errorf("Subject = %q, want empty", got.idt.Subject)
			}
		}},
		{f: ForgerySubEmpty, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			claim(t, got, "sub", "")
		}},
		{f: ForgerySubNull, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			claim(t, got, "sub", nil)
			if got.idt.Subject != "" {
				t.Errorf("Subject = %q, want empty", got.idt.Subject)
			}
		}},
		{f: ForgerySubTooLong, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			if n := len(got.idt.Subject); n != 256 {
				t.Errorf("len(Subject) = %d, want 256 (> 255)", n)
			}
		}},
		{f: ForgeryIATMissing, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must require iat.
			absent(t, got, "iat")
		}},
		{f: ForgeryIATFuture, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must reject iat > now + 60 s.
			if iat := claimInt(t, got.claims, "iat"); iat <= now.Add(time.Minute).Unix() {
				t.Errorf("iat = %d, want beyond now+60s = %d", iat, now.Add(time.Minute).Unix())
			}
		}},
		{f: ForgeryIATTooOld, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must reject iat < now − 10 min on a fresh token.
			if iat := claimInt(t, got.claims, "iat"); iat >= now.Add(-10*time.Minute).Unix() {
				t.Errorf("iat = %d, want before now−10min", iat)
			}
		}},
		{f: ForgeryExpired, wantErr: "token is expired", defect: func(t *testing.T, got issued) {
			if exp := claimInt(t, got.claims, "exp"); exp >= now.Add(-time.Minute).Unix() {
				t.Errorf("exp = %d, want more than 60 s ago", exp)
			}
		}},
		{f: ForgeryExpiredWithinLeeway, wantErr: "token is expired", defect: func(t *testing.T, got issued) {
			// go-oidc has no exp leeway; with a 60 s leeway the RP must accept it.
			leeway := ra.op.Verifier(&oidc.Config{
				ClientID: testClientID, SupportedSigningAlgs: SupportedAlgs(),
				Now: func() time.Time { return time.Now().Add(-time.Minute) },
			})
			if _, err := leeway.Verify(t.Context(), got.raw); err != nil {
				t.Errorf("Verify with 60 s leeway = %v, want success", err)
			}
		}},
		{f: ForgeryNBFFuture, wantErr: "before the nbf", defect: func(t *testing.T, got issued) {
			if nbf := claimInt(t, got.claims, "nbf"); nbf <= now.Add(5*time.Minute).Unix() {
				t.Errorf("nbf = %d, want beyond go-oidc's 5 min leeway", nbf)
			}
		}},
		{f: ForgeryNonceWrong, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must compare with the transaction's nonce.
			if got.idt.Nonce == "" || got.idt.Nonce == got.login.nonce {
				t.Errorf("nonce = %q, want non-empty and not %q", got.idt.Nonce, got.login.nonce)
			}
		}},
		{f: ForgeryNonceMissing, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			absent(t, got, "nonce")
		}},
		{f: ForgeryNoKid, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// O13 with several JWKS keys: go-oidc tries them all and accepts.
			if kid, ok := got.header["kid"]; ok {
				t.Errorf("header kid = %v, want absent", kid)
			}
		}},
		{f: ForgeryUnknownKid, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			if kid, _ := got.header["kid"].(string); !strings.HasPrefix(kid, "unknown-") {
				t.Errorf("kid = %q, want an unknown kid", kid)
			}
		}},
		{f: ForgeryEmbeddedJWK, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			jwk, _ := got.header["jwk"].(map[string]any)
			if kid, _ := jwk["kid"].(string); !strings.HasPrefix(kid, "attacker-") {
				t.Errorf("header jwk = %v, want the attacker's key", jwk)
			}
		}},
		{f: ForgeryJKU, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "jku", a.Issuer()+"/attacker/jwks")
			attackerSigned(t, got)
		}},
		{f: ForgeryX5U, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "x5u", a.Issuer()+"/attacker/x5u/RS256")
		}},
		{f: ForgeryX5C, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			if x5c, _ := got.header["x5c"].([]any); len(x5c) != 1 {
				t.Errorf("header x5c = %v, want one certificate", got.header["x5c"])
			}
		}},
		{f: ForgeryForeignKey, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			headerIs(t, got, "kid", b.KeyIDs()[b.Alg()])
			claim(t, got, "iss", a.Issuer())
		}},
		{f: ForgeryPeerIssuer, wantErr: "issued by a different provider", defect: func(t *testing.T, got issued) {
			claim(t, got, "iss", b.Issuer())
			headerIs(t, got, "kid", a.KeyIDs()["RS256"])
		}},
		{f: ForgeryMixUp, wantErr: "failed to verify signature", defect: func(t *testing.T, got issued) {
			// The control: it is a genuine token of IdP B.
			if _, err := rb.verifier.Verify(t.Context(), got.raw); err != nil {
				t.Errorf("B's Verify = %v, want success", err)
			}
		}},
		{f: ForgeryBadAtHash, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			// RP must call VerifyAccessToken when it uses the access token.
			if err := got.idt.VerifyAccessToken(got.tok.AccessToken); err == nil {
				t.Errorf("VerifyAccessToken = nil, want an at_hash mismatch")
			}
		}},
		// golang.org/x/oauth2 reads at most 1 MiB of a token response, so the truncated JSON
		// fails the exchange; TestForgeryOversizedToken covers the token itself.
		{f: ForgeryOversized, exchangeFails: true, wantErr: "cannot parse json"},
		{f: ForgeryManyDots, wantErr: "malformed jwt", defect: func(t *testing.T, got issued) {
			if n := strings.Count(got.raw, "."); n < 100000 {
				t.Errorf("token has %d dots, want ≥ 100000", n)
			}
		}},
		{f: ForgeryDeepNesting, wantErr: "exceeded max depth", defect: func(t *testing.T, got issued) {
			if got.claims != nil || strings.Count(string(got.body), "[") < 20000 {
				t.Errorf("payload is not 20,000 arrays deep")
			}
		}},
		{f: ForgeryEmailUnverified, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			claim(t, got, "email_verified", false)
		}},
		{f: ForgeryEmailVerifiedString, goOIDCAccepts: true, defect: func(t *testing.T, got issued) {
			claim(t, got, "email_verified", "false")
		}},
	}

	// Every exported forgery is in this table.
	var covered []Forgery
	for _, tt := range tests {
		covered = append(covered, tt.f)
	}
	for _, f := range append(Forgeries(), ForgeryNoKid, ForgeryExpiredWithinLeeway) {
		if !slices.Contains(covered, f) {
			t.Errorf("forgery %s (%s) has no test case", f, f.Case())
		}
	}

	for _, tt := range tests {
		t.Run(tt.f.Case()+"/"+string(tt.f), func(t *testing.T) {
			if err := a.Forge(tt.f); err != nil {
				t.Fatalf("Forge(%s) = %v", tt.f, err)
			}
			got := issued{login: ra.authorize(t)}
			var err error
			got.tok, err = ra.exchange(t, got.login)
			if tt.exchangeFails {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Exchange = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange = %v", err)
			}
			got.raw, _ = got.tok.Extra("id_token").(string)
			got.header, got.claims, got.body = jwtParts(t, got.raw)
			got.idt, err = ra.verifier.Verify(t.Context(), got.raw)
			switch {
			case tt.goOIDCAccepts && err != nil:
				t.Fatalf("Verify = %v, want go-oidc to accept (the RP must check this itself)", err)
			case !tt.goOIDCAccepts && err == nil:
				t.Fatalf("Verify = nil error, want rejection")
			case !tt.goOIDCAccepts && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Verify = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.defect != nil {
				tt.defect(t, got)
			}
		})
	}

	t.Run("next token is genuine", func(t *testing.T) {
		_, _, raw := ra.loginToken(t)
		if _, err := ra.verifier.Verify(t.Context(), raw); err != nil {
			t.Errorf("Verify after the forged tokens = %v, want success", err)
		}
	})
	t.Run("no attacker key URL was fetched", func(t *testing.T) {
		if n := a.AttackerFetches(); n != 0 {
			t.Errorf("AttackerFetches() = %d, want 0: go-oidc takes keys only from jwks_uri", n)
		}
	})
}

// TestForgeryOversizedToken checks ForgeryOversized outside the token endpoint: go-oidc
// verifies a 1 MiB token, so the relying party must bound token size itself (O20).
func TestForgeryOversizedToken(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	c, err := p.ValidClaims("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.SignIDToken(c, ForgeryOversized)
	if err != nil {
		t.Fatalf("SignIDToken(ForgeryOversized) = %v", err)
	}
	if len(raw) <= 1<<20 {
		t.Errorf("len(token) = %d, want > 1 MiB", len(raw))
	}
	if _, err := r.verifier.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify(1 MiB token) = %v; go-oidc is expected to accept it, leaving the size bound to the RP", err)
	}
}

// TestForgeOnce checks that a forgery applies to exactly one token, for every algorithm's
// signature-level forgeries too.
func TestForgeOnce(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, testOptions())
	r := newRP(t, p, testClientID, testSecret)
	// Sequential: SetAlg and Forge are provider-wide.
	for _, alg := range SupportedAlgs() {
		if err := p.SetAlg(alg); err != nil {
			t.Fatal(err)
		}
		for _, f := range []Forgery{ForgeryBadSignature, ForgeryUnknownKeySameKid} {
			if err := p.Forge(f); err != nil {
				t.Fatal(err)
			}
			_, _, forged := r.loginToken(t)
			if _, err := r.verifier.Verify(t.Context(), forged); err == nil {
				t.Errorf("%s %s: Verify = nil error, want rejection", alg, f)
			}
			_, _, genuine := r.loginToken(t)
			if _, err := r.verifier.Verify(t.Context(), genuine); err != nil {
				t.Errorf("%s after %s: Verify = %v, want success", alg, f, err)
			}
		}
	}
}
