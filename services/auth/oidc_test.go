package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// mixUpHarness has two IdPs, A (idp-a) and B (idp-b), both registered with auth; each OP knows the
// other as its mix-up peer.
func mixUpHarness(t *testing.T) (*harness, *op) {
	h := newHarness(t, harnessOpts{})
	opB := newOP(t, h.clock, "idp-b", nil)
	h.n.putIdP(t, opB.idp)
	h.op.SetMixUpPeer(opB.Provider)
	opB.SetMixUpPeer(h.op.Provider)
	waitFor(t, "idp-b registered", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-b"); !ok {
			return errNotYet
		}
		return nil
	})
	return h, opB
}

// assertRefused checks a callback response refused the login and set no session.
func assertRefused(t *testing.T, h *harness, b *browser, resp *http.Response, body, what string) {
	t.Helper()
	if resp.StatusCode < 400 {
		t.Errorf("%s: callback = %d %s, want a refusal", what, resp.StatusCode, body)
	}
	if c := b.cookie(h.r.url, h.r.srv.sessionName); c != "" {
		t.Errorf("%s: a session cookie was set", what)
	}
}

// TestForgedIDTokensRejected covers O1–O12, O16, O17, O19–O21 and O24's forged token: every
// forgery oidctest knows is refused at the callback, and a genuine login still works after each.
func TestForgedIDTokensRejected(t *testing.T) {
	t.Parallel()
	h, _ := mixUpHarness(t)
	h.mustLogin(newBrowser(), h.r, "idp-a")
	// Subtests run one after another: Forge applies to the shared provider's next token.
	for _, f := range oidctest.Forgeries() {
		t.Run(f.Case()+"/"+string(f), func(t *testing.T) {
			if err := h.op.Forge(f); err != nil {
				t.Fatal(err)
			}
			b := newBrowser()
			resp, body := h.login(b, h.r, "idp-a", "")
			assertRefused(t, h, b, resp, body, string(f))
			t.Logf("%s: %d %s", f, resp.StatusCode, strings.TrimSpace(body))
		})
	}
	if got := h.op.AttackerFetches(); got != 0 {
		t.Errorf("O16: attacker key URLs fetched %d times, want 0", got)
	}
	h.mustLogin(newBrowser(), h.r, "idp-a")
	if got := metricValue(t, h.r.reg, "scimflow_auth_logins_total", map[string]string{"idp": "idp-a", "result": "denied"}); got < float64(len(oidctest.Forgeries())) {
		t.Errorf("denied logins = %v, want ≥ %d", got, len(oidctest.Forgeries()))
	}
}

// TestBoundaryTokensAccepted: O13 (no kid; auth tries every key of the header's alg) and O10's
// within-leeway boundary (expired 30 s ago, leeway 60 s) are accepted.
func TestBoundaryTokensAccepted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for _, f := range []oidctest.Forgery{oidctest.ForgeryNoKid, oidctest.ForgeryExpiredWithinLeeway} {
		if err := h.op.Forge(f); err != nil {
			t.Fatal(err)
		}
		b := newBrowser()
		if resp, body := h.login(b, h.r, "idp-a", ""); resp.StatusCode != http.StatusFound {
			t.Errorf("%s %s: callback = %d %s, want 302", f.Case(), f, resp.StatusCode, body)
		}
	}
}

