package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/config"
)

// TestRevocationFromIdentityEvents: sessions_revoked invalidates sessions issued before it on every
// replica (R1); a new login afterwards works and older sessions stay dead (R2); the latency
// histogram records the revocation.
func TestRevocationFromIdentityEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	r2 := h.secondReplica()
	uid := events.UserID("idp-a", aliceEmail)
	old := h.mustLogin(newBrowser(), h.r, "idp-a")
	waitVerify(t, r2, old, http.StatusOK) // the other replica accepts it too

	at := h.clock.Now()
	h.n.publish(t, events.New("idp-a", at, "scim-req-9", "", events.SessionsRevoked{UserID: uid, Email: aliceEmail,
		RevokedBefore: at, Reason: events.ReasonDeprovisioned}))
	waitVerify(t, h.r, old, http.StatusUnauthorized)
	waitVerify(t, r2, old, http.StatusUnauthorized)
	for _, r := range []*replica{h.r, r2} {
		if got := metricValue(t, r.reg, "scimflow_auth_revocation_latency_seconds", nil); got < 1 {
			t.Errorf("revocation latency observations = %v, want ≥ 1", got)
		}
	}
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	if v := verify(t, h.r, fresh, nil); v.StatusCode != http.StatusOK {
		t.Errorf("verify(new session after revocation) = %d, want 200", v.StatusCode)
	}
	if v := verify(t, h.r, old, nil); v.StatusCode != http.StatusUnauthorized {
		t.Errorf("verify(old session) = %d, want 401 forever", v.StatusCode)
	}
}

// TestLockRevokesAndUnlockDoesNotRevive: a lock rejects the user's sessions at once; unlocking lets
// them log in again, but sessions from before the lock stay invalid (docs/design.md §4).
func TestLockRevokesAndUnlockDoesNotRevive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	old := h.mustLogin(newBrowser(), h.r, "idp-a")
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "c", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: "deprovisioned"}))
	waitVerify(t, h.r, old, http.StatusUnauthorized)
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "c", "", events.UserUnlocked{UserID: uid, Email: aliceEmail, Reason: "active"}))
	waitFor(t, "unlock applied", 10*time.Second, func() error {
		if u, _ := h.r.srv.state.user(uid); u.Locked {
			return errNotYet
		}
		return nil
	})
	if v := verify(t, h.r, old, nil); v.StatusCode != http.StatusUnauthorized {
		t.Errorf("verify(pre-lock session after unlock) = %d, want 401", v.StatusCode)
	}
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	if v := verify(t, h.r, fresh, nil); v.StatusCode != http.StatusOK {
		t.Errorf("verify(post-unlock session) = %d, want 200", v.StatusCode)
	}
}

