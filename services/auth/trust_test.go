package auth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/testkit/oidctest"
)

// TestVerifyNamesTheIdP (issue 12, finding 5): two IdPs that both vouch for alice@example.com produce
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

// TestEmailClaimWithControlCharacters (issue 12, finding 8): an ID token whose email claim holds a
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

// TestLogoutCrossSite (issue 12, finding 7): a GET /logout that the browser marks as cross-site (a
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