// TestExpiryLeewayBoundary (O10, O9) drives the RP's checks with an injected clock: exp 59 s ago
// passes, 61 s ago fails; iat 59 s ahead passes, 61 s ahead fails.
func TestExpiryLeewayBoundary(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	rp := relyingPartyOf(t, h.r, "idp-a")
	now := h.clock.Now()
	for _, tc := range []struct {
		name     string
		exp, iat time.Duration
		ok       bool
	}{
		// go-oidc checks exp against the process clock, not now: ten seconds either side of the
		// 60 s leeway keep the boundary meaningful when -race on a loaded machine is slow.
		{"exp-50s-ago", -50 * time.Second, -5 * time.Minute, true},
		{"exp-70s-ago", -70 * time.Second, -5 * time.Minute, false},
		{"iat-59s-ahead", time.Hour, 59 * time.Second, true},
		{"iat-61s-ahead", time.Hour, 61 * time.Second, false},
		{"iat-9m-ago", time.Hour, -9 * time.Minute, true},
		{"iat-12m-ago", time.Hour, -12 * time.Minute, false},
	} {
		c, err := h.op.ValidClaims(alice, "n1")
		if err != nil {
			t.Fatal(err)
		}
		c["exp"], c["iat"] = now.Add(tc.exp).Unix(), now.Add(tc.iat).Unix()
		raw, err := h.op.SignIDToken(c, oidctest.NoForgery)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rp.verifyIDToken(context.Background(), raw, "n1", "", now, MaxClockSkew)
		if (err == nil) != tc.ok {
			t.Errorf("%s: verifyIDToken err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func relyingPartyOf(t *testing.T, r *replica, idp string) *relyingParty {
	t.Helper()
	e, ok := r.srv.idps.get(idp)
	if !ok {
		t.Fatalf("idp %s unknown", idp)
	}
	rp, err := e.relyingParty(context.Background(), r.srv)
	if err != nil {
		t.Fatalf("relying party %s: %v", idp, err)
	}
	return rp
}

// signUnknownKid signs claims with a key the OP never published, under kid.
func signUnknownKid(t *testing.T, claims map[string]any, kid string) string {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestUnknownKidFetchCooldown (O14): 1000 tokens naming the same unknown kid cause at most one JWKS
// fetch per cooldown window, and moving the clock past the cooldown allows exactly one more; a kid
// not missed before fetches at once (one fetch per new kid, a floor of one a
// second per IdP), and a kid the JWKS holds but whose signature fails fetches nothing.
func TestUnknownKidFetchCooldown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if err := h.op.SetAlg("ES256"); err != nil {
		t.Fatal(err)
	}
	rp := relyingPartyOf(t, h.r, "idp-a")
	now := h.clock.Now()
	c, _ := h.op.ValidClaims(alice, "n")
	genuine, _ := h.op.SignIDToken(c, oidctest.NoForgery)
	if _, err := rp.verifyIDToken(context.Background(), genuine, "n", "", now, MaxClockSkew); err != nil {
		t.Fatalf("genuine token: %v", err)
	}
	before := h.op.JWKSFetches()
	for i := range 1000 {
		raw := signUnknownKid(t, c, "never-published")
		if _, err := rp.verifyIDToken(context.Background(), raw, "n", "", now, MaxClockSkew); err == nil {
			t.Fatalf("token %d with an unknown kid accepted", i)
		}
	}
	if got := h.op.JWKSFetches() - before; got > 1 {
		t.Errorf("JWKS fetches for 1000 tokens with the same unknown kid = %d, want ≤ 1 per cooldown", got)
	}
	h.clock.Advance(h.r.srv.cfg.JWKSRefreshCooldown.D() + time.Second)
	before = h.op.JWKSFetches()
	for range 100 {
		raw := signUnknownKid(t, c, "never-published")
		rp.verifyIDToken(context.Background(), raw, "n", "", h.clock.Now(), MaxClockSkew)
	}
	if got := h.op.JWKSFetches() - before; got != 1 {
		t.Errorf("JWKS fetches in the next window = %d, want 1", got)
	}
	// Three kids never seen before: each fetches (the floor spaces them a second apart).
	before = h.op.JWKSFetches()
	for i := range 3 {
		raw := signUnknownKid(t, c, fmt.Sprintf("new-kid-%d", i))
		rp.verifyIDToken(context.Background(), raw, "n", "", h.clock.Now(), MaxClockSkew)
	}
	if got := h.op.JWKSFetches() - before; got != 3 {
		t.Errorf("JWKS fetches for 3 new kids = %d, want 3", got)
	}
	// The genuine kid with a signature that does not verify: a forgery, no fetch.
	before = h.op.JWKSFetches()
	for range 10 {
		raw, _ := h.op.SignIDToken(c, oidctest.ForgeryUnknownKeySameKid)
		if _, err := rp.verifyIDToken(context.Background(), raw, "n", "", h.clock.Now(), MaxClockSkew); err == nil {
			t.Fatal("token with the genuine kid and another key accepted")
		}
	}
	if got := h.op.JWKSFetches() - before; got != 0 {
		t.Errorf("JWKS fetches for a known kid with a bad signature = %d, want 0", got)
	}
}

// TestKeyRotationRightAfterUnrelatedRefetch: a token with an unknown kid has just
// made auth refetch the JWKS; the OP then rotates its keys. The next genuine login must succeed
// without waiting out the cooldown (it failed for up to 30 s before).
func TestKeyRotationRightAfterUnrelatedRefetch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.mustLogin(newBrowser(), h.r, "idp-a") // JWKS cached
	rp := relyingPartyOf(t, h.r, "idp-a")
	c, _ := h.op.ValidClaims(alice, "n")
	before := h.op.JWKSFetches()
	if _, err := rp.verifyIDToken(context.Background(), signUnknownKid(t, c, "stray"), "n", "", h.clock.Now(), MaxClockSkew); err == nil {
		t.Fatal("stray kid accepted")
	}
	if got := h.op.JWKSFetches() - before; got != 1 {
		t.Fatalf("JWKS fetches for the stray kid = %d, want 1", got)
	}
	if err := h.op.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	// No clock advance: the login comes within the cooldown of the stray refetch.
	h.mustLogin(newBrowser(), h.r, "idp-a")
	if got := h.op.JWKSFetches() - before; got != 2 {
		t.Errorf("JWKS fetches = %d, want 2 (the stray kid, then the rotated key)", got)
	}
}

// TestSigningAlgorithmSwitch: an OP whose discovery advertises only RS256 switches
// to ES256 (as Hydra does). The next login re-reads discovery and succeeds; an algorithm discovery
// still does not advertise is refused, re-reading discovery at most once per cooldown for it; an
// algorithm outside the six supported is refused even when advertised.
func TestSigningAlgorithmSwitch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.op.SetFlow(oidctest.Flow{DiscoveryAlgs: []string{"RS256"}})
	if err := h.op.SetAlg("RS256"); err != nil {
		t.Fatal(err)
	}
	h.mustLogin(newBrowser(), h.r, "idp-a")

	h.op.SetFlow(oidctest.Flow{DiscoveryAlgs: []string{"ES256"}})
	if err := h.op.SetAlg("ES256"); err != nil {
		t.Fatal(err)
	}
	before := h.op.DiscoveryFetches()
	h.mustLogin(newBrowser(), h.r, "idp-a")
	if got := h.op.DiscoveryFetches() - before; got != 1 {
		t.Errorf("discovery fetches for the switch = %d, want 1", got)
	}

	// ES384 is supported by auth but not advertised: refused, one discovery re-read per cooldown.
	if err := h.op.SetAlg("ES384"); err != nil {
		t.Fatal(err)
	}
	rp := relyingPartyOf(t, h.r, "idp-a")
	before = h.op.DiscoveryFetches()
	for range 20 {
		c, _ := h.op.ValidClaims(alice, "n")
		raw, _ := h.op.SignIDToken(c, oidctest.NoForgery)
		if _, err := rp.verifyIDToken(context.Background(), raw, "n", "", h.clock.Now(), MaxClockSkew); err == nil {
			t.Fatal("ES384 token accepted although discovery advertises only ES256")
		}
	}
	if got := h.op.DiscoveryFetches() - before; got != 1 {
		t.Errorf("discovery fetches for 20 unadvertised ES384 tokens = %d, want 1", got)
	}

	// RS384 is never accepted, whatever discovery says.
	h.op.SetFlow(oidctest.Flow{DiscoveryAlgs: []string{"ES256", "RS384"}})
	if err := h.op.Forge(oidctest.ForgeryAlgRS384); err != nil {
		t.Fatal(err)
	}
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-a", "")
	assertRefused(t, h, b, resp, body, "RS384 advertised")
}

// TestOPKeyRotation (O15): after the OP rotates its keys, a token with the new key is accepted after
// one refetch, and a token signed with the removed key is rejected.
func TestOPKeyRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.mustLogin(newBrowser(), h.r, "idp-a") // JWKS cached
	c, _ := h.op.ValidClaims(alice, "n")
	old, _ := h.op.SignIDToken(c, oidctest.NoForgery)
	if err := h.op.RotateKeys(); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(h.r.srv.cfg.JWKSRefreshCooldown.D() + time.Second)
	before := h.op.JWKSFetches()
	h.mustLogin(newBrowser(), h.r, "idp-a")
	if got := h.op.JWKSFetches() - before; got != 1 {
		t.Errorf("JWKS fetches to accept the rotated key = %d, want 1", got)
	}
	rp := relyingPartyOf(t, h.r, "idp-a")
	if _, err := rp.verifyIDToken(context.Background(), old, "n", "", h.clock.Now(), MaxClockSkew); err == nil {
		t.Errorf("token signed with the removed key accepted")
	}
}