// TestIdentitySnapshotsDriveIdentity: the registry id learnt from the IDENTITY stream is used at
// login; with SCIM enabled, groups come from the identity's current SCIM groups, not the claim; an
// automatic update of the registry identity shows in /verify at once.
func TestIdentitySnapshotsDriveIdentity(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{idpMut: func(i *events.IdP) {
		i.SCIMConfig.Enabled, i.SCIMConfig.IdentityUpdateBehavior = true, events.UpdateAutomatic
	}})
	at := h.clock.Now()
	h.n.publish(t, identityEvent("idp-a", at, events.Identity{UserID: "registry-id-1", Email: aliceEmail, Status: events.StatusProvisioned,
		Groups: []events.Group{{ID: "g1", Name: "SCIM Engineers"}}, SCIMGroups: []events.Group{{ID: "g1", Name: "SCIM Engineers"}}}))
	waitFor(t, "snapshot applied", 10*time.Second, func() error {
		if _, ok := h.r.srv.state.userIDByEmail("idp-a", aliceEmail); !ok {
			return errNotYet
		}
		return nil
	})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	v := verify(t, h.r, tok, nil)
	if v.Header.Get(HeaderUserID) != "registry-id-1" || v.Header.Get(HeaderGroups) != "SCIM Engineers" {
		t.Errorf("verify = %s %q, want registry id and SCIM groups (not the claim)", v.Header.Get(HeaderUserID), v.Header.Get(HeaderGroups))
	}
	first := v.Header.Get(HeaderJWTAssertion)
	h.n.publish(t, identityEvent("idp-a", h.clock.Now().Add(time.Millisecond), events.Identity{UserID: "registry-id-1", Email: aliceEmail, Status: events.StatusActive,
		Groups: []events.Group{{ID: "g1", Name: "SCIM Engineers"}, {ID: "g2", Name: "On, Call"}}}))
	waitFor(t, "automatic update visible", 10*time.Second, func() error {
		v = verify(t, h.r, tok, nil)
		if v.Header.Get(HeaderGroups) != "SCIM Engineers,On%2C Call" {
			return errNotYet
		}
		return nil
	})
	if v.Header.Get(HeaderJWTAssertion) == first {
		t.Errorf("app token not re-minted after the identity changed")
	}
	waitFor(t, "logged_in says scim_enabled", 10*time.Second, func() error {
		for _, e := range h.n.streamEvents(t, events.StreamAuth) {
			// The claim travels too: identity-store ignores it for a person SCIM knows.
			if li, ok := e.Data.(events.LoggedIn); ok && li.SCIMEnabled && li.UserID == "registry-id-1" && slices.Equal(li.Groups, []string{"eng", "ops"}) {
				return nil
			}
		}
		return errNotYet
	})
}

// TestSessionTokenTampering (R7): a tampered token, a token signed by a foreign key, an app token
// presented as a session, and an app token for app X checked by app Y are all rejected.
func TestSessionTokenTampering(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.AppAudiences = map[string]string{"x.example.com": "app-x", "y.example.com": "app-y"}
	}})
	other := newHarness(t, harnessOpts{})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	parts := strings.Split(tok, ".")
	payload := []byte(parts[1])
	payload[len(payload)/2] ^= 1
	tampered := parts[0] + "." + string(payload) + "." + parts[2]
	foreign := other.mustLogin(newBrowser(), other.r, "idp-a")
	v := verify(t, h.r, tok, map[string]string{"X-Forwarded-Host": "x.example.com"})
	appX := v.Header.Get(HeaderJWTAssertion)
	for name, bad := range map[string]string{"tampered": tampered, "foreign-key": foreign, "app-token-as-session": appX, "truncated": tok[:len(tok)-5]} {
		if got := verify(t, h.r, bad, nil).StatusCode; got != http.StatusUnauthorized {
			t.Errorf("%s: verify = %d, want 401", name, got)
		}
	}
	ctx := context.Background()
	ks := oidc.NewRemoteKeySet(ctx, h.r.url+"/certs")
	for aud, ok := range map[string]bool{"app-x": true, "app-y": false} {
		_, err := oidc.NewVerifier(h.r.srv.issuer, ks, &oidc.Config{ClientID: aud, SupportedSigningAlgs: []string{"ES256"}}).Verify(ctx, appX)
		if (err == nil) != ok {
			t.Errorf("app token for app-x verified as %s: err = %v, want ok=%v", aud, err, ok)
		}
	}
}

