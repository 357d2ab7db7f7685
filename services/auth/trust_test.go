package auth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// TestVerifyNamesTheIdP (docs/security.md, finding 5): two IdPs that both vouch for alice@example.com produce
// the same X-Scimflow-Email; X-Scimflow-Idp (and the registry id) tell them apart, so an app keying on
// (idp, email) or the user id cannot confuse IdP B's Alice with IdP A's.
func TestVerifyNamesTheIdP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opB := newOP(t, h.clock, "idp-b", nil)
	h.n.putIdP(t, opB.idp)
	waitFor(t, "idp-b known", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-b"); !ok {
			return errNotYet
		}
		return nil
	})
	tokA := h.mustLogin(newBrowser(), h.r, "idp-a")
	tokB := h.mustLogin(newBrowser(), h.r, "idp-b")
	va, vb := verify(t, h.r, tokA, nil), verify(t, h.r, tokB, nil)
	if va.StatusCode != http.StatusOK || vb.StatusCode != http.StatusOK {
		t.Fatalf("verify = %d, %d, want 200, 200", va.StatusCode, vb.StatusCode)
	}
	if va.Header.Get(HeaderEmail) != vb.Header.Get(HeaderEmail) {
		t.Fatalf("emails differ: %q, %q (the test wants the look-alike case)", va.Header.Get(HeaderEmail), vb.Header.Get(HeaderEmail))
	}
	if got := va.Header.Get(HeaderIdP); got != "idp-a" {
		t.Errorf("IdP A's session: %s = %q, want idp-a", HeaderIdP, got)
	}
	if got := vb.Header.Get(HeaderIdP); got != "idp-b" {
		t.Errorf("IdP B's session: %s = %q, want idp-b", HeaderIdP, got)
	}
	if va.Header.Get(HeaderUserID) == vb.Header.Get(HeaderUserID) {
		t.Errorf("both IdPs' Alice have user id %q", va.Header.Get(HeaderUserID))
	}
}