// TestDiscoveryIssuerMismatch (O6): discovery reporting another issuer fails the provider set-up.
func TestDiscoveryIssuerMismatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opC := newOP(t, h.clock, "idp-c", nil)
	opC.SetFlow(oidctest.Flow{DiscoveryIssuer: "https://evil.example.com"})
	h.n.putIdP(t, opC.idp)
	waitFor(t, "idp-c registered", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-c"); !ok {
			return errNotYet
		}
		return nil
	})
	resp, body := newBrowser().get(t, h.r.url+"/login?idp_id=idp-c")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("login with mismatching discovery = %d %s, want 502", resp.StatusCode, body)
	}
}

// TestIdPProblemShown: an IdP whose discovery advertises only EdDSA cannot work;
// the login error page and /test say why instead of only logging it.
func TestIdPProblemShown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opE := newOP(t, h.clock, "idp-e", nil)
	opE.SetFlow(oidctest.Flow{DiscoveryAlgs: []string{"EdDSA"}})
	h.n.putIdP(t, opE.idp)
	waitFor(t, "idp-e registered", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-e"); !ok {
			return errNotYet
		}
		return nil
	})
	resp, body := newBrowser().do(t, http.MethodGet, h.r.url+"/login?idp_id=idp-e", http.Header{"Accept": {"text/html"}})
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "EdDSA") || !strings.Contains(body, "idp_unavailable") {
		t.Errorf("browser /login = %d %q, want 502 HTML naming idp_unavailable and EdDSA", resp.StatusCode, body)
	}
	resp, body = newBrowser().get(t, h.r.url+"/test?idp_id=idp-e")
	var problem map[string]string
	json.Unmarshal([]byte(body), &problem)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(problem["error_detail"], "EdDSA") {
		t.Errorf("/test = %d %s, want 502 with error_detail naming EdDSA", resp.StatusCode, body)
	}
}