// TestCookieAttributes (R8): on an https external URL the session and login-transaction cookies
// carry exactly __Host-, Secure, HttpOnly, Path=/, no Domain, SameSite=Lax; the transaction cookie
// is short-lived.
func TestCookieAttributes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.ExternalURL = "https://auth.example.com" }})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(h.r.url + "/login?idp_id=idp-a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Values("Set-Cookie")
	if len(sc) != 1 {
		t.Fatalf("/login Set-Cookie = %q, want one", sc)
	}
	checkCookie(t, sc[0], "__Host-scimflow_login-", 600)
	// Finish the login by hand (the jar would not send Secure cookies over http).
	txn := strings.SplitN(strings.SplitN(sc[0], ";", 2)[0], "=", 2)
	resp, err = c.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, _ := url.Parse(resp.Header.Get("Location"))
	req, _ := http.NewRequest(http.MethodGet, h.r.url+"/callback?"+cb.RawQuery, nil)
	req.AddCookie(&http.Cookie{Name: txn[0], Value: txn[1]})
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("callback = %d", resp.StatusCode)
	}
	var session string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "__Host-scimflow_session=") {
			session = v
		} else if !strings.Contains(v, "Max-Age=0") {
			t.Errorf("callback left cookie %q alive, want the transaction cookie deleted", v)
		}
	}
	checkCookie(t, session, "__Host-scimflow_session=", int((24 * time.Hour).Seconds()))
}

// TestCookieDomain: with cookie_domain the session cookie is __Secure- and scoped to the domain,
// so reverse proxies of sibling hosts receive it.
func TestCookieDomain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.ExternalURL, c.CookieDomain = "https://auth.example.com", "example.com"
	}})
	rec := httptest.NewRecorder()
	now := h.clock.Now()
	h.r.srv.setSessionCookie(rec, "tok", now.Add(time.Hour), now)
	got := rec.Header().Get("Set-Cookie")
	want := "__Secure-scimflow_session=tok; Path=/; Domain=example.com; Max-Age=3600; HttpOnly; Secure; SameSite=Lax"
	if got != want {
		t.Errorf("Set-Cookie = %q, want %q", got, want)
	}
	bad := DefaultConfig()
	bad.ExternalURL, bad.CookieDomain = "https://auth.other.org", "example.com"
	if err := bad.Validate(); err == nil {
		t.Errorf("Validate(cookie_domain not covering external_url) = nil, want an error")
	}
}

func checkCookie(t *testing.T, raw, prefix string, maxAge int) {
	t.Helper()
	if !strings.HasPrefix(raw, prefix) {
		t.Errorf("cookie %q, want prefix %q", raw, prefix)
	}
	attrs := map[string]string{}
	for _, a := range strings.Split(raw, ";")[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(a), "=")
		attrs[strings.ToLower(k)] = v
	}
	want := map[string]string{"path": "/", "httponly": "", "secure": "", "samesite": "Lax", "max-age": itoa(maxAge)}
	for k, v := range want {
		if got, ok := attrs[k]; !ok || got != v {
			t.Errorf("cookie %q: %s = %q (present %v), want %q", raw, k, got, ok, v)
		}
	}
	if _, ok := attrs["domain"]; ok {
		t.Errorf("cookie %q has a Domain", raw)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestSessionFixation (R9): a second login in the same browser gets a new session id, and the old
// session is invalid.
func TestSessionFixation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	b := newBrowser()
	first := h.mustLogin(b, h.r, "idp-a")
	second := h.mustLogin(b, h.r, "idp-a")
	if first == second {
		t.Fatal("second login kept the session token")
	}
	c1, _, err := h.r.srv.verifySession(context.Background(), first, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	c2, _, _ := h.r.srv.verifySession(context.Background(), second, h.clock.Now())
	if c1.SID == c2.SID {
		t.Errorf("session id reused across logins")
	}
	if got := verify(t, h.r, first, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("verify(pre-login session) = %d, want 401", got)
	}
	if got := verify(t, h.r, second, nil).StatusCode; got != http.StatusOK {
		t.Errorf("verify(new session) = %d, want 200", got)
	}
}

// TestLogoutAndAbsoluteTimeout (R10): logout invalidates the session immediately on this replica
// and, through the AUTH stream, on another; the absolute timeout ends a session at its boundary.
func TestLogoutAndAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	r2 := h.secondReplica()
	b := newBrowser()
	tok := h.mustLogin(b, h.r, "idp-a")
	waitVerify(t, r2, tok, http.StatusOK)
	resp, body := b.get(t, h.r.url+"/logout?redirect_url=https://app.example.com/bye")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://app.example.com/bye" {
		t.Errorf("logout = %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("verify on the logout replica = %d, want 401 at once", got)
	}
	waitVerify(t, r2, tok, http.StatusUnauthorized)
	if b.cookie(h.r.url, h.r.srv.sessionName) != "" {
		t.Errorf("logout left the session cookie")
	}

	tok = h.mustLogin(newBrowser(), h.r, "idp-a")
	claims, _, err := h.r.srv.verifySession(context.Background(), tok, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Frozen at the issue instant, so the 1 s margins below do not depend on how fast this machine is.
	h.clock.Freeze(claims.issued())
	h.clock.Advance(24*time.Hour - time.Second)
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusOK {
		t.Errorf("verify 1 s before the absolute timeout = %d, want 200", got)
	}
	h.clock.Advance(2 * time.Second)
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("verify 1 s after the absolute timeout = %d, want 401", got)
	}
}