// TestEmailClaimWithControlCharacters (docs/security.md, finding 8): an ID token whose email claim holds a
// NUL, a zero-width space or a bidi override never becomes a session (so never an X-Scimflow-Email
// header): the callback answers a clear error and records the refusal.
func TestEmailClaimWithControlCharacters(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	for i, email := range []string{"alice@x.com\u0000", "ali\u200bce@x.com", "alice@x.com\u202e", "alice\r\n@x.com"} {
		sub := "lookalike-" + string(rune('a'+i))
		if err := h.op.AddUser(oidctest.User{Sub: sub, Email: email, Name: "Mallory"}); err != nil {
			t.Fatal(err)
		}
		if err := h.op.SetDefaultUser(sub); err != nil {
			t.Fatal(err)
		}
		b := newBrowser()
		resp, body := h.login(b, h.r, "idp-a", "")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "invalid_email") {
			t.Errorf("login with email %q = %d %s, want 403 invalid_email", email, resp.StatusCode, body)
		}
		tok := b.cookie(h.r.url, h.r.srv.sessionName)
		if tok != "" {
			v := verify(t, h.r, tok, nil)
			t.Errorf("login with email %q set a session; /verify = %d %s = %q", email, v.StatusCode, HeaderEmail, v.Header.Get(HeaderEmail))
		}
	}
	// A browser gets a page that says what went wrong, not a JSON blob.
	b := newBrowser()
	cb := h.authorize(b, h.r, "idp-a", "")
	resp, body := b.do(t, http.MethodGet, cb, http.Header{"Accept": {"text/html"}})
	if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "email address") {
		t.Errorf("browser login with a bad email = %d %q %s, want a 403 HTML page about the email address", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// The genuine user still logs in.
	if err := h.op.SetDefaultUser(alice); err != nil {
		t.Fatal(err)
	}
	h.mustLogin(newBrowser(), h.r, "idp-a")
}

// TestLogoutCrossSite (docs/security.md, finding 7): a GET /logout that the browser marks as cross-site (a
// link or image on another site) does not end the session; it answers a page whose button POSTs the
// logout. Same-site GETs and POSTs log out, and redirect_url is still checked.
func TestLogoutCrossSite(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	b := newBrowser()
	tok := h.mustLogin(b, h.r, "idp-a")
	for _, hdr := range []http.Header{
		{"Sec-Fetch-Site": {"cross-site"}},
		{"Origin": {"https://evil.example.net"}},
		{"Origin": {"null"}},
	} {
		resp, body := b.do(t, http.MethodGet, h.r.url+"/logout?redirect_url=https://app.example.com/bye", hdr)
		if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(body, `method="post"`) || !strings.Contains(body, "https://app.example.com/bye") {
			t.Errorf("cross-site GET /logout %v = %d %q %s, want 403 with a POST form", hdr, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusOK {
			t.Fatalf("after cross-site GET /logout %v: verify = %d, want 200 (still logged in)", hdr, got)
		}
		if b.cookie(h.r.url, h.r.srv.sessionName) == "" {
			t.Fatalf("cross-site GET /logout %v cleared the session cookie", hdr)
		}
	}
	// The page's form posts back to /logout from auth's own origin: that logs out.
	resp, body := b.do(t, http.MethodPost, h.r.url+"/logout?redirect_url="+url.QueryEscape("https://app.example.com/bye"),
		http.Header{"Origin": {h.r.url}, "Sec-Fetch-Site": {"same-origin"}})
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://app.example.com/bye" {
		t.Errorf("same-origin POST /logout = %d %q %s, want 302 to the app", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("after POST /logout: verify = %d, want 401", got)
	}

	// Same-site and direct (typed, bookmarked) GETs log out; a hostile redirect_url still falls back.
	for _, hdr := range []http.Header{{"Sec-Fetch-Site": {"same-site"}}, {"Sec-Fetch-Site": {"none"}}, {"Sec-Fetch-Site": {"same-origin"}}, nil} {
		b := newBrowser()
		tok := h.mustLogin(b, h.r, "idp-a")
		resp, body := b.do(t, http.MethodGet, h.r.url+"/logout?redirect_url=https://evil.example.net/", hdr)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" {
			t.Errorf("GET /logout %v = %d %q %s, want 302 to /", hdr, resp.StatusCode, resp.Header.Get("Location"), body)
		}
		if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusUnauthorized {
			t.Errorf("after GET /logout %v: verify = %d, want 401", hdr, got)
		}
	}
}

// TestSubBinding (docs/security.md, finding 9): once identity-store has bound Alice's first-login sub, another
// account at the same IdP presenting the verified email alice@example.com is refused with
// sub_mismatch (and a login_denied event); a session such an account got before the binding reached
// this replica stops verifying, and identity-store's session_revoked ends it too. After an admin reset
// of the binding (for the person, or for the whole IdP) the other account may log in.
func TestSubBinding(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	uid := events.UserID("idp-a", aliceEmail)
	if err := h.op.AddUser(oidctest.User{Sub: "mallory-sub", Email: aliceEmail, Name: "Mallory"}); err != nil {
		t.Fatal(err)
	}
	// Mallory's account logs in before any binding is known (a login racing Alice's first on another
	// replica): it gets a session for now.
	if err := h.op.SetDefaultUser("mallory-sub"); err != nil {
		t.Fatal(err)
	}
	bm := newBrowser()
	tokM := h.mustLogin(bm, h.r, "idp-a")
	if err := h.op.SetDefaultUser(alice); err != nil {
		t.Fatal(err)
	}
	tokA := h.mustLogin(newBrowser(), h.r, "idp-a")

	// identity-store applied Alice's login first: it binds alice-sub and revokes Mallory's session.
	at := h.clock.Now()
	h.n.publish(t, events.New("idp-a", at, "login-1", "", events.SubBound{UserID: uid, Email: aliceEmail, Sub: alice}))
	waitFor(t, "binding applied", 10*time.Second, func() error {
		if h.r.srv.state.boundSub(uid, "idp-a") != alice {
			return errNotYet
		}
		return nil
	})
	if got := verify(t, h.r, tokM, nil).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("the other account's session after the binding: verify = %d, want 401", got)
	}
	if got := verify(t, h.r, tokA, nil).StatusCode; got != http.StatusOK {
		t.Errorf("Alice's session after the binding: verify = %d, want 200", got)
	}

	// The other account is refused at login, with a reason.
	if err := h.op.SetDefaultUser("mallory-sub"); err != nil {
		t.Fatal(err)
	}
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-a", "")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, events.ReasonSubMismatch) {
		t.Errorf("login with another sub = %d %s, want 403 %s", resp.StatusCode, body, events.ReasonSubMismatch)
	}
	if b.cookie(h.r.url, h.r.srv.sessionName) != "" {
		t.Error("login with another sub set a session cookie")
	}
	waitFor(t, "login_denied sub_mismatch", 10*time.Second, func() error {
		for _, e := range h.n.streamEvents(t, events.StreamAuth) {
			if d, ok := e.Data.(events.LoginDenied); ok && d.Reason == events.ReasonSubMismatch && d.Sub == "mallory-sub" && d.UserID == uid {
				return nil
			}
		}
		return errNotYet
	})
	// Alice herself still logs in.
	if err := h.op.SetDefaultUser(alice); err != nil {
		t.Fatal(err)
	}
	h.mustLogin(newBrowser(), h.r, "idp-a")

	// An admin resets the IdP's bindings (app registration replaced): the next login binds afresh, so
	// the other account is let in by auth (identity-store will bind its sub).
	h.clock.Advance(time.Second)
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "admin-r1", "", events.IdPSubBindingsReset{Reason: events.ReasonAdmin}))
	waitFor(t, "reset applied", 10*time.Second, func() error {
		if h.r.srv.state.boundSub(uid, "idp-a") != "" {
			return errNotYet
		}
		return nil
	})
	if err := h.op.SetDefaultUser("mallory-sub"); err != nil {
		t.Fatal(err)
	}
	h.mustLogin(newBrowser(), h.r, "idp-a")

	// identity-store binds the new sub; a per-person reset voids that one as well.
	h.clock.Advance(time.Second)
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "login-3", "", events.SubBound{UserID: uid, Email: aliceEmail, Sub: "mallory-sub"}))
	h.clock.Advance(time.Second)
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "admin-r2", "", events.SubReset{UserID: uid, Email: aliceEmail, Reason: events.ReasonAdmin}))
	waitFor(t, "person reset applied", 10*time.Second, func() error {
		if u, _ := h.r.srv.state.user(uid); u.Sub != "mallory-sub" || h.r.srv.state.boundSub(uid, "idp-a") != "" {
			return errNotYet
		}
		return nil
	})
}