// TestManualEndpoints: the seed's three-URL form (auth_url, token_url, certs_url, plus issuer) works
// without discovery, and still refuses a non-allow-listed alg (O5 on the manual path).
func TestManualEndpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opM := newOP(t, h.clock, "idp-m", nil)
	opM.idp.Config.AuthURL, opM.idp.Config.TokenURL, opM.idp.Config.CertsURL = opM.AuthURL(), opM.TokenURL(), opM.JWKSURL()
	opM.idp.Config.PKCEEnabled = false
	h.n.putIdP(t, opM.idp)
	waitFor(t, "idp-m registered", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-m"); !ok {
			return errNotYet
		}
		return nil
	})
	if err := opM.SetAlg("PS512"); err != nil {
		t.Fatal(err)
	}
	h.mustLogin(newBrowser(), h.r, "idp-m")
	if ar := opM.LastAuthorizeRequest(); ar.Has("code_challenge") || ar.Has("code_challenge_method") {
		t.Errorf("pkce_enabled=false but the authorise request has a code challenge: %v", ar)
	}
	opM.Forge(oidctest.ForgeryAlgPS256)
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-m", "")
	assertRefused(t, h, b, resp, body, "PS256 on manual endpoints")
}

// TestUserinfoSubMismatch (O18).
func TestUserinfoSubMismatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.op.SetFlow(oidctest.Flow{UserinfoSub: "someone-else"})
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-a", "")
	assertRefused(t, h, b, resp, body, "O18")
	if !strings.Contains(body, "userinfo_sub_mismatch") {
		t.Errorf("O18 body = %s, want userinfo_sub_mismatch", body)
	}
}