// TestRedirectAfterLogin (R11 end to end): an allow-listed absolute URL is kept, a hostile one
// falls back to "/".
func TestRedirectAfterLogin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for target, want := range map[string]string{
		"https://app.example.com/x": "https://app.example.com/x",
		"/relative?a=b":             "/relative?a=b",
		"//evil.com":                "/",
		"https://evil.com/":         "/",
	} {
		resp, body := h.login(newBrowser(), h.r, "idp-a", target)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
			t.Errorf("login redirect_url=%q: %d %q %s, want 302 to %q", target, resp.StatusCode, resp.Header.Get("Location"), body, want)
		}
	}
}

// TestSigningKeyRotation (R12): after one rotation the previous key's sessions still verify and
// /certs lists both keys; after a second rotation they are rejected.
func TestSigningKeyRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	r2 := h.secondReplica()
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	waitVerify(t, r2, tok, http.StatusOK)
	ctx := context.Background()
	if ok, err := h.r.srv.keys.rotate(ctx, true); !ok || err != nil {
		t.Fatalf("rotate = %v, %v", ok, err)
	}
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusOK {
		t.Errorf("verify(previous-key session) during overlap = %d, want 200", got)
	}
	resp, body := newBrowser().get(t, h.r.url+"/certs")
	var set struct{ Keys []map[string]any }
	json.Unmarshal([]byte(body), &set)
	if resp.StatusCode != 200 || len(set.Keys) != 2 {
		t.Errorf("/certs = %d with %d keys, want current and previous", resp.StatusCode, len(set.Keys))
	}
	// A session minted with the new key on r1 verifies on r2 (shared keys via KV).
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	waitVerify(t, r2, fresh, http.StatusOK)
	if ok, err := h.r.srv.keys.rotate(ctx, true); !ok || err != nil {
		t.Fatalf("second rotate = %v, %v", ok, err)
	}
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("verify(retired-key session) = %d, want 401", got)
	}
	waitVerify(t, r2, tok, http.StatusUnauthorized)
	if got := verify(t, h.r, fresh, nil).StatusCode; got != http.StatusOK {
		t.Errorf("verify(previous-key session) after second rotation = %d, want 200", got)
	}
}

// TestStalenessFailsClosed (R6): with NATS gone the revocation state ages past the bound and /verify
// answers 503 (metric counted) instead of trusting a session it can no longer check.
func TestStalenessFailsClosed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.RevocationMaxStaleness = config.Duration(time.Second) }})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	waitVerify(t, h.r, tok, http.StatusOK)
	h.n.emb.Shutdown()
	waitVerify(t, h.r, tok, http.StatusServiceUnavailable)
	if got := metricValue(t, h.r.reg, "scimflow_auth_fail_closed_total", map[string]string{"endpoint": "verify"}); got < 1 {
		t.Errorf("fail_closed_total = %v, want ≥ 1", got)
	}
	if got := metricValue(t, h.r.reg, "scimflow_auth_revocation_staleness_seconds", nil); got < 1 {
		t.Errorf("staleness gauge = %v, want ≥ 1", got)
	}
	resp, _ := newBrowser().get(t, h.r.url+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503 while stale", resp.StatusCode)
	}
}