// TestSessionRevokedEndsOneSession: identity-store's session_revoked (a login refused after the fact)
// ends that session on every replica and leaves the person's other sessions alone.
func TestSessionRevokedEndsOneSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	r2 := h.secondReplica()
	uid := events.UserID("idp-a", aliceEmail)
	tok1 := h.mustLogin(newBrowser(), h.r, "idp-a")
	tok2 := h.mustLogin(newBrowser(), h.r, "idp-a")
	cs, _, err := h.r.srv.verifySession(t.Context(), tok1, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.n.publish(t, events.New("idp-a", h.clock.Now(), "login-x", "", events.SessionRevoked{UserID: uid, Email: aliceEmail,
		SessionIDHash: hashSID(cs.SID), ExpiresAt: cs.expires(), Reason: events.ReasonSubMismatch}))
	waitVerify(t, h.r, tok1, http.StatusUnauthorized)
	waitVerify(t, r2, tok1, http.StatusUnauthorized)
	if got := verify(t, h.r, tok2, nil).StatusCode; got != http.StatusOK {
		t.Errorf("the other session: verify = %d, want 200", got)
	}
}

// TestIdPDeletionRevokesSessions (docs/security.md, finding 6, auth's side): identity-store's
// sessions_revoked for a deleted IdP ends every session that IdP authenticated, on every replica and
// on a replica that replays the stream later; the IdP created again under the same id (a config
// seed at start) does not revive them, and a new login through it works.
func TestIdPDeletionRevokesSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	opB := newOP(t, h.clock, "idp-b", nil)
	h.n.putIdP(t, opB.idp)
	waitFor(t, "idp-b known", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-b"); !ok {
			return errNotYet
		}
		return nil
	})
	tokA := h.mustLogin(newBrowser(), h.r, "idp-a")
	tokB := h.mustLogin(newBrowser(), h.r, "idp-b")

	h.n.publish(t, events.New("idp-a", h.clock.Now(), "admin-del", "", events.IdPSessionsRevoked{RevokedBefore: h.clock.Now(), Reason: events.ReasonIdPDeleted}))
	waitVerify(t, h.r, tokA, http.StatusUnauthorized)
	if got := verify(t, h.r, tokB, nil).StatusCode; got != http.StatusOK {
		t.Errorf("another IdP's session: verify = %d, want 200", got)
	}
	// Seeded again (same id, same config): the old session stays dead, here and on a replica that
	// starts afterwards and learns everything from the stream.
	h.n.putIdP(t, h.op.idp)
	r2 := h.secondReplica()
	waitVerify(t, r2, tokB, http.StatusOK)
	for _, r := range []*replica{h.r, r2} {
		if got := verify(t, r, tokA, nil).StatusCode; got != http.StatusUnauthorized {
			t.Errorf("replica %s: deleted IdP's old session after the IdP came back: verify = %d, want 401", r.srv.cfg.ReplicaID, got)
		}
	}
	h.clock.Advance(time.Second)
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	if got := verify(t, h.r, tok, nil).StatusCode; got != http.StatusOK {
		t.Errorf("a new login through the re-created IdP: verify = %d, want 200", got)
	}
}