// TestCallbackTransactionChecks (O22): no login-transaction cookie, state mismatch, replayed
// code+state (cookie copied back), expired transaction.
func TestCallbackTransactionChecks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})

	t.Run("no-cookie", func(t *testing.T) {
		cb := h.authorize(newBrowser(), h.r, "idp-a", "")
		b := newBrowser() // another browser: no transaction cookie
		resp, body := b.get(t, cb)
		assertRefused(t, h, b, resp, body, "callback without cookie")
	})
	t.Run("state-mismatch", func(t *testing.T) {
		h.op.SetFlow(oidctest.Flow{State: "attacker-state"})
		defer h.op.SetFlow(oidctest.Flow{})
		b := newBrowser()
		resp, body := h.login(b, h.r, "idp-a", "")
		assertRefused(t, h, b, resp, body, "state mismatch")
	})
	t.Run("replay", func(t *testing.T) {
		b := newBrowser()
		cb := h.authorize(b, h.r, "idp-a", "")
		u, _ := url.Parse(cb)
		name := h.r.srv.txnCookieName(u.Query().Get("state"))
		txnCookie := b.cookie(h.r.url, name)
		if resp, body := b.get(t, cb); resp.StatusCode != http.StatusFound {
			t.Fatalf("first callback = %d %s", resp.StatusCode, body)
		}
		if b.cookie(h.r.url, name) != "" {
			t.Errorf("login-transaction cookie not deleted after use")
		}
		b2 := newBrowser()
		ru, _ := url.Parse(h.r.url)
		b2.jar.SetCookies(ru, []*http.Cookie{{Name: name, Value: txnCookie, Path: "/"}})
		resp, body := b2.get(t, cb)
		assertRefused(t, h, b2, resp, body, "replayed code+state")
		if !strings.Contains(body, "login_replayed") {
			t.Errorf("replay body = %s, want login_replayed", body)
		}
	})
	t.Run("expired", func(t *testing.T) {
		b := newBrowser()
		cb := h.authorize(b, h.r, "idp-a", "")
		h.clock.Advance(h.r.srv.cfg.LoginTimeout.D() + time.Minute)
		resp, body := b.get(t, cb)
		assertRefused(t, h, b, resp, body, "expired transaction")
	})
}

// TestPKCEWrongVerifier (O23): a code is exchanged with another transaction's verifier (a code
// injected into a different login) and the exchange fails.
func TestPKCEWrongVerifier(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	b := newBrowser()
	cb1 := h.authorize(b, h.r, "idp-a", "")
	cb2 := h.authorize(b, h.r, "idp-a", "")
	u1, _ := url.Parse(cb1)
	u2, _ := url.Parse(cb2)
	q := u2.Query()
	q.Set("code", u1.Query().Get("code")) // login 1's code with login 2's state and verifier
	u2.RawQuery = q.Encode()
	resp, body := b.get(t, u2.String())
	assertRefused(t, h, b, resp, body, "code with another transaction's PKCE verifier")
	if !strings.Contains(body, "token_exchange_failed") {
		t.Errorf("body = %s, want token_exchange_failed", body)
	}
	if ar := h.op.LastAuthorizeRequest(); ar.Get("code_challenge_method") != "S256" {
		t.Errorf("code_challenge_method = %q, want S256", ar.Get("code_challenge_method"))
	}
}