// TestDeprovisionDuringLogin (R3): a lock that lands between /login and /callback stops the login.
func TestDeprovisionDuringLogin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	b := newBrowser()
	cb := h.authorize(b, h.r, "idp-a", "")
	at := h.clock.Now()
	h.n.publish(t, events.New("idp-a", at, "c", "", events.SessionsRevoked{UserID: uid, Email: aliceEmail, RevokedBefore: at, Reason: events.ReasonDeprovisioned}))
	h.n.publish(t, events.New("idp-a", at, "c", "", events.UserLocked{UserID: uid, Email: aliceEmail, Reason: "deprovisioned"}))
	waitFor(t, "lock applied", 10*time.Second, func() error {
		if u, _ := h.r.srv.state.user(uid); !u.Locked {
			return errNotYet
		}
		return nil
	})
	resp, body := b.get(t, cb)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "locked") || b.cookie(h.r.url, h.r.srv.sessionName) != "" {
		t.Errorf("callback after a mid-login deprovision = %d %s, want 403 locked and no session", resp.StatusCode, body)
	}
}

// TestSnapshotLockAndRevokedBefore: an identity snapshot carrying locked and revoked_before has the
// same effect as the dedicated events.
func TestSnapshotLockAndRevokedBefore(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	old := h.mustLogin(newBrowser(), h.r, "idp-a")
	at := h.clock.Now()
	h.n.publish(t, identityEvent("idp-a", at, events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive, RevokedBefore: &at}))
	waitVerify(t, h.r, old, http.StatusUnauthorized)
	fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
	h.n.publish(t, identityEvent("idp-a", h.clock.Now(), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusInactive, Locked: true, RevokedBefore: &at}))
	waitVerify(t, h.r, fresh, http.StatusUnauthorized)
}

// TestMetricsExposed: auth's series are served on /metrics of the metrics listener, and the auth
// port, which browsers reach, does not serve them (docs/security.md, finding 11).
func TestMetricsExposed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	verify(t, h.r, tok, nil)
	verify(t, h.r, "", nil)
	if resp, _ := newBrowser().get(t, h.r.url+"/metrics"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the auth port = %d, want 404", resp.StatusCode)
	}
	_, body := newBrowser().get(t, h.r.metricsURL+"/metrics")
	for _, name := range []string{
		"scimflow_auth_logins_total", "scimflow_auth_sessions_issued_total", "scimflow_auth_verify_requests_total",
		"scimflow_auth_verify_duration_seconds", "scimflow_auth_revocation_staleness_seconds", "scimflow_auth_fail_closed_total",
		"scimflow_auth_revocation_latency_seconds", "scimflow_auth_idp_jwks_fetches_total",
		"scimflow_auth_consumer_cursor_sequence", "scimflow_auth_outbox_published_total",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestScheduledKeyRotation: the rotation check replaces the key only once it is older than the
// interval, and one replica's rotation reaches the others through the KV watch.
func TestScheduledKeyRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	r2 := h.secondReplica()
	ctx := context.Background()
	kid := h.r.srv.keys.keys().current.kid
	if rotated, err := h.r.srv.keys.rotate(ctx, false); rotated || err != nil {
		t.Fatalf("rotate(fresh key) = %v, %v, want no rotation", rotated, err)
	}
	h.clock.Advance(h.r.srv.cfg.KeyRotationInterval.D() + time.Minute)
	if rotated, err := h.r.srv.keys.rotate(ctx, false); !rotated || err != nil {
		t.Fatalf("rotate(old key) = %v, %v, want a rotation", rotated, err)
	}
	if rotated, _ := r2.srv.keys.rotate(ctx, false); rotated {
		t.Errorf("second replica rotated again within the interval")
	}
	next := h.r.srv.keys.keys().current.kid
	if next == kid {
		t.Fatal("kid unchanged after rotation")
	}
	waitFor(t, "rotation reaches r2", 10*time.Second, func() error {
		if r2.srv.keys.keys().current.kid != next {
			return errNotYet
		}
		return nil
	})
}