// TestMixUp (O24, O17): the RFC 9207 iss of another IdP is refused; a code and iss from B's flow
// delivered with A's transaction are refused; a token from B in A's flow is refused.
func TestMixUp(t *testing.T) {
	t.Parallel()
	h, opB := mixUpHarness(t)
	t.Run("iss-param-of-other-idp", func(t *testing.T) {
		h.op.SetFlow(oidctest.Flow{Iss: opB.Issuer()})
		defer h.op.SetFlow(oidctest.Flow{})
		b := newBrowser()
		resp, body := h.login(b, h.r, "idp-a", "")
		assertRefused(t, h, b, resp, body, "iss of B in A's flow")
		if !strings.Contains(body, "issuer_mismatch") {
			t.Errorf("body = %s, want issuer_mismatch", body)
		}
	})
	t.Run("iss-param-missing", func(t *testing.T) {
		h.op.SetFlow(oidctest.Flow{OmitIss: true})
		defer h.op.SetFlow(oidctest.Flow{})
		b := newBrowser()
		resp, body := h.login(b, h.r, "idp-a", "")
		assertRefused(t, h, b, resp, body, "iss missing although advertised")
	})
	t.Run("b-response-on-a-transaction", func(t *testing.T) {
		b := newBrowser()
		cbA := h.authorize(b, h.r, "idp-a", "")
		cbB := h.authorize(b, h.r, "idp-b", "")
		ua, _ := url.Parse(cbA)
		ub, _ := url.Parse(cbB)
		for _, withIss := range []bool{true, false} {
			q := ub.Query()
			q.Set("state", ua.Query().Get("state"))
			if !withIss {
				q.Del("iss")
			}
			u := *ua
			u.RawQuery = q.Encode()
			resp, body := b.get(t, u.String())
			assertRefused(t, h, b, resp, body, "B's code on A's transaction")
		}
	})
	for _, f := range []oidctest.Forgery{oidctest.ForgeryMixUp, oidctest.ForgeryForeignKey} {
		t.Run(string(f), func(t *testing.T) {
			if err := h.op.Forge(f); err != nil {
				t.Fatal(err)
			}
			b := newBrowser()
			resp, body := h.login(b, h.r, "idp-a", "")
			assertRefused(t, h, b, resp, body, string(f))
		})
	}
}

// TestLockedUserLoginDenied: a locked user is refused even though the IdP lets them in, with a
// login_denied event; unlocking lets them log in again.
func TestLockedUserLoginDenied(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	h.n.publish(t, events.New("idp-a", time.Now(), "scim-req-1", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: "deprovisioned"}))
	waitFor(t, "lock applied", 10*time.Second, func() error {
		if u, ok := h.r.srv.state.user(uid); !ok || !u.Locked {
			return errNotYet
		}
		return nil
	})
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-a", "")
	assertRefused(t, h, b, resp, body, "locked user")
	waitFor(t, "login_denied event", 10*time.Second, func() error {
		for _, e := range h.n.streamEvents(t, events.StreamAuth) {
			if d, ok := e.Data.(events.LoginDenied); ok && d.UserID == uid && d.Reason == "locked" {
				return nil
			}
		}
		return errNotYet
	})
	h.n.publish(t, events.New("idp-a", time.Now(), "scim-req-2", "", events.UserUnlocked{UserID: uid, Email: aliceEmail, Reason: "reactivated"}))
	waitFor(t, "unlock applied", 10*time.Second, func() error {
		if u, _ := h.r.srv.state.user(uid); u.Locked {
			return errNotYet
		}
		return nil
	})
	h.mustLogin(newBrowser(), h.r, "idp-a")
}

// TestManualEndpointsWithoutIssuer: Cloudflare's three-URL form with no issuer logs in; iss must
// then be on an endpoint's host, so a wrong issuer and another IdP's token are still refused.
func TestManualEndpointsWithoutIssuer(t *testing.T) {
	t.Parallel()
	h, opB := mixUpHarness(t)
	opN := h.op
	opN.idp.ID = "idp-n"
	opN.idp.Config.AuthURL, opN.idp.Config.TokenURL, opN.idp.Config.CertsURL = opN.AuthURL(), opN.TokenURL(), opN.JWKSURL()
	opN.idp.Config.Issuer = ""
	h.n.putIdP(t, opN.idp)
	waitFor(t, "idp-n registered", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-n"); !ok {
			return errNotYet
		}
		return nil
	})
	h.mustLogin(newBrowser(), h.r, "idp-n")
	for _, f := range []oidctest.Forgery{oidctest.ForgeryWrongIssuer, oidctest.ForgeryMixUp} {
		if err := opN.Forge(f); err != nil {
			t.Fatal(err)
		}
		b := newBrowser()
		resp, body := h.login(b, h.r, "idp-n", "")
		assertRefused(t, h, b, resp, body, "no-issuer IdP, "+string(f))
	}
	opN.SetFlow(oidctest.Flow{Iss: opB.Issuer()})
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-n", "")
	assertRefused(t, h, b, resp, body, "no-issuer IdP, iss parameter of another IdP")
}