// TestRevocationByLaterLearntRegistryID: a session minted under the default user id is still
// revoked when identity-store later announces another registry id for the same email.
func TestRevocationByLaterLearntRegistryID(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	at := h.clock.Now()
	h.n.publish(t, identityEvent("idp-a", at, events.Identity{UserID: "registry-7", Email: aliceEmail, Status: events.StatusActive}))
	h.n.publish(t, events.New("idp-a", at, "c", "", events.SessionsRevoked{UserID: "registry-7", Email: aliceEmail, RevokedBefore: at, Reason: events.ReasonAdmin}))
	waitVerify(t, h.r, tok, http.StatusUnauthorized)
}

// TestAppTokensPerAudience: a person moving between two applications keeps one app token per
// audience — each verifies only for its own audience, and going back to the first application
// returns the token minted for it rather than a new signature.
func TestAppTokensPerAudience(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.AppAudiences = map[string]string{"x.example.com": "app-x", "y.example.com": "app-y"}
	}})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	assertion := func(host string) string {
		v := verify(t, h.r, tok, map[string]string{"X-Forwarded-Host": host})
		if v.StatusCode != http.StatusOK {
			t.Fatalf("verify for %s = %d", host, v.StatusCode)
		}
		return v.Header.Get(HeaderJWTAssertion)
	}
	x1, y1, x2, y2 := assertion("x.example.com"), assertion("y.example.com"), assertion("x.example.com"), assertion("y.example.com")
	if x1 != x2 || y1 != y2 {
		t.Errorf("alternating between two apps re-minted their tokens (x same: %v, y same: %v)", x1 == x2, y1 == y2)
	}
	ctx := context.Background()
	ks := oidc.NewRemoteKeySet(ctx, h.r.url+"/certs")
	for _, c := range []struct {
		tok, aud string
		ok       bool
	}{{x1, "app-x", true}, {x1, "app-y", false}, {y1, "app-y", true}, {y1, "app-x", false}} {
		_, err := oidc.NewVerifier(h.r.srv.issuer, ks, &oidc.Config{ClientID: c.aud, SupportedSigningAlgs: []string{"ES256"}}).Verify(ctx, c.tok)
		if (err == nil) != c.ok {
			t.Errorf("token checked as %s: err = %v, want ok=%v", c.aud, err, c.ok)
		}
	}
}

// TestGroupsHeaderEncoding: the list splits unambiguously and the header value never carries a
// control character, whatever group names an IdP sends.
func TestGroupsHeaderEncoding(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"Eng", "Ops"}, "Eng,Ops"},
		{[]string{"On, Call", "100%"}, "On%2C Call,100%25"},
		{[]string{"a\r\nX-Scimflow-Email: ceo@x.com"}, "a%0D%0AX-Scimflow-Email: ceo@x.com"},
		{[]string{"nul\x00", "tab\t", "del\x7f"}, "nul%00,tab%09,del%7F"},
		{[]string{"Équipe ünïcode"}, "Équipe ünïcode"},
		{nil, ""},
	} {
		var gs []events.Group
		for _, n := range c.names {
			gs = append(gs, events.Group{Name: n})
		}
		if got := groupsHeader(gs); got != c.want {
			t.Errorf("groupsHeader(%q) = %q, want %q", c.names, got, c.want)
		}
	}
}
